"""Sink + recent (StreamingLLM, the brief's strategy 1): keep the first and the last tokens, drop the middle."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transform.policies.base import PolicyError, PositionPolicy, register
from transform.simple_evict import SimpleEvictConfig, build_simple_keep_token_idx

SQL = """
SELECT
    run_id, model, task, sample_id, layer, kv_head, position,
    n <= sink + recent OR position < sink OR position >= n - recent AS kept
FROM (
    SELECT *, least(coalesce(k, $sink), $sink) AS sink, coalesce(k - least(k, $sink), $recent) AS recent
    FROM cand
)
"""


@register
@dataclass(frozen=True)
class SinkRecent(PositionPolicy):
    """With a budget of k tokens, keeps min(k, sink_tokens) sink tokens and the rest recent (recent_tokens ignored)."""

    name = "sink_recent"
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

    def sql(self) -> str:
        return SQL

    def sql_params(self) -> dict[str, object]:
        return {"sink": self.sink_tokens, "recent": self.recent_tokens}
