"""12. eviction_patterns: which cache entries each policy keeps, over positions x layers.

Blue is kept, grey evicted (shades: the share of KV heads and positions of a
bucket that are kept, for per-head policies). The red dashed line is the sink
boundary (every position before it is kept by every layer and head: the
sink, plus any kept block that touches it), the green one the recent
boundary (every position after it is kept: the recent window, and in the
question-agnostic setting the question fed after eviction). Position-based
policies (sink + recent, uniform middle blocks) draw the same stripes in every
layer; score-based ones (key norm, H2O, SnapKV) differ per layer and head.
"""

from __future__ import annotations

import altair as alt

from reports.base import Data, Report, options
from reports.charts import dropdown, equals, radio

KEPT = alt.Scale(domain=[0, 100], range=["#d9d9d9", "#1f77b4"])
EVAL_HINT = (
    "Keep-sets come from the eviction transform: `kvw keep` ranks a policy's cache positions (the "
    "`evaluate/longbench` deployment does too, before it decodes); then rebuild the reports."
)


def _panel(pattern, bounds, sample, setting, policy_id: str, label: str) -> alt.LayerChart:
    keep = f"{equals('sample', sample)} && {equals('setting', setting)} && datum.policy_id === {policy_id!r}"
    cells = (
        alt.Chart(pattern)
        .transform_filter(keep)
        .transform_flatten(["kept_pct"])
        .transform_window(bucket1="row_number()", groupby=["sample", "policy_id", "setting", "layer"])
        .transform_calculate(
            position="ceil((datum.bucket1 - 1) * datum.n_tokens / datum.buckets)",
            end_position="ceil(datum.bucket1 * datum.n_tokens / datum.buckets)",
        )
        .mark_rect()
        .encode(
            x=alt.X("position:Q", title="position", scale=alt.Scale(nice=False)),
            x2="end_position:Q",
            y=alt.Y("layer:O", axis=alt.Axis(values=list(range(0, 64, 5)))),
            color=alt.Color("kept_pct:Q", title="kept %", scale=KEPT),
            tooltip=[
                "layer:O",
                alt.Tooltip("position:Q", title="from position"),
                alt.Tooltip("end_position:Q", title="to position (excl.)"),
                alt.Tooltip("kept_pct:Q", title="kept % (KV heads x positions)"),
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
    note = (
        bound.transform_calculate(text="'keeps ' + format(datum.kept_share, '.1%') + ' of the cache'")
        .mark_text(align="right", baseline="bottom", x="width", y=-4, color="#555")
        .encode(text="text:N")
    )
    return alt.layer(cells, sink, recent, note).properties(
        width=820, height=150, title=alt.TitleParams(label, anchor="start")
    )


def chart(data: Data) -> alt.TopLevelMixin:
    pattern, bounds = data["eviction_pattern"], data["eviction_boundaries"]
    sample = dropdown("sample", options(bounds, "sample"), "sample")
    setting = radio("setting", options(bounds, "setting"), "setting", value="question_aware")
    labels = dict(zip(bounds.column("policy_id").to_pylist(), bounds.column("policy").to_pylist(), strict=True))
    panels = [_panel(pattern, bounds, sample, setting, pid, label) for pid, label in labels.items()]
    return alt.vconcat(*panels, spacing=28).add_params(sample, setting)


REPORT = Report(
    name="eviction_patterns",
    title="12. Eviction patterns",
    summary="Kept (blue) vs evicted (grey) cache entries over positions x layers, one panel per policy, with "
    "the sink boundary (red) and recent boundary (green) marked; per sample and setting.",
    queries=("eviction_pattern", "eviction_boundaries"),
    chart=chart,
    needs=("rankings", "samples", "policies"),
    hint=EVAL_HINT,
    params={"max_samples": 3, "buckets": 128},
)
