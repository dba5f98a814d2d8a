"""11. token_key_value_scatter: each token's key norm against its value norm.

Most tokens form one cloud; the points far from it are the tokens that need
special handling: the attention sink (a tiny value yet the most attention), separators,
special tokens. Point size is the attention the token receives; click a
category in the legend to isolate it. Each sample shows its extremes plus an
even sample of the rest.
"""

from __future__ import annotations

import altair as alt

from reports.base import Data, Report, options
from reports.charts import ALL, category_color, dropdown, equals_or_all


def chart(data: Data) -> alt.TopLevelMixin:
    tokens = data["token_kv_scatter"]
    sample = dropdown("sample", [ALL, *options(tokens, "sample")], "sample", value=options(tokens, "sample")[0])
    pick = alt.selection_point(fields=["category"], bind="legend", name="category_pick")
    return (
        alt.Chart(tokens)
        .transform_filter(equals_or_all("sample", sample))
        .mark_circle()
        .encode(
            x=alt.X("key_norm:Q", title="key norm (mean over layers and KV heads)", scale=alt.Scale(zero=False)),
            y=alt.Y("value_norm:Q", title="value norm", scale=alt.Scale(zero=False)),
            color=category_color(title="token category (click to isolate)"),
            size=alt.Size("attn_received:Q", title="attention received", scale=alt.Scale(type="sqrt", range=[12, 400])),
            opacity=alt.condition(pick, alt.value(0.8), alt.value(0.06)),
            tooltip=[
                alt.Tooltip("token:N"),
                "position:Q",
                "sample:N",
                "category:N",
                "segment:N",
                alt.Tooltip("key_norm:Q", title="key norm", format=".3f"),
                alt.Tooltip("value_norm:Q", title="value norm", format=".3f"),
                alt.Tooltip("attn_received:Q", title="attention received", format=".3e"),
            ],
        )
        .add_params(sample, pick)
        .properties(width=760, height=520)
    )


REPORT = Report(
    name="token_key_value_scatter",
    title="11. Key vs value magnitude per token",
    summary="Every token of a sample (extremes plus an even sample) placed by key norm and value norm, sized "
    "by attention received, coloured by category: clusters and outliers.",
    queries=("token_kv_scatter",),
    chart=chart,
    needs=("samples", "token_stats", "tokens"),
    params={"per_sample": 300, "extremes": 10},
)
