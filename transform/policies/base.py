"""What every eviction policy shares: validated parameters, budgets, rankings, and the one selection step.

A policy exists twice: `keep_mask(stats)`, a small numpy reference over one sample, and a SQL transform
that ranks the positions of every selected sample in one DuckDB statement (`transform/keep.py`). A
budget is a threshold on that ranking, never a rerun: the stored ranking lists a cache's positions from
most to least worth keeping, the view `keep_sets` puts the forced positions first (the first
`forced_first()` and the last `forced_last()` of the cache) and keeps the first k (warehouse/views/keep.sql).
Both paths must give identical keep-sets (tests/transform/test_policy_sql.py). Parameters reach SQL only
as bound `$name` parameters.

Score policies only say how to score a position (higher = keep; ties to the later position); the shared
ranking step is transform/sql/rank_*.sql. `ranking_params()` are the parameters that shape the ranking:
every budget and every sink/recent choice of a score policy shares one ranking. Position policies say
which positions they keep as SQL over the cache length `n` (and the budget `k`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
REGISTRY: dict[str, type[Policy]] = {}


class PolicyError(ValueError):
    """A policy name, parameter or budget is wrong; the message names it."""


def register(cls: type[Policy]) -> type[Policy]:
    """Class decorator: make a policy available by its `name`."""
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise PolicyError(f"two policies are named {cls.name!r}")
    REGISTRY[cls.name] = cls
    return cls


def read_sql(name: str) -> str:
    return (SQL_DIR / f"{name}.sql").read_text()


@dataclass(frozen=True)
class Stats:
    """One sample's statistics as a policy sees them at eviction time: arrays [layers, kv_heads, n]."""

    key_norm: np.ndarray
    value_norm: np.ndarray
    attn: np.ndarray  # attention received from the setting's observation window

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.key_norm.shape

    @property
    def n(self) -> int:
        return self.key_norm.shape[-1]


_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "float | None": lambda v: v is None or (isinstance(v, int | float) and not isinstance(v, bool)),
}


@dataclass(frozen=True)
class Policy:
    """Base of every policy. `budget`: tokens kept per KV head (>= 1) or a share of the cache (0 < b < 1)."""

    name: ClassVar[str] = ""
    per_head: ClassVar[bool] = False  # score policies turn this into a parameter
    needs: ClassVar[tuple[str, ...]] = ()  # statistics read: key_norm, value_norm, attn
    sweep: ClassVar[dict[str, object]] = {}  # parameters the default evaluate sweep gives it (see sweep_spec)
    budget: float | None = None

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not _CHECKS[f.type](value):
                raise PolicyError(f"{self.name}: parameter {f.name} must be {f.type}, got {value!r}")
            if f.type == "int" and value < 0:
                raise PolicyError(f"{self.name}: parameter {f.name} must be >= 0, got {value}")
            if f.type == "float" and not math.isfinite(value):
                raise PolicyError(f"{self.name}: parameter {f.name} must be a finite number, got {value}")
            if f.type == "float":
                object.__setattr__(self, f.name, float(value))
        b = self.budget
        if b is not None:
            if not math.isfinite(b) or b <= 0:
                raise PolicyError(f"{self.name}: budget must be > 0 (tokens >= 1 or a ratio below 1), got {b}")
            if b >= 1 and b != int(b):
                raise PolicyError(f"{self.name}: a budget >= 1 counts tokens and must be whole, got {b}")
            if b >= 1:
                object.__setattr__(self, "budget", int(b))
        self.validate()

    # -- parameters and identity ----------------------------------------------------------------------------

    def validate(self) -> None:
        """Cross-parameter checks of a policy (raise PolicyError)."""

    @classmethod
    def parameters(cls) -> dict[str, object]:
        """Accepted parameters and their defaults."""
        return {f.name: f.default for f in dataclasses.fields(cls)}

    def params(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @property
    def budget_unit(self) -> str:
        return "ratio" if self.budget is not None and self.budget < 1 else "tokens"

    def nominal_budget(self) -> float | None:
        """The budget recorded in `policies`: the given one, else what the parameters imply (None: length-dependent)."""
        return self.budget

    @property
    def policy_id(self) -> str:
        return _digest({"name": self.name, "params": self.params()})

    @classmethod
    def sweep_spec(cls) -> dict[str, object]:
        """The policy as the default evaluate sweep runs it: its name and `sweep` parameters."""
        return {"name": cls.name, **cls.sweep}

    # -- the stored ranking ---------------------------------------------------------------------------------

    @property
    def threshold(self) -> str:
        """`budget`: the keep-set is the first k of a ranking shared by every budget; `all`: a fixed set,
        the ranking of this instance alone (kept positions first)."""
        return "budget"

    def ranking_params(self) -> dict[str, object]:
        """The parameters that shape the ranking (a budget only thresholds it)."""
        if self.threshold == "all":
            return self.params()
        return {k: v for k, v in self.params().items() if k not in ("budget", "sink_tokens", "recent_tokens")}

    @property
    def ranking_id(self) -> str:
        return _digest({"name": self.name, "ranking": self.ranking_params()})

    def forced_first(self) -> int:
        """The first positions of the cache, kept before any ranked one."""
        return 0

    def forced_last(self) -> int:
        """The last positions of the cache, kept before any ranked one."""
        return 0

    @property
    def setting_free(self) -> bool:
        """Is the ranking the same whenever the cache is evicted (then one sort serves every setting)?"""
        return False

    def label(self) -> str:
        shown = {k: v for k, v in self.params().items() if v != type(self).parameters()[k] or k == "budget"}
        return f"{self.name}(" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")"

    # -- budget against one sample --------------------------------------------------------------------------

    def tokens(self, n: int) -> int | None:
        """The budget in tokens for an n-token cache (a ratio rounds half up, at least 1)."""
        if self.budget is None:
            return None
        if self.budget_unit == "ratio":
            return max(1, math.floor(self.budget * n + 0.5))
        return int(self.budget)

    def forced(self) -> int:
        """Positions the policy keeps whatever their score (they must fit in the budget)."""
        return self.forced_first() + self.forced_last()

    def check(self, n: int) -> None:
        """Raise PolicyError if the policy cannot run on an n-token cache."""
        k = self.tokens(n)
        if k is None:
            return
        if k > n:
            raise PolicyError(f"{self.label()}: budget of {k} tokens is larger than the sequence ({n} tokens)")
        if min(n, self.forced()) > k:
            raise PolicyError(f"{self.label()}: the {self.forced()} forced tokens do not fit a budget of {k}")

    # -- the two implementations ----------------------------------------------------------------------------

    def keep_mask(self, stats: Stats) -> np.ndarray:
        """The Python reference: bool [layers, kv_heads, n], True = kept."""
        raise NotImplementedError

    def keep_token_idx(self, stats: Stats) -> np.ndarray:
        """Kept positions, sorted and unique per head: int64 [layers, kv_heads, kept]."""
        mask = self.keep_mask(stats)
        L, H, n = mask.shape
        counts = mask.sum(-1)
        if (counts != counts.flat[0]).any():
            raise AssertionError(f"{self.label()}: heads keep different numbers of tokens")
        return np.nonzero(mask)[2].reshape(L, H, int(counts.flat[0])).astype(np.int64)

    def ranking_sql(self) -> str:
        """SELECT -> run_id, model, task, sample_id, layer, kv_head (NULL: shared by every layer and head), n,
        positions (the cache's positions, most worth keeping first), kept_count. Reads the CTEs `cand` and
        `cand_samples` (transform/sql/rank_candidates.sql)."""
        raise NotImplementedError

    def sql_params(self) -> dict[str, object]:
        """Values bound to the `$name` parameters of `ranking_sql()`."""
        return {}


@dataclass(frozen=True)
class PositionPolicy(Policy):
    """A keep-set that depends only on positions: the same for every layer and head.

    `positions_sql` is a SELECT over `cand_samples` (one row per sample: `n` the cache length, `k` the budget in
    tokens, NULL without one) giving each sample's positions in keep order, and `kept_count`: with threshold
    `all`, how many of the first positions the fixed set keeps; NULL when the budget decides.
    """

    positions_sql: ClassVar[str] = ""  # SELECT run_id, model, task, sample_id, n, positions, kept_count FROM ...

    def positions(self, n: int) -> np.ndarray:
        """Sorted, unique kept positions of an n-token cache."""
        raise NotImplementedError

    def ranking_sql(self) -> str:
        return read_sql("rank_positions").replace("{positions_sql}", self.positions_sql.strip())

    def keep_mask(self, stats: Stats) -> np.ndarray:
        L, H, n = stats.shape
        row = np.zeros(n, dtype=bool)
        row[self.positions(n)] = True
        return np.broadcast_to(row, (L, H, n)).copy()


@dataclass(frozen=True)
class ScorePolicy(Policy):
    """Keep the forced positions, then the highest-scoring ones, per KV head or shared across heads.

    Shared (`per_head=False`): a position's score is summed over every layer and head, and all
    heads keep the same positions.
    """

    score_sql: ClassVar[str] = ""  # SELECT *, <score> AS score FROM cand
    length_dependent: ClassVar[bool] = False  # does a position's score depend on the cache length n?
    sink_tokens: int = 0
    recent_tokens: int = 0
    per_head: bool = True

    def score(self, stats: Stats) -> np.ndarray:
        """float64 [layers, kv_heads, n], higher = keep; NaN = lowest."""
        raise NotImplementedError

    def recent(self) -> int:
        """The last positions always kept."""
        return self.recent_tokens

    def forced_first(self) -> int:
        return self.sink_tokens

    def forced_last(self) -> int:
        return self.recent()

    def validate(self) -> None:
        if self.budget is not None and self.budget >= 1 and self.forced() > self.budget:
            raise PolicyError(f"{self.label()}: the {self.forced()} forced tokens (sink + recent) exceed the budget")

    def check(self, n: int) -> None:
        if self.budget is None:
            raise PolicyError(f"{self.label()}: a score policy needs a budget (tokens >= 1 or a ratio below 1)")
        super().check(n)

    def keep_mask(self, stats: Stats) -> np.ndarray:
        self.check(stats.n)
        return top_k(self.score(stats), self.tokens(stats.n), self.sink_tokens, self.recent(), self.per_head)

    @property
    def setting_free(self) -> bool:
        """Scores that are the same whenever the cache is evicted (no observed attention, no dependence on the
        cache length): one ranking of the whole prompt serves both settings (restricted to the cache)."""
        return "attn" not in self.needs and not self.length_dependent

    def ranking_sql(self) -> str:
        mode = "per_head" if self.per_head else "shared"
        return "WITH scored AS (\n" + self.score_sql.strip() + "\n),\n" + read_sql("rank_" + mode)


def _digest(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def top_k(score: np.ndarray, k: int, sink: int, recent: int, per_head: bool) -> np.ndarray:
    """bool mask [L, H, n]: forced positions first, then highest score (NaN lowest), ties to later positions."""
    L, H, n = score.shape
    pos = np.arange(n)
    forced = (pos < sink) | (pos >= n - recent)
    if not per_head:
        flat = score.reshape(L * H, n).T
        shared = np.array([math.fsum(v for v in col if not math.isnan(v)) if not np.isnan(col).all() else np.nan
                           for col in flat])  # fmt: skip
        return np.broadcast_to(_select(shared, k, forced), (L, H, n)).copy()
    mask = np.zeros((L, H, n), dtype=bool)
    for layer in range(L):
        for head in range(H):
            mask[layer, head] = _select(score[layer, head], k, forced)
    return mask


def _select(score: np.ndarray, k: int, forced: np.ndarray) -> np.ndarray:
    s = np.where(np.isnan(score), -np.inf, score.astype(np.float64))
    pos = np.arange(len(score))
    order = np.lexsort((-pos, -s, ~forced))  # last key is the primary one
    keep = np.zeros(len(score), dtype=bool)
    keep[order[:k]] = True
    return keep
