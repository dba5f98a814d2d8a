"""6. kv_quantization_error: how much int8, int4 and fp8 round trips distort keys and values, by layer and head.

Errors are relative (Frobenius norm of the error over the norm of the tensor)
for a per-token symmetric round trip. Layers or heads whose int4 error stands
out are the ones to keep in higher precision in a mixed-precision cache; keys
usually suffer more than values because of their outlier channels.
"""

from __future__ import annotations

import altair as alt

from reports.base import Data, Report, options
from reports.charts import dropdown, equals, heat_color, kv_dash

FORMATS = alt.Scale(domain=["int8", "fp8", "int4"], range=["#2ca02c", "#1f77b4", "#d62728"])


def chart(data: Data) -> alt.TopLevelMixin:
    by_layer, by_head = data["quantization_error_by_layer"], data["quantization_error_by_head"]
    sample = dropdown("sample", options(by_layer, "sample"), "sample")
    lines = (
        alt.Chart(by_layer)
        .transform_filter(equals("sample", sample))
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:Q"),
            y=alt.Y("error:Q", title="relative error (log)", scale=alt.Scale(type="log")),
            color=alt.Color("format:N", scale=FORMATS, title="format", legend=alt.Legend(title="format")),
            strokeDash=kv_dash(),
            tooltip=[
                "format:N",
                "tensor:N",
                "layer:Q",
                alt.Tooltip("error:Q", title="mean over heads", format=".3%"),
                alt.Tooltip("lowest_head:Q", title="lowest head", format=".3%"),
                alt.Tooltip("highest_head:Q", title="highest head", format=".3%"),
            ],
        )
        .properties(width=760, height=260, title="mean over KV heads, for the chosen sample")
    )
    heads = (
        alt.Chart(by_head)
        .mark_rect()
        .encode(
            x=alt.X("layer:O"),
            y=alt.Y("kv_head:O", title="KV head"),
            color=heat_color("error:Q", "relative error (log)", alt.Scale(type="log", scheme="orangered"), ".2%"),
            tooltip=["format:N", "tensor:N", "layer:O", "kv_head:O", alt.Tooltip("error:Q", format=".3%")],
        )
        .properties(width=330, height=60, name="heads")
        .facet(row=alt.Row("format:N", sort=["int8", "fp8", "int4"]), column=alt.Column("tensor:N"))
        .properties(title="per KV head, mean over every sample")
    )
    return alt.vconcat(lines, heads).add_params(sample).resolve_scale(color="independent")


REPORT = Report(
    name="kv_quantization_error",
    title="6. Quantization error by layer and head",
    summary="Relative error of int8, fp8 and int4 round trips of keys and values per layer (per sample or "
    "all), and per KV head.",
    queries=("quantization_error_by_layer", "quantization_error_by_head"),
    chart=chart,
    needs=("samples", "layer_stats"),
)
