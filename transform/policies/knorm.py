"""Key norm (Devoto et al. 2024, kvpress `KnormPress`): keep the keys with the lowest L2 norm.

Low-norm keys tend to draw the most attention, so this needs no attention at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transform.policies.base import ScorePolicy, Stats, register


@register
@dataclass(frozen=True)
class KeyNorm(ScorePolicy):
    name = "knorm"
    needs = ("key_norm",)
    score_sql = "SELECT *, 0::FLOAT - key_norm AS score FROM cand"  # 0 - x, never -x: no -0.0 to sort

    def score(self, stats: Stats) -> np.ndarray:
        return 0.0 - stats.key_norm.astype(np.float64)
