"""14. attention_patterns: one layer's attention on a short prompt, with grouped-query attention made visible.

SmolLM2 has 9 query heads but only 3 KV heads: each KV head's keys and values
serve 3 query heads. The grid puts the query heads that share a KV head on one
row, so one sees how much their patterns differ while reading the same cache:
that sharing is why the cache is 3x smaller than the attention it feeds. The
norms below show the same grouping in the projections of the demo layer: 9
query rows, 3 key and 3 value rows, 9 per-head outputs (the input of o_proj).
"""

from __future__ import annotations

import altair as alt

from reports.base import Data, Report, options
from reports.charts import dropdown, equals, heat_color

DEMO_HINT = (
    "These tables come from a short run of the model itself: `kvw report` runs it when they are missing "
    "(or call `extract.demo.run_demo`)."
)


def _grid(rows, tokens, layer: alt.Parameter, n_tokens: int) -> alt.FacetChart:
    axis = alt.Axis(labelExpr="substring(datum.label, 3)", labelLimit=90)
    return (
        alt.Chart(rows)
        .transform_filter(equals("layer", layer))
        .transform_flatten(["weights"], as_=["weight"])
        .transform_window(key1="row_number()", groupby=["layer", "q_head", "query_pos"])
        .transform_calculate(
            key_pos="datum.key1 - 1",
            head="'query head ' + datum.q_head + ' → KV head ' + datum.kv_head",
        )
        .transform_lookup(lookup="query_pos", from_=alt.LookupData(tokens, "position", ["label"]), as_=["query"])
        .transform_lookup(lookup="key_pos", from_=alt.LookupData(tokens, "position", ["label"]), as_=["key"])
        .mark_rect()
        .encode(
            x=alt.X("key:O", title="key (attended) token", sort=alt.EncodingSortField("key_pos"), axis=axis),
            y=alt.Y("query:O", title="query token", sort=alt.EncodingSortField("query_pos"), axis=axis),
            color=heat_color("weight:Q", "attention weight", alt.Scale(scheme="blues")),
            tooltip=[
                "head:N",
                alt.Tooltip("query:N", title="query token"),
                alt.Tooltip("key:N", title="key token"),
                alt.Tooltip("weight:Q", format=".4f"),
                "layer:Q",
            ],
        )
        .properties(width=16 * n_tokens, height=16 * n_tokens, name="grid")
        .facet(facet=alt.Facet("head:N", title=None, sort=alt.EncodingSortField("q_head")), columns=3)
    )


def _mapping(gqa) -> alt.LayerChart:
    base = alt.Chart(gqa)
    links = base.mark_rule(color="#999").encode(
        x=alt.X("q_head:Q", axis=None, scale=alt.Scale(padding=20)),
        x2="kv_center:Q",
        y=alt.datum(1),
        y2=alt.datum(0),
    )
    q = base.mark_circle(size=260, color="#1f77b4").encode(
        x="q_head:Q", y=alt.datum(1), tooltip=["q_head:Q", "kv_head:Q"]
    )
    kv = base.mark_square(size=420, color="#ff7f0e").encode(x="kv_center:Q", y=alt.datum(0), tooltip=["kv_head:Q"])
    q_text = base.mark_text(dy=-18).encode(x="q_head:Q", y=alt.datum(1), text=alt.Text("q_head:Q"))
    kv_text = base.mark_text(dy=22).encode(x="kv_center:Q", y=alt.datum(0), text=alt.Text("kv_head:Q"))
    return (
        alt.layer(links, q, kv, q_text, kv_text)
        .encode(y=alt.Y(scale=alt.Scale(domain=[-0.5, 1.5]), axis=None))
        .properties(
            width=420, height=120, title="query heads (blue, top) read the keys and values of KV heads (orange, bottom)"
        )
    )


def _norms(norms) -> alt.VConcatChart:
    """One small heatmap per KV head (a row facet with independent y trips a Vega-Lite bug: vconcat instead)."""
    panels = [
        alt.Chart(norms)
        .transform_filter(f"datum.kv_head === {kv}")
        .mark_rect()
        .encode(
            x=alt.X("position:O", title="position" if kv == options(norms, "kv_head")[-1] else None),
            y=alt.Y("row_label:N", title=f"KV head {kv}", sort=None),
            color=heat_color("norm:Q", "vector norm", alt.Scale(scheme="greens")),
            tooltip=[
                alt.Tooltip("row_label:N", title="projection"),
                "token:N",
                "position:Q",
                alt.Tooltip("norm:Q", format=".3f"),
            ],
        )
        .properties(width=320, height=alt.Step(12))
        for kv in options(norms, "kv_head")
    ]
    return alt.vconcat(*panels, spacing=6).properties(
        title="projection norms of the demo layer (Q, K, V, per-head output O), by KV head"
    )


def chart(data: Data) -> alt.TopLevelMixin:
    rows, tokens, norms, gqa = (
        data[k] for k in ("demo_attention_rows", "demo_tokens_attention", "demo_projection_norms", "demo_gqa_map")
    )
    demo_layer = options(norms, "layer")[0] if norms.num_rows else 0
    layer = dropdown("layer", sorted(options(rows, "layer")), "attention layer", value=demo_layer)
    return (
        alt.vconcat(
            _grid(rows, tokens, layer, tokens.num_rows),
            alt.hconcat(_mapping(gqa), _norms(norms)),
        )
        .add_params(layer)
        .resolve_scale(color="independent")
    )


REPORT = Report(
    name="attention_patterns",
    title="14. Attention patterns and grouped-query attention",
    summary="Eager-attention weights of a chosen layer on a short prompt, one panel per query head, with the "
    "query heads that share a KV head side by side; projection norms of the demo layer.",
    queries=("demo_attention_rows", "demo_tokens_attention", "demo_projection_norms", "demo_gqa_map"),
    chart=chart,
    needs=("demo_attention", "demo_tokens", "demo_projections"),
    hint=DEMO_HINT,
)
