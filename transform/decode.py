"""Prefill once, then continue from any compacted copy of the cache: greedy decoding and teacher forcing.

Position rules (FACTS.md): new tokens are fed at their ORIGINAL absolute positions via `position_ids`
(after a T-token prompt the next token is at T, a chunk at arange(P, P + q)), so RoPE continues where the
prompt ended, not at the compacted length. transformers derives the causal mask's offset from the cache
length K itself (the issue's `cache_position = K`); there is no cache_position argument to pass. No
attention_mask at batch 1. `model.generate` is never used with a pruned cache: it re-feeds the evicted tail.

Settings (transform/settings.py says where each cuts the prompt): the positions before the cut are prefilled
and evicted; the rest of the prompt (question_agnostic: the question and chat tail) is then fed as one chunk at
its original positions, then decoding starts. In question_aware nothing is left, so the first generated token
comes from the full prefill and is the same under every policy.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache

from extract.model import cache_kwarg
from transform import settings
from transform.evict import copy_cache, evict, restrict
from transform.settings import SETTINGS, SettingError, check_setting  # noqa: F401 (re-exported)


def forward(model, ids: torch.Tensor, cache: DynamicCache, start: int, logits_to_keep: int = 1) -> torch.Tensor:
    """Feed `ids` [q] (or [1, q]) at absolute positions start..start+q-1; the cache grows in place.

    Returns float32 logits [n, vocab] for the last `logits_to_keep` positions (0 = all).
    """
    if ids.dim() == 1:
        ids = ids[None]
    return forward_batch(model, ids, cache, start, logits_to_keep)[0]


def forward_batch(model, ids: torch.Tensor, cache: DynamicCache, start: int, logits_to_keep: int = 1) -> torch.Tensor:
    """Feed `ids` [B, q] to a cache of B equal-length rows, every row at positions start..start+q-1.

    No attention mask: each row attends to its whole cache (hence equal lengths), or, for a cache that says how
    it is attended (transform.masked.SharedCache), to what its masks allow. Returns float32 [B, n, vocab].
    """
    device = next(model.parameters()).device
    ids = ids.to(device)
    pos = torch.arange(start, start + ids.shape[1], device=device)[None].expand(ids.shape[0], -1)
    kwargs = {cache_kwarg(model): cache}
    with cache.attending(model) if hasattr(cache, "attending") else nullcontext():
        out = model(input_ids=ids, position_ids=pos, use_cache=True, logits_to_keep=logits_to_keep, **kwargs)
    return out.logits.float()


@dataclass
class Prefix:
    """The full cache of the part of the prompt that is evicted, shared by every policy of a sample."""

    setting: str
    cache: DynamicCache  # positions 0..length-1, never mutated (policies work on copies)
    length: int  # positions in the cache at eviction (transform.settings.Setting.cache_len)
    rest: torch.Tensor  # prompt ids fed after eviction at positions length..n_tokens-1 (empty when aware)
    logits: torch.Tensor | None  # next-token logits after the prefix (aware: the first answer token's)
    n_tokens: int  # the whole prompt
    seconds: float
    horizon: int | None = None  # positions the sample will ever reach (prompt + answer): which sliding layers
    #                             a keep-set evicts (transform.evict.evicted_layers); None: none of them


@dataclass
class State:
    """A cache ready to generate: the next token's logits and its absolute position."""

    cache: DynamicCache
    logits: torch.Tensor  # [vocab] float32
    position: int


def split_point(setting: str, n_tokens: int, context_end: int) -> int:
    """How many prompt positions are prefilled (and evicted) before the rest is fed."""
    return settings.get(setting).cache_len(n_tokens, context_end)


@torch.inference_mode()
def prefill(
    model, input_ids: np.ndarray | torch.Tensor, setting: str, context_end: int, horizon: int | None = None
) -> Prefix:
    """The one forward pass over the prompt (or its context prefix) that every policy of a sample reuses.

    The cache is built from the model's config, so its layers have the model's types (sliding or full).
    `horizon`: the prompt's length plus the most tokens that will be decoded or teacher-forced after it.
    """
    ids = torch.as_tensor(np.asarray(input_ids), dtype=torch.long)
    n = int(ids.shape[-1])
    p = split_point(setting, n, context_end)
    cache = DynamicCache(config=model.config)
    t0 = time.perf_counter()
    logits = forward(model, ids[:p], cache, 0)[-1]
    seconds = time.perf_counter() - t0
    return Prefix(setting, cache, p, ids[p:], logits if p == n else None, n, seconds, horizon)


@torch.inference_mode()
def resume(model, prefix: Prefix, keep: np.ndarray | None) -> State:
    """Evict a copy of the prefix cache to `keep` (None = keep all), feed the rest of the prompt, ready to decode."""
    if keep is None:
        cache = copy_cache(prefix.cache)
    else:
        cache = evict(prefix.cache, restrict(keep, prefix.length), prefix.horizon)
    logits = forward(model, prefix.rest, cache, prefix.length)[-1] if len(prefix.rest) else prefix.logits
    return State(cache, logits, prefix.n_tokens)


def fork(state: State) -> State:
    """An independent copy (decoding and teacher forcing both extend the cache)."""
    return State(copy_cache(state.cache), state.logits, state.position)


@torch.inference_mode()
def greedy(
    model,
    state: State,
    max_new_tokens: int,
    eos_ids: set[int] | frozenset[int] = frozenset(),
    min_new_tokens: int = 0,
    scores: list | None = None,
) -> list[int]:
    """Greedy tokens until an EOS (included, as `generate` does) or `max_new_tokens`; extends `state.cache`.

    EOS is suppressed for the first `min_new_tokens` tokens (generate's `min_new_tokens`). Given a list,
    `scores` receives each step's logits [vocab] as computed (before that suppression).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    out: list[int] = []
    logits, pos = state.logits, state.position
    eos = torch.tensor(sorted(eos_ids), dtype=torch.long)
    while True:
        if scores is not None:
            scores.append(logits)
        if len(out) < min_new_tokens and len(eos):
            logits = logits.index_fill(0, eos.to(logits.device), float("-inf"))
        token = int(logits.argmax())
        out.append(token)
        if token in eos_ids or len(out) >= max_new_tokens:
            return out
        logits = forward(model, torch.tensor([token]), state.cache, pos)[-1]
        pos += 1


@torch.inference_mode()
def answer_logprobs(model, state: State, answer_ids: list[int] | np.ndarray) -> torch.Tensor:
    """Teacher forcing: log-probabilities [m, vocab] of each answer token's distribution; extends `state.cache`.

    Row 0 is the distribution after the prompt; row i comes from feeding answer tokens 0..i-1.
    """
    ids = torch.as_tensor(np.asarray(answer_ids), dtype=torch.long)
    if ids.numel() == 0:
        raise ValueError("answer has no tokens")
    rows = [state.logits[None]]
    if ids.numel() > 1:
        rows.append(forward(model, ids[:-1], state.cache, state.position, logits_to_keep=0))
    return torch.cat(rows).log_softmax(-1)


def nll(logprobs: torch.Tensor, answer_ids: list[int] | np.ndarray) -> float:
    """Mean negative log-likelihood (nats per token) of the answer under teacher forcing."""
    ids = torch.as_tensor(np.asarray(answer_ids), dtype=torch.long)
    return float(-logprobs.gather(1, ids[:, None]).mean())


def kl_steps(logprobs_full: torch.Tensor, logprobs: torch.Tensor) -> torch.Tensor:
    """KL(full || evicted) [m] of the next-token distributions at each teacher-forced step (nats, >= 0)."""
    p = logprobs_full.exp()
    return (p * (logprobs_full - logprobs)).sum(-1).clamp_min(0)


def mean_kl(logprobs_full: torch.Tensor, logprobs: torch.Tensor) -> float:
    """Mean over answer tokens of KL(full || evicted) between next-token distributions (nats)."""
    return float(kl_steps(logprobs_full, logprobs).mean())
