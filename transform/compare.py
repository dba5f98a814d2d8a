"""Policies side by side over the `quality_samples` view (the brief's compare_strategies.py), as text.

A policy is named by its registry name (every variant and budget of it), its label (name plus the parameters
that tell its variants apart, as `policy_labels` spells it), its policy_id, or a unique prefix of one. Rows are
(scope, setting, policy label, budget) where scope is every task pooled, then each LongBench category (or
task); columns are n, mean and the seeded bootstrap 95% interval of the chosen measure, and how many rows
are NULL and why. The numbers are warehouse.quality_stats', the same report 13 draws.
"""

from __future__ import annotations

from collections.abc import Sequence

from warehouse import quality_stats as qs


class CompareError(ValueError):
    """The policies asked for are not in the quality table; the message lists those that are."""


def load(con, policies: Sequence[str], task: str | None = None, setting: str | None = None, run_id: str | None = None):
    """quality_samples rows of the chosen policies as a list of dicts."""
    if not policies:
        raise CompareError("name at least one policy (a name, a label, a policy_id or a prefix of one)")
    rows = qs.load(con, run_id, task, setting)
    if not rows:
        where = ", ".join(f"{k}={v}" for k, v in (("run_id", run_id), ("task", task), ("setting", setting)) if v)
        raise CompareError(f"the quality table has no rows{' for ' + where if where else ''}: run evaluate first")
    chosen: dict[tuple, dict] = {}
    unknown = []
    for item in policies:
        hit = [r for r in rows if item in (r["policy"], r["label"], r["policy_id"]) or r["policy_id"].startswith(item)]
        (chosen.update({(r["run_id"], r["task"], r["sample_id"], r["setting"], r["policy_id"]): r for r in hit})
         if hit else unknown.append(item))  # fmt: skip
    if unknown:
        known = sorted({r["label"] or r["policy_id"] for r in rows})
        raise CompareError(f"no quality rows for {unknown}; evaluated policies: {', '.join(known)}")
    return list(chosen.values())


def summarize(rows: list[dict], by: str = "category", measures: Sequence[str] = tuple(qs.MEASURES)) -> list[dict]:
    """n, mean and interval per (scope, setting, label, budget): scope is every task pooled, then each `by`."""
    if by not in ("category", "task"):
        raise CompareError(f"--by must be category or task, got {by!r}")
    try:
        return qs.summarize(qs.with_scopes(rows, (by,)), ("scope", "setting", "label", "budget"), measures)
    except qs.QualityError as err:
        raise CompareError(str(err)) from err


def _fmt(x: float | None, spec: str) -> str:
    return "NULL" if x is None else format(x, spec)


def table_text(summary: list[dict], measure: str = "kl_continuation") -> str:
    """One line per (scope, setting, policy, budget): share kept, n, mean [95% interval] (– where n < 2: one
    sample has no interval), NULL rows (why)."""
    spec = ".1f" if measure.startswith("score") else ".4f"
    head = ["scope", "setting", "policy", "budget", "kept", "n", "mean", "95% interval", "NULL"]
    lines = []
    for r in summary:
        if r["measure"] != measure:
            continue
        budget = "-" if r["budget"] is None else f"{r['budget']:g}"
        null = f"{r['n_null']} ({r['null_reason'].split(':')[0]})" if r["n_null"] else "0"
        lines.append([r["scope"], r["setting"], r["label"], budget, _fmt(r["kept_share"], ".1%"), str(r["n"]),
                      _fmt(r["mean"], spec), qs.interval_text(r, spec), null])  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]

    def fmt(row: list) -> str:
        pairs = zip(row, widths, strict=True)
        return "  ".join(str(x).ljust(w) if i < 3 or i == 8 else str(x).rjust(w) for i, (x, w) in enumerate(pairs))

    title = f"{measure}: {qs.MEASURES[measure]}; bootstrap 95% interval ({qs.RESAMPLES} resamples, seed {qs.SEED})"
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([title, fmt(head), rule, *(fmt(r).rstrip() for r in lines)]) + "\n"
