"""When eviction happens: the one definition of each setting, used by the rankings (SQL), the reference
(`load_stats`), the live cache (`transform.decode`) and evaluation.

- `question_aware`: the whole prompt is prefilled, then evicted. The cache at eviction holds every prompt
  position (n = `samples.n_tokens`); attention is observed from the prompt's last window (`attn_received`).
- `question_agnostic`: instruction + context are prefilled and evicted at the end of the context
  (n = `samples.context_end`); attention is observed from the window ending there (`attn_received_context`).
  The rest of the prompt (the question) is fed after eviction, so it is always in the final cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from transform.policies.base import PolicyError


class SettingError(PolicyError):
    """Unknown setting, or a prompt that cannot be split for it."""


@dataclass(frozen=True)
class Setting:
    name: str
    cut_column: str  # `samples` column: how many prompt positions are in the cache when it is evicted
    attn_column: str  # `token_stats` column: the attention a policy observes at that moment
    doc: str

    def cache_len(self, n_tokens: int, context_end: int) -> int:
        """Positions in the cache at eviction (the rest of the prompt is fed afterwards)."""
        if self.cut_column == "n_tokens":
            return n_tokens
        if not 0 < context_end <= n_tokens:
            raise SettingError(f"{self.name} needs 0 < context_end <= {n_tokens}, got context_end={context_end}")
        return context_end

    def stat_column(self, need: str) -> str:
        """The token_stats column behind a statistic a policy reads (key_norm, value_norm or attn)."""
        return self.attn_column if need == "attn" else need


QUESTION_AWARE = Setting(
    "question_aware", "n_tokens", "attn_received", "evict after the whole prompt, attention from its last window"
)
QUESTION_AGNOSTIC = Setting(
    "question_agnostic",
    "context_end",
    "attn_received_context",
    "evict at the end of the context (attention from the window ending there), then feed the question",
)
BY_NAME = {s.name: s for s in (QUESTION_AWARE, QUESTION_AGNOSTIC)}
SETTINGS = tuple(BY_NAME)  # names, in the order reports and sweeps use


def get(name: str) -> Setting:
    if name not in BY_NAME:
        raise SettingError(f"unknown setting {name!r}; use one of {', '.join(SETTINGS)}")
    return BY_NAME[name]


def check_setting(name: str) -> str:
    return get(name).name


def cache_len(sample, setting: str) -> int:
    """Cache length at eviction for anything with `n_tokens` and `context_end` (a sample row)."""
    return get(setting).cache_len(sample.n_tokens, sample.context_end)
