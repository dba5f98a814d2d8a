"""5. head_specialization: what each KV head of a chosen layer does, next to every other layer's heads.

Sink heads put most of their attention on the first tokens; local heads on
the last few; a low attention entropy means a head reads few tokens (cheap to
evict around), a high one means it reads broadly. Cache statistics beside
them show whether a head's keys are spread (std), sparse or heavy-tailed.
"""

from __future__ import annotations

import altair as alt

from reports.base import Data, Report, options
from reports.charts import dropdown, equals

METRICS = {
    "sink_share": "attention on first 4 tokens",
    "local_share": "attention on last 64 tokens",
    "attention_entropy": "attention entropy (0..1)",
    "key_std": "key std",
    "value_std": "value std",
    "key_sparsity": "key sparsity",
    "kv_correlation": "key-value correlation",
    "key_absmax": "largest |key|",
}


def _folded(profile, sample: alt.Parameter) -> alt.Chart:
    return (
        alt.Chart(profile)
        .transform_filter(equals("sample", sample))
        .transform_fold(list(METRICS), as_=["stat", "value"])
        .transform_calculate(metric="{" + ",".join(f"{k!r}:{v!r}" for k, v in METRICS.items()) + "}[datum.stat]")
    )


def chart(data: Data) -> alt.TopLevelMixin:
    profile = data["head_profile"]
    sample = dropdown("sample", options(profile, "sample"), "sample")
    layer = dropdown("layer", sorted(options(profile, "layer")), "layer", value=max(options(profile, "layer")) // 2)
    tooltip = ["metric:N", "layer:O", alt.Tooltip("kv_head:O", title="KV head"), alt.Tooltip("value:Q", format=".4g")]
    bars = (
        _folded(profile, sample)
        .transform_filter(equals("layer", layer))
        .mark_bar()
        .encode(
            x=alt.X("kv_head:O", title="KV head"),
            y=alt.Y("value:Q", title=None),
            color=alt.Color("kv_head:N", title="KV head", scale=alt.Scale(scheme="tableau10")),
            tooltip=tooltip,
        )
        .properties(width=110, height=150, name="bars")
        .facet(facet=alt.Facet("metric:N", title="the chosen layer", sort=list(METRICS.values())), columns=8)
        .resolve_scale(y="independent")
    )
    overview = (
        _folded(profile, sample)
        .mark_rect()
        .encode(
            x=alt.X("kv_head:O", title="KV head"),
            y=alt.Y("layer:O", title="layer"),
            color=alt.Color("value:Q", scale=alt.Scale(scheme="viridis"), legend=None),
            tooltip=tooltip,
        )
        .properties(width=110, height=30 * 9, name="overview")
        .facet(
            facet=alt.Facet("metric:N", title="every layer (colour per panel)", sort=list(METRICS.values())), columns=8
        )
        .resolve_scale(color="independent")
    )
    return alt.vconcat(bars, overview).add_params(sample, layer)


REPORT = Report(
    name="head_specialization",
    title="5. Head specialization within a layer",
    summary="Per KV head of a chosen layer: attention on sink and recent tokens, attention entropy, key/value "
    "spread, sparsity and correlation; with every layer's heads as heatmaps below.",
    queries=("head_profile",),
    chart=chart,
    needs=("samples", "token_stats", "layer_stats"),
)
