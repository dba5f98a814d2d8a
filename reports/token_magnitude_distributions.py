"""9. token_magnitude_distributions: key and value magnitude by token category (or prompt segment).

Boxes span the 25th to 75th percentile, whiskers the 5th to 95th, the tick is
the median. A category whose whole box sits low (punctuation, whitespace) can
be compressed or evicted as a class; special tokens usually sit apart, which
is why they need their own rule.
"""

from __future__ import annotations

import altair as alt

from reports.base import Data, Report, options
from reports.charts import CATEGORY_PALETTE, SEGMENT_PALETTE, dropdown, equals, radio

# a category or a segment has its colour of every other page (the two vocabularies share no name)
GROUPS = alt.Scale(
    domain=[*CATEGORY_PALETTE, *SEGMENT_PALETTE], range=[*CATEGORY_PALETTE.values(), *SEGMENT_PALETTE.values()]
)


def chart(data: Data) -> alt.TopLevelMixin:
    groups = data["token_magnitude_by_group"]
    sample = dropdown("sample", options(groups, "sample"), "sample")
    grouping = radio("grouping", ["category", "segment"], "group by")
    y = alt.Y("group:N", title=None, sort=alt.EncodingSortField("median", order="descending"))
    tooltip = [
        "group:N",
        "tensor:N",
        alt.Tooltip("tokens:Q", format=","),
        alt.Tooltip("p05:Q", title="5th pct", format=".2f"),
        alt.Tooltip("p25:Q", title="25th pct", format=".2f"),
        alt.Tooltip("median:Q", format=".2f"),
        alt.Tooltip("p75:Q", title="75th pct", format=".2f"),
        alt.Tooltip("p95:Q", title="95th pct", format=".2f"),
    ]
    base = alt.Chart().encode(y=y, tooltip=tooltip)
    whisker = base.mark_rule(color="#555").encode(
        x=alt.X("p05:Q", title="norm (mean over layers and KV heads)", scale=alt.Scale(zero=False)), x2="p95:Q"
    )
    box = base.mark_bar(height=14).encode(
        x="p25:Q", x2="p75:Q", color=alt.Color("group:N", title="group (as on the y axis)", scale=GROUPS, legend=None)
    )
    median = base.mark_tick(color="white", thickness=2, size=14).encode(x="median:Q")
    return (
        alt.layer(whisker, box, median, data=groups)
        .transform_filter(f"{equals('sample', sample)} && {equals('grouping', grouping)}")
        .properties(width=420, height=alt.Step(24))
        .facet(column=alt.Column("tensor:N", title=None))
        .resolve_scale(x="independent")
        .add_params(sample, grouping)
    )


REPORT = Report(
    name="token_magnitude_distributions",
    title="9. Key and value magnitude by token type",
    summary="Box plots of per-token key and value norms by token category (word, stopword, punctuation, "
    "special, ...) or by prompt segment, per sample or pooled.",
    queries=("token_magnitude_by_group",),
    chart=chart,
    needs=("samples", "token_stats", "tokens"),
)
