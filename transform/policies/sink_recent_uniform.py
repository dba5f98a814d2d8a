"""Sink + recent + uniform middle blocks (LaCache, the brief's strategy 2).

Whole `block_n`-token blocks (aligned to absolute positions) strictly between
the sink and the recent window are kept every `uniform_stride`-th block, or, in
budget mode, `middle_budget_tokens // block_n` of them spread evenly (first and
last middle block included). A `budget` of k tokens sets the middle budget to
k - sink_tokens - recent_tokens.

It does not fit the ranking mould: the blocks spread for kb kept blocks are not a subset of those for kb + 1
(kb = 3 keeps the middle block (m - 1) // 2, kb = 4 does not), and a budget keeps whole blocks, so the kept
count moves in steps of block_n. Each instance is a fixed keep-set (threshold `all`), computed per sample
from the cache length alone, shared by every layer and head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transform.policies.base import PolicyError, PositionPolicy, register
from transform.simple_evict import BLOCK_N, SimpleEvictConfig, build_simple_keep_token_idx

# j-th middle block is kept by `spread(m, kb)` iff i = ceil(j (kb-1) / (m-1)) maps back to it: i (m-1) // (kb-1) = j
SQL = """
WITH geometry AS (
    SELECT
        *,
        least(n, $sink) AS sink_end,
        greatest(0, n - $recent) AS recent_start,
        coalesce(k - $sink - $recent, $middle) AS middle_budget
    FROM cand_samples
),
blocks AS (
    SELECT
        *,
        (sink_end + $block_n - 1) // $block_n AS first_block,
        recent_start // $block_n AS end_block,
        greatest(1, middle_budget // $block_n) AS keep_blocks
    FROM geometry
),
middle AS (
    SELECT
        *,
        position // $block_n - first_block AS j,  -- index among the middle blocks
        end_block - first_block AS m  -- how many middle blocks there are
    FROM (SELECT *, unnest(range(n)) AS position FROM blocks)
),
spread AS (
    SELECT
        *,
        CASE WHEN keep_blocks > 1 AND m > 1 THEN (j * (keep_blocks - 1) + m - 2) // (m - 1) END AS i
    FROM middle
),
flagged AS (
    SELECT
        run_id, model, task, sample_id, n, position,
        n <= $sink + $recent
        OR position < sink_end
        OR position >= recent_start
        OR (
            j >= 0 AND j < m
            AND CASE
                WHEN $stride > 0 THEN j % greatest($stride, 1) = 0
                WHEN middle_budget <= 0 THEN FALSE
                WHEN keep_blocks >= m THEN TRUE
                WHEN keep_blocks = 1 THEN j = 0
                ELSE i * (m - 1) // (keep_blocks - 1) = j
            END
        ) AS kept
    FROM spread
)
SELECT
    run_id, model, task, sample_id, n,
    list(position ORDER BY kept DESC, position) AS positions,
    count(*) FILTER (WHERE kept) AS kept_count
FROM flagged
GROUP BY run_id, model, task, sample_id, n
"""


@register
@dataclass(frozen=True)
class SinkRecentUniform(PositionPolicy):
    """uniform_stride > 0 overrides the middle budget; short caches (<= sink + recent) keep everything."""

    name = "sink_recent_uniform"
    positions_sql = SQL
    # sink + recent of 32 + 64 in blocks of 32, so that share budgets of a few hundred tokens leave room for
    # middle blocks (the brief's defaults, 256 + 512, need 768 tokens before the first middle block)
    sweep = {"sink_tokens": 32, "recent_tokens": 64, "block_n": 32}
    sink_tokens: int = 256
    recent_tokens: int = 512
    middle_budget_tokens: int = 0
    uniform_stride: int = 0
    block_n: int = BLOCK_N

    def validate(self) -> None:
        if self.block_n < 1:
            raise PolicyError(f"{self.label()}: block_n must be >= 1")
        if self.budget is not None and self.uniform_stride > 0:
            raise PolicyError(f"{self.label()}: uniform_stride overrides the budget: give one of them, not both")
        if self.budget is not None and self.middle_budget_tokens:
            raise PolicyError(f"{self.label()}: give either budget or middle_budget_tokens, not both")
        if self.budget is not None and self.budget >= 1 and self.budget < self.sink_tokens + self.recent_tokens:
            raise PolicyError(f"{self.label()}: budget is below sink_tokens + recent_tokens")

    def check(self, n: int) -> None:
        super().check(n)
        k = self.tokens(n)
        if k is not None and k < self.sink_tokens + self.recent_tokens:
            raise PolicyError(f"{self.label()}: budget of {k} tokens is below sink_tokens + recent_tokens")

    def config(self, n: int) -> SimpleEvictConfig:
        k = self.tokens(n)
        middle = self.middle_budget_tokens if k is None else k - self.sink_tokens - self.recent_tokens
        return SimpleEvictConfig(self.sink_tokens, self.recent_tokens, "uniform", middle, self.uniform_stride)

    def nominal_budget(self) -> float | None:
        if self.budget is not None:
            return self.budget
        if self.uniform_stride > 0:
            return None
        return self.sink_tokens + self.recent_tokens + self.middle_budget_tokens

    def positions(self, n: int) -> np.ndarray:
        self.check(n)
        return build_simple_keep_token_idx(total_len=n, block_n=self.block_n, cfg=self.config(n)).numpy()

    @property
    def threshold(self) -> str:
        return "all"

    def sql_params(self) -> dict[str, object]:
        return {
            "sink": self.sink_tokens,
            "recent": self.recent_tokens,
            "middle": self.middle_budget_tokens,
            "stride": self.uniform_stride,
            "block_n": self.block_n,
        }
