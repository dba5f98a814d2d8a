"""Observed attention, H2O-style (Zhang et al. 2023): heavy hitters plus a recent window.

Heavy hitters are the positions that received the most attention from the
observation window (the extracted `attn_received`, or `attn_received_context`
in the question-agnostic setting); the last `recent_tokens` are always kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transform.policies.base import ScorePolicy, Stats, register


@register
@dataclass(frozen=True)
class H2O(ScorePolicy):
    name = "h2o"
    needs = ("attn",)
    score_sql = "SELECT *, attn AS score FROM cand"
    recent_tokens: int = 32

    def score(self, stats: Stats) -> np.ndarray:
        return stats.attn.astype(np.float64)
