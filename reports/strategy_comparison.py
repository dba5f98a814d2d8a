"""13. strategy_comparison: what each eviction policy costs in quality, budget by budget, with uncertainty.

One panel per LongBench category (and one over every task): a curve per policy (its label: name plus the
parameters that tell its variants apart; one curve per variant, never per name) over every budget evaluated,
x the share of the cache kept, y the mean of the chosen measure with its seeded bootstrap 95% band. The
dashed line is the full cache (0 for the differences, its own score for the score). Each panel says its n and
how many samples the measure is NULL for, and why (e.g. one-token answers in question_aware: predicted by
the full prefill, so 0 by construction, not a measurement); a budget where every sample is NULL shows "NULL".
The default measure is the continuation KL, defined for every sample; the others are one click away.
Numbers come from warehouse.quality_stats, the same as `kvw compare`.
"""

from __future__ import annotations

import altair as alt
import pyarrow as pa

from reports.base import Data, Report, compact, options
from reports.charts import dropdown, equals, radio
from warehouse import quality_stats as qs

FULL = "full cache"
ZERO_FOR_FULL = ("kl_continuation", "kl", "nll_increase", "score_change")  # the full cache's value is 0 by definition


def _short(reason: str | None) -> str:
    return "" if reason is None else reason.split(":")[0]


def summarize(rows: list[dict]) -> list[dict]:
    """Curve points (kind 'curve'), full-cache references ('full') and panel notes ('panel') in one table."""
    scoped = qs.with_scopes(rows)
    out = [{**r, "kind": "curve"} for r in qs.summarize(scoped, by=("scope", "setting", "variant", "label", "budget"))]
    panels: dict[tuple, list[dict]] = {}
    for r in scoped:
        panels.setdefault((r["scope"], r["setting"]), []).append(r)
    for (scope, setting), rs in panels.items():
        samples = {(r["task"], r["sample_id"]): r["score_full"] for r in rs}  # one full-cache score per sample
        for m in qs.MEASURES:
            full = 0.0 if m in ZERO_FOR_FULL else qs.describe([{"v": v} for v in samples.values()], "v")["mean"]
            out.append({"scope": scope, "setting": setting, "measure": m, "kind": "full", "label": FULL,
                        "mean": full, "kept_share": 1.0})  # fmt: skip
            null = [r for r in rs if r[m] is None]
            why = qs.describe(null, m)["null_reason"] if null else None
            k = len({(r["task"], r["sample_id"]) for r in null})
            note = f"n = {len(samples)} samples" + (f" · NULL for {k}: {_short(why)}" if null else "")
            out.append({"scope": scope, "setting": setting, "measure": m, "kind": "panel", "note": note})
    return out


def prepare(data: Data) -> Data:
    """The one aggregation (warehouse.quality_stats) between the per-sample SQL rows and the chart."""
    summary = summarize(data["strategy_quality"].to_pylist())
    cols = ("scope", "setting", "measure", "kind", "label", "variant", "budget", "kept_share", "samples", "n",
            "n_null", "null_reason", "mean", "lo", "hi", "note")  # fmt: skip
    table = pa.Table.from_pylist([{c: r.get(c) for c in cols} for r in summary])
    return {**data, "strategy_summary": compact(table)}


def _domains(s: pa.Table) -> str:
    """A Vega object literal: 'setting|measure' -> [low, high] over every band, mean and full-cache value."""
    spans: dict[str, list[float]] = {}
    for r in s.to_pylist():
        if r["kind"] in ("curve", "full"):
            vals = [v for v in (r["lo"], r["hi"], r["mean"]) if v is not None]
            span = spans.setdefault(f"{r['setting']}|{r['measure']}", [float("inf"), float("-inf")])
            span[:] = [min([span[0], *vals]), max([span[1], *vals])]
    pad = {k: (hi - lo) * 0.05 or 0.5 for k, (lo, hi) in spans.items()}
    return "{" + ", ".join(f"{k!r}: [{lo - pad[k]:.6g}, {hi + pad[k]:.6g}]" for k, (lo, hi) in spans.items()) + "}"


def chart(data: Data) -> alt.TopLevelMixin:
    s = data["strategy_summary"]
    scopes = options(s, "scope")
    order = [qs.ALL, *sorted(x for x in scopes if x != qs.ALL)]
    setting = radio("setting", options(s, "setting"), "setting", value="question_aware")
    measures = [m for m in qs.MEASURES if m in options(s, "measure")]
    measure = dropdown("measure", measures, "quality measure", labels=[qs.MEASURES[m] for m in measures])
    labels = sorted({x for x in s.column("label").to_pylist() if x and x != FULL})
    pick = alt.selection_point(fields=["label"], bind="legend", name="policy")
    base = alt.Chart(s).transform_filter(f"{equals('setting', setting)} && {equals('measure', measure)}")
    kept = [v for v in s.column("kept_share").to_pylist() if v is not None] or [0.0]
    x = alt.X(
        "kept_share:Q",
        title="share of the cache kept (100%: the full cache)",
        axis=alt.Axis(format="%"),
        scale=alt.Scale(domain=[max(0.0, min(kept) - 0.03), 1.0]),
    )  # fixed: no panel's extent can be empty
    color = alt.Color("label:N", title="policy (click to isolate)", scale=alt.Scale(domain=labels))
    dash = alt.StrokeDash("label:N", title="policy (click to isolate)", scale=alt.Scale(domain=labels))
    seen = alt.condition(pick, alt.value(1.0), alt.value(0.12))
    tooltip = [
        alt.Tooltip("label:N", title="policy"),
        alt.Tooltip("budget:Q", title="budget"),
        alt.Tooltip("kept_share:Q", title="cache kept", format=".1%"),
        alt.Tooltip("n:Q", title="n (defined)"),
        alt.Tooltip("mean:Q", title="mean", format=".4g"),
        alt.Tooltip("lo:Q", title="95% low", format=".4g"),
        alt.Tooltip("hi:Q", title="95% high", format=".4g"),
        alt.Tooltip("n_null:Q", title="NULL rows"),
        alt.Tooltip("null_reason:N", title="why NULL"),
    ]
    curve = base.transform_filter("datum.kind === 'curve' && isValid(datum.mean)")
    y_title = "mean of the chosen measure (band: bootstrap 95%)"
    # the y range of each (setting, measure), computed here: a data-driven extent warns where a panel is all NULL
    yscale = alt.Scale(domain={"expr": f"{_domains(s)}[{setting.name} + '|' + {measure.name}] || [0, 1]"})
    y = alt.Y("mean:Q", title=y_title, scale=yscale)
    band = curve.mark_area(opacity=0.12).encode(x=x, y=alt.Y("lo:Q", title=y_title, scale=yscale), y2="hi:Q",
                                                color=color)  # fmt: skip
    lines = curve.mark_line(point=True).encode(
        x=x, y=y, color=color, strokeDash=dash, opacity=seen, tooltip=tooltip
    ).add_params(pick)  # fmt: skip
    null = (  # over every curve row (an empty layer would leave the x scale without data): text only where NULL
        base.transform_filter("datum.kind === 'curve'")
        .transform_calculate(null_text="isValid(datum.mean) ? '' : 'NULL'")
        .mark_text(fontSize=9, angle=270, align="right", baseline="middle")
        .encode(x=x, y=alt.value(4), text="null_text:N", color=color, tooltip=tooltip)
    )
    full = (
        base.transform_filter("datum.kind === 'full'")
        .mark_rule(strokeDash=[4, 3], color="black")
        .encode(y="mean:Q", tooltip=[alt.Tooltip("label:N", title="reference"), alt.Tooltip("mean:Q", format=".4g")])
    )
    note = (
        base.transform_filter("datum.kind === 'panel'")
        .mark_text(align="left", baseline="bottom", fontSize=10, color="#444")
        .encode(x=alt.value(2), y=alt.value(-4), text="note:N")
    )
    return (
        alt.layer(band, lines, null, full, note)
        .properties(width=300, height=200)
        .facet(alt.Facet("scope:N", title=None, sort=order, header=alt.Header(labelFontWeight="bold")), columns=3)
        .add_params(setting, measure)
        .properties(title="Quality vs share of the cache kept, per LongBench category (dashed: full cache)")
    )


REPORT = Report(
    name="strategy_comparison",
    title="13. Eviction strategy comparison",
    summary="Quality vs budget per policy and LongBench category, with bootstrap 95% bands, n and NULLs per "
    "panel and the full-cache line: continuation KL (default), answer KL, answer NLL increase, score change, score.",
    queries=("strategy_quality",),
    chart=chart,
    needs=("quality", "policies"),
    prepare=prepare,
    hint="Quality rows come from the evaluation: `prefect deployment run evaluate/longbench` (one prefill "
    "per sample, every policy decoded on a compacted copy); then rebuild the reports.",
)
