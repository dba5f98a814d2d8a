"""Value norm: keep the tokens with the largest value vectors (what they add to the output scales with it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transform.policies.base import ScorePolicy, Stats, register


@register
@dataclass(frozen=True)
class ValueNorm(ScorePolicy):
    name = "vnorm"
    needs = ("value_norm",)
    score_sql = "SELECT *, value_norm AS score FROM cand"

    def score(self, stats: Stats) -> np.ndarray:
        return stats.value_norm.astype(np.float64)
