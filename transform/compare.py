"""Policies side by side over the `quality` table (the brief's compare_strategies.py): a text table and a chart.

A policy is named by its registry name (every parameter variant and budget of it), its policy_id, or a
unique prefix of one. Rows are (task, budget) plus an `ALL` row per budget averaged over every sample;
columns are the mean LongBench score of each policy variant, then the full-cache score.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import altair as alt


class CompareError(ValueError):
    """The policies asked for are not in the quality table; the message lists those that are."""


@dataclass(frozen=True)
class Variant:
    """One column: a policy name with fixed parameters (the budget varies along the rows)."""

    name: str
    params: str  # JSON of the parameters other than the budget

    @property
    def label(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in json.loads(self.params or "{}").items())
        return f"{self.name}({extra})" if extra else self.name


_ROWS = """
SELECT q.task, q.setting, q.budget, q.policy_id, p.name, p.params,
       q.score, q.score_full, q.kl, q.answer_nll - q.answer_nll_full AS nll_increase,
       q.kept_tokens::DOUBLE / q.n_tokens AS kept_share
FROM quality AS q JOIN policies AS p USING (policy_id)
WHERE (? IS NULL OR q.run_id = ?) AND (? IS NULL OR q.task = ?) AND (? IS NULL OR q.setting = ?)
"""


def _variant(name: str, params: str) -> Variant:
    """The policy's parameters other than the budget and those left at their defaults."""
    from transform.policies import REGISTRY, names

    names()  # loads the registry
    defaults = REGISTRY[name].parameters() if name in REGISTRY else {}
    p = {k: v for k, v in json.loads(params or "{}").items() if k != "budget" and defaults.get(k, object()) != v}
    return Variant(name, json.dumps(p, sort_keys=True))


def load(con, policies: Sequence[str], task: str | None = None, setting: str | None = None, run_id: str | None = None):
    """Quality rows of the chosen policies as a list of dicts (each with its `variant`)."""
    if not policies:
        raise CompareError("name at least one policy (a name, a policy_id or a prefix of one)")
    cur = con.execute(_ROWS, [run_id, run_id, task, task, setting, setting])
    cols = [d[0] for d in cur.description]
    rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    if not rows:
        where = ", ".join(f"{k}={v}" for k, v in (("run_id", run_id), ("task", task), ("setting", setting)) if v)
        raise CompareError(f"the quality table has no rows{' for ' + where if where else ''}: run evaluate first")
    chosen, unknown = [], []
    for item in policies:
        hit = [r for r in rows if item in (r["name"], r["policy_id"]) or r["policy_id"].startswith(item)]
        (chosen.extend(hit) if hit else unknown.append(item))
    if unknown:
        known = sorted({r["name"] for r in rows})
        raise CompareError(f"no quality rows for {unknown}; evaluated policies: {', '.join(known)}")
    seen, out = set(), []
    for r in chosen:
        key = (r["task"], r["setting"], r["policy_id"])
        if key not in seen:
            seen.add(key)
            out.append({**r, "variant": _variant(r["name"], r["params"]).label})
    return out


def summarize(rows: list[dict]) -> list[dict]:
    """Mean per (task, setting, budget, variant), plus `ALL` over tasks; `n` samples each."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        for task in (r["task"], "ALL"):
            groups.setdefault((task, r["setting"], r["budget"], r["variant"]), []).append(r)

    def mean(rs, k):
        vals = [x[k] for x in rs if x[k] is not None]
        return sum(vals) / len(vals) if vals else None

    return [
        {"task": t, "setting": s, "budget": b, "variant": v, "n": len(rs), "score": mean(rs, "score"),
         "score_full": mean(rs, "score_full"), "kl": mean(rs, "kl"), "kept_share": mean(rs, "kept_share")}
        for (t, s, b, v), rs in sorted(groups.items(), key=lambda kv: (kv[0][0] == "ALL", *kv[0]))
    ]  # fmt: skip


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def table_text(summary: list[dict]) -> str:
    """Rows (task, setting, budget); one score column per variant, then the full-cache score."""
    variants = sorted({r["variant"] for r in summary})
    cells: dict[tuple, dict[str, dict]] = {}
    for r in summary:
        cells.setdefault((r["task"], r["setting"], r["budget"]), {})[r["variant"]] = r
    head = ["task", "setting", "budget", *variants, "full cache"]
    lines = []
    for (task, setting, budget), by in cells.items():
        full = next(iter(by.values()))["score_full"]
        b = "-" if budget is None else (f"{budget:g}")
        lines.append([task, setting, b, *(_fmt(by[v]["score"]) if v in by else "" for v in variants), _fmt(full)])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]

    def fmt(row: list) -> str:
        pairs = zip(row, widths, strict=True)
        return "  ".join(str(x).rjust(w) if i > 2 else str(x).ljust(w) for i, (x, w) in enumerate(pairs))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(head), rule, *(fmt(r) for r in lines)]) + "\n"


def chart(summary: list[dict]) -> alt.Chart:
    """Score against the share of the cache kept, one line per policy variant, one panel per task and setting."""
    data = alt.Data(values=[r for r in summary if r["score"] is not None])
    base = alt.Chart(data)
    lines = base.mark_line(point=True).encode(
        x=alt.X("kept_share:Q", title="share of the cache kept", axis=alt.Axis(format="%")),
        y=alt.Y("score:Q", title="LongBench score (x100)"),
        color=alt.Color("variant:N", title="policy"),
        tooltip=["task:N", "setting:N", "variant:N", "budget:Q", "n:Q", alt.Tooltip("score:Q", format=".1f"),
                 alt.Tooltip("score_full:Q", format=".1f"), alt.Tooltip("kl:Q", format=".4f"),
                 alt.Tooltip("kept_share:Q", format=".1%")],
    )  # fmt: skip
    full = base.mark_rule(strokeDash=[4, 3], color="gray").encode(y="mean(score_full):Q")
    return (
        alt.layer(lines, full)
        .properties(width=260, height=180)
        .facet(row=alt.Row("setting:N", title=None), column=alt.Column("task:N", title=None))
        .properties(title="Kept-versus-evicted quality (dashed: full cache)")
    )


def write_plot(summary: list[dict], path: str) -> str:
    """A standalone offline HTML page with the chart (the project's one HTML writer)."""
    from reports import html

    page = html.chart_page(chart(summary), "Compare eviction policies", "LongBench score vs share of cache kept.")
    return str(html.write(path, page))
