"""Random eviction, the floor every policy should beat: a seeded hash of the position ranks the tokens.

The hash is integer arithmetic that numpy and DuckDB compute identically
(multiply-mod the Mersenne prime 2^31 - 1, then xor-shift, three rounds), so
the Python reference and the SQL keep the same tokens for the same seed. With
`per_head` the layer and head enter the hash and every head draws its own set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transform.policies.base import PolicyError, ScorePolicy, Stats, register

P = 2_147_483_647
ROUNDS = (48_271, 16_807, 69_621)

SQL = """
WITH h0 AS (
    SELECT
        *,
        (position::BIGINT * 1103515245 + $seed::BIGINT * 12345
         + CASE WHEN $per_head THEN layer::BIGINT * 69069 + kv_head::BIGINT * 362437 ELSE 0 END + 1)
        % 2147483647 AS h
    FROM cand
),
h1 AS (SELECT * REPLACE (xor((h * 48271) % 2147483647, ((h * 48271) % 2147483647) >> 16) AS h) FROM h0),
h2 AS (SELECT * REPLACE (xor((h * 16807) % 2147483647, ((h * 16807) % 2147483647) >> 16) AS h) FROM h1),
h3 AS (SELECT * REPLACE (xor((h * 69621) % 2147483647, ((h * 69621) % 2147483647) >> 16) AS h) FROM h2)
SELECT * EXCLUDE (h), h::DOUBLE AS score FROM h3
"""


def position_hash(position: np.ndarray, seed: int, layer: np.ndarray | int = 0, head: np.ndarray | int = 0):
    """The hash of SQL above, vectorised: int64 in [0, 2^31)."""
    mix = np.asarray(layer, np.int64) * 69069 + np.asarray(head, np.int64) * 362437
    h = (position.astype(np.int64) * 1103515245 + seed * 12345 + mix + 1) % P
    for m in ROUNDS:
        h = (h * m) % P
        h = h ^ (h >> 16)
    return h


@register
@dataclass(frozen=True)
class Random(ScorePolicy):
    name = "random"
    score_sql = SQL
    per_head: bool = False
    seed: int = 0

    def validate(self) -> None:
        if self.seed >= 2**31:
            raise PolicyError(f"{self.label()}: seed must be below 2^31, got {self.seed}")
        super().validate()

    def score(self, stats: Stats) -> np.ndarray:
        L, H, n = stats.shape
        layer, head, pos = np.meshgrid(np.arange(L), np.arange(H), np.arange(n), indexing="ij")
        if not self.per_head:
            layer, head = 0, 0
        return position_hash(pos, self.seed, layer, head).astype(np.float64)

    def sql_params(self) -> dict[str, object]:
        return {"seed": self.seed, "per_head": self.per_head}
