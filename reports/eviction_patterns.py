"""12. eviction_patterns: which cache entries each policy keeps, over positions x layers, and token by token.

Pick a sample, a setting (question_aware: evict after
the whole prompt; question_agnostic: evict after the context, then feed the
question, which is always kept) and a budget. There is one panel per policy
variant (its name and parameters other than the budget) at that budget:

- blue is kept, grey evicted; shades are the share of KV heads (and
  positions, in a bucket) that keep an entry, for per-head policies;

- the line above a panel gives what the policy actually keeps after the
  budget, measured on its keep-set, not its nominal parameters: kept tokens
  of the cache, split into sink (the kept run from position 0), recent (the
  kept run ending at the cache's last position) and middle (everything else
  kept); per-head policies show the mean over layers x KV heads. A
  `recent_tokens: 512` policy at a 25% budget of a 1K-token prompt keeps far
  fewer recent tokens than 512, and this line says how many;

- the red dashed line is the sink boundary (every earlier position is kept
  by every layer and head), the green one the recent boundary (every later
  position is kept);

- the strip at the top shows where the context and the question lie. Drag
  on it to choose the positions of the token zoom at the bottom: one row per
  policy variant, one cell per token (its text below), coloured by the share
  of layers x KV heads that keep it.

Position-based policies (sink + recent, uniform middle blocks) draw the same
stripes in every layer; score-based ones (key norm, H2O, SnapKV) differ per
layer and head. The page carries at most a few samples, and a sweep of many
policies x budgets gets coarser position buckets, so it stays small.
"""

from __future__ import annotations

import altair as alt

from reports.base import Data, Report, options
from reports.charts import SEGMENT_COLORS, dropdown, equals, radio

KEPT_TEXT = "datum.cell === '0' ? 'none' : datum.cell === '9' ? 'all' : 'about ' + format(datum.share, '.0%')"
KEPT_SHARE = alt.Scale(domain=[0, 1], range=["#d9d9d9", "#1f77b4"])
WIDTH = 820
ZOOM_TOKENS = 96  # tokens the zoom shows at most, from the start of the brushed range
EVAL_HINT = (
    "Keep-sets come from the eviction transform: `kvw keep` ranks a policy's cache positions (the "
    "`evaluate/longbench` deployment does too, before it decodes); then rebuild the reports."
)


def _js(mapping: dict) -> str:
    """A Python dict of strings as a Vega expression object literal."""
    return "{" + ",".join(f"{k!r}:{v!r}" for k, v in mapping.items()) + "}"


def _x(title: str | None = "position") -> alt.X:
    return alt.X("position:Q", title=title, scale=alt.Scale(domain={"expr": "[0, n_tokens]"}, nice=False))


def _strip(segments, sample, brush) -> alt.LayerChart:
    base = alt.Chart(segments).transform_filter(equals("sample", sample))
    bars = base.mark_rect(opacity=0.85).encode(
        x=_x("position (drag to choose the token zoom)"),
        x2="end_position:Q",
        color=alt.Color("segment:N", scale=SEGMENT_COLORS, title="prompt segment"),
        tooltip=["segment:N", alt.Tooltip("position:Q", title="from"), alt.Tooltip("end_position:Q", title="to")],
    )
    return alt.layer(bars.add_params(brush)).properties(
        width=WIDTH, height=22, title=alt.TitleParams("context and question", anchor="start")
    )


def _header(bounds, keep: str, ids: dict) -> alt.LayerChart:
    text = (
        "'kept ' + format(datum.kept_tokens, '.0f') + ' of ' + datum.cache_tokens + ' cached tokens: sink '"
        " + format(datum.sink_tokens, '.0f') + ' · middle ' + format(datum.middle_tokens, '.0f') + ' · recent '"
        " + format(datum.recent_tokens, '.0f') + (datum.per_head ? ' (mean over layers × KV heads)' : '')"
        " + ' — ' + format(datum.kept_share, '.1%') + ' of the prompt kept'"
    )
    sizes = (
        alt.Chart(bounds)
        .transform_filter(keep)
        .transform_calculate(text=text)
        .mark_text(align="left", x=0, fontWeight="bold", color="#333")
        .encode(text="text:N", tooltip=["policy:N", "budget_label:N", "setting:N"])
    )
    absent = (  # a variant swept at other budgets: say so instead of an empty panel
        alt.Chart(alt.Data(values=[{"budgets": ", ".join(ids)}]))
        .transform_filter(f"!isValid({_js(ids)}[budget])")
        .transform_calculate(text="'no keep-set at this budget; this variant has: ' + datum.budgets")
        .mark_text(align="left", x=0, color="#d62728")
        .encode(text="text:N")
    )
    return alt.layer(sizes, absent).properties(width=WIDTH, height=14, view=alt.ViewConfig(stroke=None))


def _panel(pattern, bounds, keep: str, ids: dict, variant: str, layers: int, legend: bool) -> alt.VConcatChart:
    cells = (
        alt.Chart(pattern)
        .transform_filter(keep)
        .transform_calculate(cell="split(datum.kept, '')")
        .transform_flatten(["cell"])
        .transform_window(i1="row_number()", groupby=["sample", "policy_id", "setting"])
        .transform_calculate(
            layer="floor((datum.i1 - 1) / datum.buckets)",
            bucket="(datum.i1 - 1) % datum.buckets",
        )
        .transform_calculate(
            position="ceil(datum.bucket * datum.n_tokens / datum.buckets)",
            end_position="ceil((datum.bucket + 1) * datum.n_tokens / datum.buckets)",
            share="toNumber(datum.cell) / 9",
            kept_text=KEPT_TEXT,
        )
        .mark_rect()
        .encode(
            x=_x(),
            x2="end_position:Q",
            y=alt.Y("layer:O", axis=alt.Axis(values=list(range(0, layers, 5)))),
            color=alt.Color("share:Q", title="kept share", scale=KEPT_SHARE, legend=alt.Undefined if legend else None),
            tooltip=[
                "layer:O",
                alt.Tooltip("position:Q", title="from position"),
                alt.Tooltip("end_position:Q", title="to position (excl.)"),
                alt.Tooltip("kept_text:N", title="kept (KV heads x positions)"),
            ],
        )
    )
    bound = alt.Chart(bounds).transform_filter(keep)
    tips = [
        "policy:N",
        "setting:N",
        alt.Tooltip("sink_end:Q", title="sink boundary"),
        alt.Tooltip("recent_start:Q", title="recent boundary"),
        alt.Tooltip("kept_share:Q", format=".1%"),
    ]
    shown = lambda test: alt.condition(test, alt.value(1), alt.value(0))  # noqa: E731 (hidden, not filtered: no empty data)
    sink = bound.mark_rule(color="#d62728", strokeDash=[6, 4], strokeWidth=2).encode(
        x="sink_end:Q", opacity=shown("datum.sink_end > 0 && datum.sink_end < datum.n_tokens"), tooltip=tips
    )
    recent = bound.mark_rule(color="#2ca02c", strokeDash=[6, 4], strokeWidth=2).encode(
        x="recent_start:Q",
        opacity=shown("datum.recent_start > datum.sink_end && datum.recent_start < datum.n_tokens"),
        tooltip=tips,
    )
    body = alt.layer(cells, sink, recent).properties(width=WIDTH, height=120)
    return alt.vconcat(_header(bounds, keep, ids), body, spacing=4).properties(
        title=alt.TitleParams(variant, anchor="start", fontSize=13)
    )


def _zoom(tokens, text, sample, setting, budget_ids: str, variant_of: dict, brush) -> alt.Chart:
    lo = "(brush.position ? floor(brush.position[0]) : 0)"
    hi = f"(brush.position ? min(ceil(brush.position[1]), {lo} + {ZOOM_TOKENS}) : {ZOOM_TOKENS})"
    label_axis = alt.Axis(labelExpr="split(datum.label, '|')[1]", labelAngle=-90, labelLimit=80, labelFontSize=10)
    return (
        alt.Chart(tokens)
        .transform_filter(f"{equals('sample', sample)} && {equals('setting', setting)}")
        .transform_filter(f"indexof({budget_ids}, datum.policy_id) >= 0")
        .transform_lookup(lookup="sample", from_=alt.LookupData(text, "sample", ["tokens"]))
        .transform_calculate(variant=f"{_js(variant_of)}[datum.policy_id]", cell="split(datum.kept, '')")
        .transform_flatten(["cell", "tokens"], as_=["cell", "token"])
        .transform_window(position1="row_number()", groupby=["policy_id"])
        .transform_calculate(position="datum.position1 - 1")
        .transform_filter(f"datum.position >= {lo} && datum.position < {hi}")
        .transform_calculate(share="toNumber(datum.cell) / 9", label="datum.position + '|' + datum.token")
        .transform_calculate(kept_text=KEPT_TEXT)
        .mark_rect(stroke="white", strokeWidth=0.5)
        .encode(
            x=alt.X("label:O", title="token (position order)", sort=alt.EncodingSortField("position"), axis=label_axis),
            y=alt.Y("variant:N", title=None, axis=alt.Axis(labelLimit=260)),
            color=alt.Color("share:Q", title="kept share", scale=KEPT_SHARE),
            tooltip=[
                "variant:N",
                "position:Q",
                "token:N",
                alt.Tooltip("kept_text:N", title="kept (layers x KV heads)"),
            ],
        )  # fmt: skip
        .properties(
            width=alt.Step(11),
            height=alt.Step(18),
            title=alt.TitleParams(
                f"token zoom: up to {ZOOM_TOKENS} tokens from the start of the range dragged on the strip",
                anchor="start",
            ),
        )
    )


def chart(data: Data) -> alt.TopLevelMixin:
    pattern, bounds = data["eviction_pattern"], data["eviction_boundaries"]
    rows = bounds.to_pylist()
    samples = options(bounds, "sample")
    sample = dropdown("sample", samples, "sample")
    setting = radio("setting", options(bounds, "setting"), "setting", value="question_aware")
    by_budget = sorted(rows, key=lambda r: (r["budget"] is None, r["budget"] or 0))
    budgets = list(dict.fromkeys(r["budget_label"] for r in by_budget))
    budget = dropdown("budget", budgets, "budget", value=budgets[len(budgets) // 2])
    n_tokens = alt.param(name="n_tokens", expr=f"{_js({r['sample']: r['n_tokens'] for r in rows})}[sample]")
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    # (variant, budget) -> policy_id: one policy instance per panel and budget
    pid = {(r["variant"], r["budget_label"]): r["policy_id"] for r in rows}
    layers = max(pattern.column("layers").to_pylist())
    panels = []
    for v in variants:
        ids = {b: pid[(v, b)] for b in budgets if (v, b) in pid}
        keep = f"{equals('sample', sample)} && {equals('setting', setting)} && datum.policy_id === {_js(ids)}[budget]"
        panels.append(_panel(pattern, bounds, keep, ids, v, layers, legend=not panels))  # one legend, first panel
    per_budget = "{" + ",".join(
        f"{b!r}:[" + ",".join(repr(pid[(v, b)]) for v in variants if (v, b) in pid) + "]" for b in budgets
    ) + "}"  # fmt: skip
    brush = alt.selection_interval(name="brush", encodings=["x"], value={"x": [0, ZOOM_TOKENS]})
    parts = [_strip(data["sample_segments"], sample, brush), *panels]
    if data["eviction_tokens"].num_rows:
        variant_of = {r["policy_id"]: r["variant"] for r in rows}
        zoom = _zoom(data["eviction_tokens"], data["eviction_token_text"], sample, setting, f"{per_budget}[budget]",
                     variant_of, brush)  # fmt: skip
        parts.append(zoom)
    return (
        alt.vconcat(*parts, spacing=22).add_params(sample, setting, budget, n_tokens).resolve_scale(color="independent")
    )


REPORT = Report(
    name="eviction_patterns",
    title="12. Eviction patterns",
    summary="Kept (blue) vs evicted (grey) cache entries over positions x layers, one panel per policy variant "
    "at a chosen budget, titled with the sink, middle and recent sizes actually kept; the context/question "
    "strip, the sink (red) and recent (green) boundaries, and a token-level zoom.",
    queries=("eviction_pattern", "eviction_boundaries", "sample_segments", "eviction_tokens", "eviction_token_text"),
    chart=chart,
    needs=("rankings", "samples", "policies"),
    hint=EVAL_HINT,
    params={"max_samples": 3, "buckets": 128, "max_cells": 400_000, "max_zoom_cells": 400_000},
)
