"""5. head_specialization: what each query head of a chosen layer attends to, and what its KV head stores.

SmolLM2 has 9 query heads per layer but only 3 KV
heads: query heads q0-q2 read KV head 0, q3-q5 KV head 1, q6-q8 KV head 2
(grouped-query attention). Each query head has its own attention pattern,
so attention is shown per query head, labelled "q<h> · KV <k>" and coloured
by its KV head. The numbers come from every query of one long LongBench
context (the demo run of the same model, named under the bars):

- sink share: attention on the first 4 tokens (attention-sink heads);

- previous-token share: attention on the token just before the query;

- local share: attention on the 16 most recent tokens, the query's own included;

- mean distance: how far back, in tokens, the attention lands on average;

- entropy: 0 = all attention on one token, 1 = spread evenly over all tokens seen.

The grid under the bars splits each head's attention by distance (self, 1,
2-3, 4-7, ... tokens back): a previous-token head is one bright cell at 1, a
sink head lights up the farthest buckets, a local head the nearest ones. The
heatmaps show every layer at once. The last row is the cache itself, which
exists per KV head: spread (std), sparsity, key-value correlation and the
largest |key| of each KV head, for the chosen layer and sample of the run.
"""

from __future__ import annotations

import altair as alt

from reports.base import Data, Report, options
from reports.charts import dropdown, equals, heat_color

ATTENTION = {
    "sink_share": "sink share (first 4 tokens)",
    "previous_share": "previous-token share",
    "local_share": "local share (16 latest tokens)",
    "mean_distance": "mean distance (tokens)",
    "entropy": "attention entropy (0..1)",
}
CACHE = {
    "key_std": "key std",
    "value_std": "value std",
    "key_sparsity": "key sparsity",
    "kv_correlation": "key-value correlation",
    "key_absmax": "largest |key|",
}
NO_DEMO = "No per-query-head attention statistics for this model yet: `kvw report --demo always` computes them."
KV_HEADS = alt.Scale(scheme="set2")  # one hue per KV head: the query heads that share it share the hue


def _named(chart: alt.Chart, metrics: dict[str, str]) -> alt.Chart:
    return chart.transform_fold(list(metrics), as_=["stat", "value"]).transform_calculate(
        metric="{" + ",".join(f"{k!r}:{v!r}" for k, v in metrics.items()) + "}[datum.stat]"
    )


def _query_heads(profile, layer: alt.Parameter) -> alt.FacetChart:
    return (
        _named(alt.Chart(profile).transform_filter(equals("layer", layer)), ATTENTION)
        .mark_bar()
        .encode(
            x=alt.X("head:N", title="query head · its KV head", sort=alt.EncodingSortField("q_head")),
            y=alt.Y("value:Q", title=None),
            color=alt.Color("kv_head:N", title="KV head", scale=KV_HEADS),
            tooltip=["metric:N", "layer:O", "head:N", alt.Tooltip("value:Q", format=".3g")],
        )
        .properties(width=170, height=150, name="query_heads")  # named: facets in a vconcat with params need it
        .facet(facet=alt.Facet("metric:N", title=None, sort=list(ATTENTION.values())), columns=5)
        .resolve_scale(y="independent")
    )


def _distance(distance, layer: alt.Parameter) -> alt.Chart:
    return (
        alt.Chart(distance)
        .transform_filter(equals("layer", layer))
        .mark_rect()
        .encode(
            x=alt.X("distance:N", title="tokens back from the query", sort=alt.EncodingSortField("bucket")),
            y=alt.Y("head:N", title="query head · KV head", sort=alt.EncodingSortField("q_head")),
            color=heat_color("share", "share of the head's attention", alt.Scale(scheme="viridis", domain=[0, 1])),
            tooltip=["head:N", "distance:N", alt.Tooltip("share:Q", format=".3f"), "layer:O"],
        )
        .properties(
            width=420,
            height=200,
            title="where each query head of the layer looks, by distance (buckets double in width)",
        )
    )


def _source(profile) -> alt.Chart:
    return (
        alt.Chart(profile)
        .transform_aggregate(source="min(source)", tokens="min(tokens)")
        .transform_calculate(
            text="'attention of every query (position ≥ 32) of ' + datum.tokens + ' tokens of LongBench '"
            " + datum.source + ' (the demo run of this model)'"
        )
        .mark_text(align="left", x=0, color="#555")
        .encode(text="text:N")
        .properties(width=900, height=14, view=alt.ViewConfig(stroke=None))
    )


def _every_layer(profile) -> alt.FacetChart:
    return (
        _named(alt.Chart(profile), ATTENTION)
        .mark_rect()
        .encode(
            x=alt.X("head:N", title="query head · KV head", sort=alt.EncodingSortField("q_head")),
            y=alt.Y("layer:O", title="layer", axis=alt.Axis(values=list(range(0, 64, 5)))),
            color=heat_color("value", "value (this panel's scale)", alt.Scale(scheme="viridis"), fmt=".2g"),
            tooltip=["metric:N", "layer:O", "head:N", alt.Tooltip("value:Q", format=".3g")],
        )
        .properties(width=170, height=8 * 30, name="every_layer")
        .facet(
            facet=alt.Facet("metric:N", title="every layer (colour scaled per panel)", sort=list(ATTENTION.values())),
            columns=5,
        )
        .resolve_scale(color="independent")
    )


def _cache(cache, sample: alt.Parameter, layer: alt.Parameter) -> alt.FacetChart:
    return (
        _named(alt.Chart(cache).transform_filter(f"{equals('sample', sample)} && {equals('layer', layer)}"), CACHE)
        .mark_bar()
        .encode(
            x=alt.X("kv_head:N", title="KV head"),
            y=alt.Y("value:Q", title=None),
            color=alt.Color("kv_head:N", title="KV head", scale=KV_HEADS),
            tooltip=[
                "metric:N",
                "layer:O",
                alt.Tooltip("kv_head:N", title="KV head"),
                alt.Tooltip("value:Q", format=".4g"),
            ],
        )  # fmt: skip
        .properties(width=120, height=130, name="kv_cache")
        .facet(
            facet=alt.Facet(
                "metric:N", title="the cache of each KV head (chosen layer and sample)", sort=list(CACHE.values())
            ),
            columns=5,
        )  # fmt: skip
        .resolve_scale(y="independent")
    )


def chart(data: Data) -> alt.TopLevelMixin:
    profile, distance, cache = data["demo_head_profile"], data["demo_head_distance"], data["head_profile"]
    layers = sorted(options(cache, "layer"))
    layer = dropdown("layer", layers, "layer", value=layers[len(layers) // 2])
    sample = dropdown("sample", options(cache, "sample"), "sample (cache statistics)")
    if profile.num_rows == 0:  # no demo run of this model: the cache statistics alone, and how to get the rest
        note = (
            alt.Chart(alt.Data(values=[{"text": NO_DEMO}]))
            .mark_text(align="left", x=0, color="#d62728")
            .encode(text="text:N")
            .properties(width=700, height=14, view=alt.ViewConfig(stroke=None))
        )
        return alt.vconcat(note, _cache(cache, sample, layer)).add_params(layer, sample)
    return alt.vconcat(
        _source(profile),
        _query_heads(profile, layer),
        _distance(distance, layer),
        _every_layer(profile),
        _cache(cache, sample, layer),
        spacing=24,
    ).add_params(layer, sample)


REPORT = Report(
    name="head_specialization",
    title="5. Head specialization within a layer",
    summary="Per query head of a chosen layer (with the KV head it reads): attention on the sink, the previous "
    "token and recent tokens, mean distance and entropy, attention by distance, every layer as heatmaps; "
    "and the cache statistics of each KV head.",
    queries=("demo_head_profile", "demo_head_distance", "head_profile"),
    chart=chart,
    needs=("samples", "layer_stats"),
)
