"""2. kv_cache_statistics: sparsity, key-value correlation, std and mean |x| of the cache, by layer.

Each line is the mean over KV heads, the band spans the lowest to the highest
head. Layers whose sparsity climbs are cheap to prune; a std or mean |x| that
jumps marks layers where quantization needs more care; a key-value
correlation near zero says keys and values carry different information, so
one cannot be derived from the other.
"""

from __future__ import annotations

import altair as alt

from reports.base import Data, Report, options
from reports.charts import KEY_COLOR, KV_DASHES, VALUE_COLOR, dropdown, equals

# key and value as on every page (colour + dash); the two correlations get their own colours, dotted
TENSORS = alt.Scale(
    domain=["key", "value", "entries", "token norms"], range=[KEY_COLOR, VALUE_COLOR, "#2ca02c", "#9467bd"]
)
DASHES = alt.Scale(domain=TENSORS.domain, range=[*KV_DASHES.range, [2, 2], [2, 2]])
LEGEND = "tensor (key / value) or correlation of"


def chart(data: Data) -> alt.TopLevelMixin:
    stats = data["kv_layer_statistics"]
    sample = dropdown("sample", options(stats, "sample"), "sample")
    # one legend for band and line (a facet shows only some tensors, so no per-tensor band layers): it
    # draws strokes, so the dash of each tensor shows in it
    legend = alt.Legend(title=LEGEND, titleLimit=300, symbolType="stroke", symbolOpacity=1, symbolStrokeWidth=2.5)
    base = alt.Chart().encode(
        x=alt.X("layer:Q", title="layer"), color=alt.Color("tensor:N", title=LEGEND, scale=TENSORS, legend=legend)
    )
    band = base.mark_area(opacity=0.18).encode(y="lowest_head:Q", y2="highest_head:Q")
    line = base.mark_line(point=True).encode(
        y=alt.Y("mean:Q", title=None),
        strokeDash=alt.StrokeDash("tensor:N", title=LEGEND, scale=DASHES, legend=legend),
        tooltip=[
            "metric:N",
            "tensor:N",
            "layer:Q",
            alt.Tooltip("mean:Q", title="mean over KV heads", format=".4g"),
            alt.Tooltip("lowest_head:Q", title="lowest head", format=".4g"),
            alt.Tooltip("highest_head:Q", title="highest head", format=".4g"),
        ],
    )
    return (
        alt.layer(band, line, data=stats)
        .transform_filter(equals("sample", sample))
        .properties(width=430, height=220)
        .facet(facet=alt.Facet("metric:N", title=None), columns=2)
        .resolve_scale(y="independent")
        .add_params(sample)
    )


REPORT = Report(
    name="kv_cache_statistics",
    title="2. Cache statistics by layer",
    summary="Sparsity, key-value correlation, standard deviation and mean |x| of keys and values per layer "
    "(mean over KV heads, band = lowest to highest head), per sample or over all.",
    queries=("kv_layer_statistics",),
    chart=chart,
    needs=("samples", "layer_stats"),
)
