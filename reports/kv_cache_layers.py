"""1. kv_cache_layers: key and value heatmaps per layer, from the raw K/V sample.

Top: mean |x| per (layer, channel) for each KV head over the whole run:
bright columns are outlier channels (the ones that wreck naive quantization),
and how they come and go across layers. Bottom: the raw key and value
entries of one layer, position x channel, for a chosen sample: horizontal
stripes are tokens with unusual vectors (the attention sink at position 0),
vertical stripes are channels.
"""

from __future__ import annotations

import altair as alt

from reports.base import Data, Report, options
from reports.charts import DIVERGING, SEQUENTIAL, dropdown, equals, heat_color

CELL = 5


def _channel_map(data, field: str, title: str) -> alt.FacetChart:
    return (
        alt.Chart(data)
        .transform_flatten([field])
        .transform_window(channel1="row_number()", groupby=["layer", "kv_head"])
        .transform_calculate(channel="datum.channel1 - 1")
        .mark_rect()
        .encode(
            x=alt.X("channel:O", title="channel", axis=alt.Axis(values=list(range(0, 64, 8)))),
            y=alt.Y("layer:O", title="layer"),
            color=heat_color(field, title, SEQUENTIAL),
            tooltip=[
                "layer:O",
                alt.Tooltip("kv_head:O", title="KV head"),
                "channel:O",
                alt.Tooltip(f"{field}:Q", title=title),
            ],
        )
        .properties(width=64 * CELL, height=30 * 7, name=f"map_{field}")  # named: Altair needs it in a concat
        .facet(
            column=alt.Column(
                "kv_head:O", title=f"{title} by KV head", header=alt.Header(labelExpr="'KV head ' + datum.value")
            )
        )
    )


def _raw(data, sample: alt.Parameter, layer: alt.Parameter, field: str, title: str) -> alt.FacetChart:
    return (
        alt.Chart(data)
        .transform_filter(equals("sample", sample))
        .transform_filter(equals("layer", layer))
        .transform_flatten([f"{field}_pct"])
        .transform_window(channel1="row_number()", groupby=["sample", "layer", "kv_head", "position"])
        .transform_calculate(channel="datum.channel1 - 1", **{field: f"datum.{field}_pct * datum.{field}_scale / 99"})
        .mark_rect()
        .encode(
            x=alt.X("channel:O", title="channel", axis=alt.Axis(values=list(range(0, 64, 8)))),
            y=alt.Y("position:O", title="position"),
            color=heat_color(field, f"{title} entry (0 = white)", DIVERGING),
            tooltip=[
                alt.Tooltip("token:N", title="token"),
                "position:O",
                "layer:O",
                alt.Tooltip("kv_head:O", title="KV head"),
                "channel:O",
                alt.Tooltip(f"{field}:Q", title=title),
            ],
        )
        .properties(width=64 * CELL, height=alt.Step(8), name=f"raw_{field}")
        .facet(
            column=alt.Column(
                "kv_head:O",
                title=f"{title} of the chosen layer, by KV head",
                header=alt.Header(labelExpr="'KV head ' + datum.value"),
            )
        )
        .resolve_scale(color="shared")
    )


def chart(data: Data) -> alt.TopLevelMixin:
    channels, raw = data["kv_channel_absmean"], data["kv_heatmap"]
    sample = dropdown("sample", options(raw, "sample"), "sample")
    layer = dropdown("layer", sorted(options(raw, "layer")), "layer")
    return (
        alt.vconcat(
            _channel_map(channels, "key_absmean", "mean |key|"),
            _channel_map(channels, "value_absmean", "mean |value|"),
            _raw(raw, sample, layer, "k", "key"),
            _raw(raw, sample, layer, "v", "value"),
        )
        .add_params(sample, layer)
        .resolve_scale(color="independent")
    )


REPORT = Report(
    name="kv_cache_layers",
    title="1. Key and value heatmaps per layer",
    summary="Mean |x| per layer x channel (outlier channels as bright columns) and the raw key/value entries "
    "of a chosen layer and sample, position x channel per KV head.",
    queries=("kv_channel_absmean", "kv_heatmap"),
    chart=chart,
    needs=("samples", "kv"),
    hint="The raw K/V table is off by default: extract with `-p raw_kv=true` (scripts/quickstart.sh does).",
    params={"max_samples": 1, "positions": 32},  # ~1 MB of entries per sample
)
