"""3. kv_value_distribution: histograms of key and value entries, per layer.

A narrow bell with long thin tails (high kurtosis) is what makes a few large
entries set the scale of a whole quantization block; keys usually have heavier
tails than values. The lower panel tracks tail weight and the largest entry
across layers; the chosen layer is marked.
"""

from __future__ import annotations

import altair as alt

from reports.base import Data, Report, options
from reports.charts import dropdown, equals, kv_line, kv_mark_color


def _histogram(hist, layer: alt.Parameter, tensor: str) -> alt.Chart:
    return (
        alt.Chart(hist)
        .transform_filter(equals("layer", layer))
        .transform_filter(f"datum.tensor === {tensor!r}")
        .mark_rect(color=kv_mark_color(tensor))
        .encode(
            x=alt.X("bin_start:Q", title=f"{tensor} entry", bin="binned"),
            x2="bin_end:Q",
            y=alt.Y("entries:Q", title="entries (log)", scale=alt.Scale(type="log")),
            tooltip=[
                "layer:Q",
                alt.Tooltip("bin_start:Q", title="from", format=".3f"),
                alt.Tooltip("bin_end:Q", title="to", format=".3f"),
                alt.Tooltip("entries:Q", format=","),
            ],
        )
        .properties(width=420, height=220, title=f"{tensor} entries of the chosen layer")
    )


def _by_layer(moments, layer: alt.Parameter, field: str, title: str) -> alt.LayerChart:
    lines = (
        alt.Chart(moments)
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:Q"),
            y=alt.Y(f"{field}:Q", title=title),
            **kv_line(),
            tooltip=["tensor:N", "layer:Q", "std:Q", "kurtosis:Q", alt.Tooltip("absmax:Q", title="largest |entry|")],
        )
    )
    rule = alt.Chart(moments).transform_filter(equals("layer", layer)).mark_rule(color="#888", strokeDash=[4, 3])
    return alt.layer(lines, rule.encode(x="layer:Q")).properties(width=420, height=180)


def chart(data: Data) -> alt.TopLevelMixin:
    hist, moments = data["kv_value_histogram"], data["kv_value_moments"]
    layer = dropdown("layer", sorted(options(hist, "layer")), "layer")
    return alt.vconcat(
        alt.hconcat(_histogram(hist, layer, "key"), _histogram(hist, layer, "value")),
        alt.hconcat(
            _by_layer(moments, layer, "kurtosis", "excess kurtosis (tail weight)"),
            _by_layer(moments, layer, "absmax", "largest |entry|"),
        ),
    ).add_params(layer)


REPORT = Report(
    name="kv_value_distribution",
    title="3. Distribution of key and value entries",
    summary="Histograms of raw key and value entries of a chosen layer (log counts), and tail weight "
    "(kurtosis) and the largest entry across layers.",
    queries=("kv_value_histogram", "kv_value_moments"),
    chart=chart,
    needs=("samples", "kv"),
    hint="The raw K/V table is off by default: extract with `-p raw_kv=true` (scripts/quickstart.sh does).",
    params={"bins": 60},
)
