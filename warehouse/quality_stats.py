"""Quality aggregated one way for everyone: n, mean and a seeded bootstrap 95% interval per group.

Reads the `quality_samples` view (one row per sample, policy and setting, with each measure NULL where it is
undefined and a reason beside it) and summarizes any grouping of it. `kvw compare` prints this and report 13
draws it, so the numbers on the page and in the terminal are the same. Means skip NULLs; each measure has its
own n. The interval is the percentile bootstrap of the mean over samples (2,000 resamples, seed 0): it says
how much the mean moves with the choice of samples, not how the model would do on other tasks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

# Measure -> (what it is, unit). The first is the default everywhere: defined for every sample, reference-free.
MEASURES = {
    "kl_continuation": "KL(full ‖ evicted) along the full cache's own greedy answer (nats/token)",
    "kl": "KL(full ‖ evicted) over the reference answer (nats/token)",
    "nll_increase": "reference-answer NLL, evicted − full (nats/token)",
    "score_change": "LongBench score, evicted − full (×100)",
    "score": "LongBench score (×100)",
}
REASONS = {"kl_continuation": "continuation_null_reason", "kl": "answer_null_reason",
           "nll_increase": "answer_null_reason"}  # fmt: skip
RESAMPLES, SEED, LEVEL = 2000, 0, 0.95
ALL = "(all tasks)"

COLUMNS = (
    "run_id", "task", "category", "sample_id", "setting", "policy_id", "policy", "label", "variant", "budget",
    "budget_unit", "kept_share", "memory_saved", "score", "score_full", "score_change", "nll_increase", "kl",
    "answer_null_reason", "kl_continuation", "continuation_null_reason",
)  # fmt: skip


class QualityError(ValueError):
    """No quality rows match what was asked; the message says what there is."""


def load(con, run_id: str | None = None, task: str | None = None, setting: str | None = None) -> list[dict]:
    """Rows of the `quality_samples` view (optionally one run, task or setting) as dicts."""
    sql = f"""SELECT {", ".join(COLUMNS)} FROM quality_samples
              WHERE (? IS NULL OR run_id = ?) AND (? IS NULL OR task = ?) AND (? IS NULL OR setting = ?)
              ORDER BY run_id, task, sample_id, setting, label, budget"""
    cur = con.execute(sql, [run_id, run_id, task, task, setting, setting])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def bootstrap_ci(
    values: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL
) -> tuple[float, float] | tuple[None, None]:
    """Percentile bootstrap interval of the mean: `resamples` means of n values drawn with replacement.

    The values are sorted first, so the interval does not depend on the order rows arrive in. Fewer than two
    values give no interval (None, None): resampling one value only ever draws it, a zero-width "95% interval"
    that claims a certainty one sample cannot give."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    if x.size < 2:
        return None, None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def describe(rows: Iterable[dict], measure: str) -> dict:
    """n, mean, interval of one measure over rows, plus how many are NULL and the most common reason."""
    rows = list(rows)
    values = [r[measure] for r in rows if r[measure] is not None]
    reasons = Counter(r.get(REASONS.get(measure, ""), None) or "undefined" for r in rows if r[measure] is None)
    lo, hi = bootstrap_ci(values)
    return {
        "n": len(values),
        "mean": float(np.mean(values)) if values else None,
        "lo": lo,
        "hi": hi,
        "n_null": sum(reasons.values()),
        "null_reason": reasons.most_common(1)[0][0] if reasons else None,
    }


def summarize(
    rows: Sequence[dict], by: Sequence[str] = ("setting", "label", "budget"), measures: Sequence[str] = tuple(MEASURES)
) -> list[dict]:
    """One dict per group of `by` and measure: the group's keys, `measure`, n, mean, lo, hi, n_null, null_reason,
    and the group's mean share kept and full-cache score. Groups in first-seen order."""
    unknown = [m for m in measures if m not in MEASURES]
    if unknown:
        raise QualityError(f"unknown measure(s) {unknown}; measures: {', '.join(MEASURES)}")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    out = []
    for key, rs in groups.items():
        shared = {k: v for k, v in zip(by, key, strict=True)}
        shared["kept_share"] = _mean(r["kept_share"] for r in rs)
        shared["score_full"] = _mean(r["score_full"] for r in rs)
        shared["samples"] = len({(r["run_id"], r["task"], r["sample_id"]) for r in rs})
        out.extend({**shared, "measure": m, **describe(rs, m)} for m in measures)
    return out


def with_scopes(rows: Sequence[dict], scopes: Sequence[str] = ("category",)) -> list[dict]:
    """Each row once per scope it belongs to, as a `scope` column: ALL, then its value of each `scopes` column."""
    return [{**r, "scope": s} for r in rows for s in (ALL, *(r[c] for c in scopes))]


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _num(x: float | None, spec: str) -> str:
    return "NULL" if x is None else format(x, spec)


NO_INTERVAL = "–"  # printed for the interval of fewer than 2 values (bootstrap_ci)


def interval_text(r: dict, spec: str) -> str:
    """`[lo, hi]` of a summary row, or NO_INTERVAL where n < 2."""
    return NO_INTERVAL if r["n"] < 2 else f"[{_num(r['lo'], spec)}, {_num(r['hi'], spec)}]"


def markdown(summary: Sequence[dict], measure: str, keys: Sequence[str] = ("setting", "label", "budget")) -> str:
    """A markdown table of one measure: the keys, n, mean (NULL where no sample defines it) and interval (– where
    n < 2)."""
    spec = ".4f" if measure.startswith("kl") or measure == "nll_increase" else ".1f"
    lines = [f"**{measure}**: {MEASURES[measure]}; mean and bootstrap 95% interval ({RESAMPLES} resamples, "
             f"seed {SEED})", "", f"| {' | '.join(keys)} | n | mean | 95% interval | NULL (reason) |",
             "|" + "---|" * (len(keys) + 4)]  # fmt: skip
    for r in summary:
        if r["measure"] != measure:
            continue
        null = f"{r['n_null']} ({r['null_reason']})" if r["n_null"] else "0"
        cells = [_num(r[k], "g") if isinstance(r[k], float) else str(r[k]) for k in keys]
        lines.append(f"| {' | '.join(cells)} | {r['n']} | {_num(r['mean'], spec)} | "
                     f"{interval_text(r, spec)} | {null} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing their average rank (as Spearman's rho needs)."""
    ranks = np.empty(len(x))
    ranks[np.argsort(x, kind="mergesort")] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation of paired values; None with fewer than 3 pairs or a constant side."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3:
        return None
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])
