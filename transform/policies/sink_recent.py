"""Sink + recent (StreamingLLM, the brief's strategy 1): keep the first and the last tokens, drop the middle.

It fits the ranking mould: rank(p) = p for p < sink, then sink + (n - 1 - p), i.e. the sink in order, then the
most recent first. Budget k keeps the first k of that ranking: min(k, sink) sink tokens and the rest recent,
so every budget shares one ranking. Without a budget it keeps the fixed set sink_tokens + recent_tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transform.policies.base import PolicyError, PositionPolicy, register
from transform.simple_evict import SimpleEvictConfig, build_simple_keep_token_idx

SQL = """
SELECT
    run_id, model, task, sample_id, n,
    list_concat(range(0, least($sink, n)), range(n - 1, least($sink, n) - 1, -1)) AS positions,
    CASE WHEN k IS NULL THEN least(n, $sink + $recent) END AS kept_count
FROM cand_samples
"""


@register
@dataclass(frozen=True)
class SinkRecent(PositionPolicy):
    """With a budget of k tokens, keeps min(k, sink_tokens) sink tokens and the rest recent (recent_tokens ignored)."""

    name = "sink_recent"
    positions_sql = SQL
    sink_tokens: int = 256
    recent_tokens: int = 512

    def config(self, n: int) -> SimpleEvictConfig:
        k = self.tokens(n)
        if k is None:
            return SimpleEvictConfig(self.sink_tokens, self.recent_tokens)
        sink = min(k, self.sink_tokens)
        return SimpleEvictConfig(sink, k - sink)

    def nominal_budget(self) -> float | None:
        return self.budget if self.budget is not None else self.sink_tokens + self.recent_tokens

    def validate(self) -> None:
        if self.budget is None and self.sink_tokens + self.recent_tokens == 0:
            raise PolicyError(f"{self.label()}: sink_tokens + recent_tokens must be >= 1 (or give a budget)")

    def positions(self, n: int) -> np.ndarray:
        self.check(n)
        return build_simple_keep_token_idx(total_len=n, cfg=self.config(n)).numpy()

    @property
    def threshold(self) -> str:
        return "budget" if self.budget is not None else "all"

    def ranking_params(self) -> dict[str, object]:
        if self.threshold == "all":
            return self.params()
        return {"sink_tokens": self.sink_tokens}  # recent_tokens is ignored when a budget is given

    def sql_params(self) -> dict[str, object]:
        return {"sink": self.sink_tokens, "recent": self.recent_tokens}
