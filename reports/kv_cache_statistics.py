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
from reports.charts import dropdown, equals

TENSORS = alt.Scale(
    domain=["key", "value", "entries", "token norms"], range=["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"]
)


def chart(data: Data) -> alt.TopLevelMixin:
    stats = data["kv_layer_statistics"]
    sample = dropdown("sample", options(stats, "sample"), "sample")
    base = alt.Chart().encode(
        x=alt.X("layer:Q", title="layer"),
        color=alt.Color("tensor:N", title="tensor / correlation of", scale=TENSORS),
    )
    band = base.mark_area(opacity=0.18).encode(y="lowest_head:Q", y2="highest_head:Q")
    line = base.mark_line(point=True).encode(
        y=alt.Y("mean:Q", title=None),
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
