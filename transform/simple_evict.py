"""The brief's position-based eviction API (`seeds/simple-kv-eviction.md`), kept name for name.

`build_simple_keep_token_idx` is the reference the `sink_recent` and
`sink_recent_uniform` policies (and their SQL) are tested against. One
deliberate difference from LaCache: budget mode spreads the kept middle blocks
with exact integer arithmetic, `i * (n - 1) // (k - 1)`, where LaCache truncates
a float32 `torch.linspace`, which lands one block early in ~2% of (n, k) pairs
and depends on the CPU's vector width. The brief's examples are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BLOCK_N = 128
"""Tokens per block of uniform middle sampling; blocks are aligned to absolute positions."""

MIDDLE_STRATEGIES = ("none", "uniform")


@dataclass(frozen=True)
class SimpleEvictConfig:
    """sink + recent (`middle_strategy="none"`), or plus uniformly spaced middle blocks (`"uniform"`).

    `uniform_stride` > 0 keeps every stride-th middle block and overrides `middle_budget_tokens`.
    """

    sink_tokens: int = 256
    recent_tokens: int = 512
    middle_strategy: str = "none"
    middle_budget_tokens: int = 0
    uniform_stride: int = 0

    def __post_init__(self):
        if self.middle_strategy not in MIDDLE_STRATEGIES:
            raise ValueError(f"middle_strategy must be one of {MIDDLE_STRATEGIES}, got {self.middle_strategy!r}")
        for name in ("sink_tokens", "recent_tokens", "middle_budget_tokens", "uniform_stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")

    @property
    def cache_target(self) -> int:
        """Cache length after eviction in budget mode (stride mode depends on the length)."""
        uniform_budget = self.middle_strategy == "uniform" and self.uniform_stride == 0
        return self.sink_tokens + self.recent_tokens + (self.middle_budget_tokens if uniform_budget else 0)


def build_eviction_config(
    strategy: str = "sink_recent_uniform",
    sink_tokens: int = 256,
    recent_tokens: int = 512,
    middle_budget: int = 256,
    uniform_stride: int = 0,
    no_eviction: bool = False,
) -> SimpleEvictConfig:
    """The brief's CLI vocabulary (`--strategy sink_recent|sink_recent_uniform`) -> a config."""
    if no_eviction:
        return SimpleEvictConfig(sink_tokens=999_999, recent_tokens=999_999)
    if strategy == "sink_recent":
        return SimpleEvictConfig(sink_tokens=sink_tokens, recent_tokens=recent_tokens)
    if strategy == "sink_recent_uniform":
        return SimpleEvictConfig(sink_tokens, recent_tokens, "uniform", middle_budget, uniform_stride)
    raise ValueError(f"strategy must be 'sink_recent' or 'sink_recent_uniform', got {strategy!r}")


def spread(n: int, k: int) -> list[int]:
    """k of range(n) spread evenly, first and last included: exact `linspace(0, n - 1, k)` floored."""
    if k >= n:
        return list(range(n))
    if k == 1:
        return [0]
    return [i * (n - 1) // (k - 1) for i in range(k)]


def middle_blocks(total_len: int, block_n: int, cfg: SimpleEvictConfig) -> list[int]:
    """Indices of the kept middle blocks: whole blocks strictly between the sink and the recent window."""
    sink_end = min(total_len, cfg.sink_tokens)
    recent_start = max(0, total_len - cfg.recent_tokens)
    first = (sink_end + block_n - 1) // block_n
    end = recent_start // block_n
    if cfg.middle_strategy != "uniform" or first >= end:
        return []
    if cfg.uniform_stride > 0:
        return list(range(first, end, cfg.uniform_stride))
    if cfg.middle_budget_tokens > 0:
        keep_blocks = max(1, cfg.middle_budget_tokens // block_n)
        return [first + j for j in spread(end - first, keep_blocks)]
    return []


@torch.no_grad()
def build_simple_keep_token_idx(
    *,
    total_len: int,
    block_n: int = BLOCK_N,
    cfg: SimpleEvictConfig,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Sorted, unique int64 positions to keep of a `total_len`-token cache.

    [0, sink) and [total_len - recent, total_len) always; whole middle blocks by stride or budget;
    everything when total_len <= sink + recent.
    """
    total_len, block_n = int(total_len), int(block_n)
    if total_len < 0 or block_n < 1:
        raise ValueError(f"need total_len >= 0 and block_n >= 1, got {total_len}, {block_n}")
    if total_len <= cfg.sink_tokens + cfg.recent_tokens:
        return torch.arange(total_len, dtype=torch.long, device=device)
    keep = set(range(min(total_len, cfg.sink_tokens))) | set(range(max(0, total_len - cfg.recent_tokens), total_len))
    for block in middle_blocks(total_len, block_n, cfg):
        keep.update(range(block * block_n, min((block + 1) * block_n, total_len)))
    return torch.tensor(sorted(keep), dtype=torch.long, device=device)
