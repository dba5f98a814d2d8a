"""10. token_magnitudes: magnitude and attention by position, and by layer.

The lines show whether magnitude drifts along the prompt (a progressive,
position-based pruning schedule assumes it does), the attention panel shows
the sink at the start and the recency bump at the end that sink + recent
policies keep, and the heatmap shows which layers single out which stretch
(bright = above that layer's average). Shaded: the context and the question.
"""

from __future__ import annotations

import altair as alt

from reports.base import Data, Report, options
from reports.charts import INDEPENDENT_KV, SEGMENT_FILLS, dropdown, equals, heat_color, kv_line

WIDTH = 820


def _shading(segments, sample) -> alt.Chart:
    return (
        alt.Chart(segments)
        .transform_filter(equals("sample", sample))
        .mark_rect(opacity=0.7)
        .encode(
            x=alt.X("position:Q", title="position"),
            x2="end_position:Q",
            fill=alt.Fill("segment:N", scale=SEGMENT_FILLS, title="prompt segment (shaded)"),  # lines own color
        )
    )


def chart(data: Data) -> alt.TopLevelMixin:
    by_pos, by_layer, segments = (
        data["token_magnitude_by_position"],
        data["layer_magnitude_by_position"],
        data["sample_segments"],
    )
    sample = dropdown("sample", options(by_pos, "sample"), "sample")
    tooltip = [
        alt.Tooltip("position:Q", title="from position"),
        alt.Tooltip("last_position:Q", title="to position"),
        alt.Tooltip("key_norm:Q", title="key norm", format=".3f"),
        alt.Tooltip("value_norm:Q", title="value norm", format=".3f"),
        alt.Tooltip("attn_received:Q", title="attention received", format=".3e"),
        alt.Tooltip("top_token:N", title="highest-key token"),
        alt.Tooltip("top_position:Q", title="at"),
    ]
    pos = alt.Chart(by_pos).transform_filter(equals("sample", sample))
    norms = (
        pos.transform_fold(["key_norm", "value_norm"], as_=["stat", "norm"])
        .transform_calculate(tensor="datum.stat === 'key_norm' ? 'key' : 'value'")
        .mark_line(point=alt.OverlayMarkDef(size=12))
        .encode(
            x="position:Q",
            y=alt.Y("norm:Q", title="mean norm"),
            **kv_line(),
            tooltip=tooltip,
        )
    )
    attention = pos.mark_line(color="#7b4173", interpolate="step-after", point=alt.OverlayMarkDef(size=10)).encode(
        x="position:Q",
        y=alt.Y("attn_received:Q", title="attention received (log)", scale=alt.Scale(type="log")),
        tooltip=tooltip,
    )
    heat = (
        alt.Chart(by_layer)
        .transform_filter(equals("sample", sample))
        .transform_flatten(["positions", "key_norm_rel"], as_=["position", "rel"])
        .mark_rect()
        .encode(
            x=alt.X("position:O", title="bucket start position", axis=alt.Axis(labelOverlap=True)),
            y=alt.Y("layer:O"),
            color=heat_color(
                "rel:Q", "key norm / layer mean (1 = white)", alt.Scale(scheme="redblue", reverse=True, domainMid=1)
            ),
            tooltip=[
                "layer:O",
                alt.Tooltip("position:O", title="from position"),
                alt.Tooltip("rel:Q", title="key norm / layer mean", format=".3f"),
            ],
        )
        .properties(width=WIDTH, height=30 * 8)
    )
    shade = _shading(segments, sample)
    return (
        alt.vconcat(
            alt.layer(shade, norms).properties(
                width=WIDTH, height=200, title="mean key and value norm per position bucket"
            ),
            alt.layer(shade, attention).properties(width=WIDTH, height=150, title="attention received per bucket"),
            heat,
        )
        .add_params(sample)
        .resolve_scale(**INDEPENDENT_KV)
    )


REPORT = Report(
    name="token_magnitudes",
    title="10. Token magnitude by position",
    summary="Mean key and value norm and attention received along the prompt (context and question shaded), "
    "and each layer's key norm by position relative to its mean.",
    queries=("token_magnitude_by_position", "layer_magnitude_by_position", "sample_segments"),
    chart=chart,
    needs=("samples", "token_stats", "tokens"),
    params={"bucket": 16, "buckets": 32},
)
