"""SnapKV (Li et al. 2024): attention from the observation window, max-pooled over neighbours, per KV head.

The last `window` positions (the observation window itself) are always kept;
the others are ranked by the largest attention any position within
`kernel_size // 2` of them received (pooling over the prefix only), so kept
tokens come with their neighbours. `window` should equal the extraction's
`window`, the queries `attn_received` was observed from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transform.policies.base import PolicyError, ScorePolicy, Stats, register

SQL = """
SELECT
    *,
    CASE WHEN position < n - $window THEN max(attn) OVER (
        PARTITION BY sample_key, layer, kv_head, position < n - $window
        ORDER BY position ROWS BETWEEN $half PRECEDING AND $half FOLLOWING
    ) END AS score
FROM cand
"""


@register
@dataclass(frozen=True)
class SnapKV(ScorePolicy):
    name = "snapkv"
    needs = ("attn",)
    score_sql = SQL
    length_dependent = True  # pooling stops where the observation window starts, n - window
    window: int = 32
    kernel_size: int = 7

    def validate(self) -> None:
        if self.recent_tokens:
            raise PolicyError(f"{self.label()}: snapkv keeps its observation `window`; leave recent_tokens at 0")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise PolicyError(f"{self.label()}: kernel_size must be odd and >= 1, got {self.kernel_size}")
        super().validate()

    def recent(self) -> int:
        return self.window

    def score(self, stats: Stats) -> np.ndarray:
        attn = stats.attn.astype(np.float64)
        n, half = stats.n, self.kernel_size // 2
        prefix = max(0, n - self.window)
        out = np.full_like(attn, np.nan)
        padded = np.pad(attn[..., :prefix], [(0, 0), (0, 0), (half, half)], constant_values=-np.inf)
        if prefix:
            windows = np.lib.stride_tricks.sliding_window_view(padded, self.kernel_size, axis=-1)
            out[..., :prefix] = np.fmax.reduce(windows, axis=-1)  # fmax: NaN neighbours are skipped, as SQL max
        return np.where(np.isinf(out), np.nan, out)

    def sql_params(self) -> dict[str, object]:
        return {"half": self.kernel_size // 2, "window": self.window}
