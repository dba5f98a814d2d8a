"""7. low_importance_tokens: the tokens with the smallest key norm, value norm or attention, with their text.

These are the first candidates for aggressive pruning or compression. The
right panel asks whether they are a kind of token: a category whose share
among the lowest 10% is far above its share of the whole prompt (often
whitespace, punctuation or stopwords) can be treated differently as a class.
"""

from __future__ import annotations

import altair as alt

from reports.base import Data, Report, options
from reports.charts import category_color, dropdown, equals

CATEGORY = category_color()


def ranked_bars(ranked, sample, measure, side: str, title: str, log: bool = False) -> alt.Chart:
    """One side (lowest | highest) of token_importance_ranked, token text on the axis.

    Bars on a linear axis; dots on a log axis (a bar has no length from zero there).
    """
    keep = f"{equals('sample', sample)} && {equals('measure', measure)} && datum.side === {side!r}"
    base = alt.Chart(ranked).transform_filter(keep + (" && datum.score > 0" if log else ""))
    mark = base.mark_circle(size=90, opacity=0.9) if log else base.mark_bar()
    return (
        mark.transform_calculate(label="datum.token + '  @' + datum.position")
        .encode(
            y=alt.Y("label:N", title=None, sort=alt.EncodingSortField("rank"), axis=alt.Axis(labelLimit=260)),
            x=alt.X(
                "score:Q",
                title="score of the chosen measure" + (" (log)" if log else ""),
                scale=alt.Scale(type="log") if log else alt.Undefined,
            ),
            color=CATEGORY,
            tooltip=[
                alt.Tooltip("token:N"),
                "position:Q",
                "category:N",
                "segment:N",
                "rank:Q",
                alt.Tooltip("key_norm:Q", title="key norm", format=".3f"),
                alt.Tooltip("value_norm:Q", title="value norm", format=".3f"),
                alt.Tooltip("attn_received:Q", title="attention received", format=".3e"),
            ],
        )
        .properties(width=360, height=alt.Step(17), title=title)
    )


def chart(data: Data) -> alt.TopLevelMixin:
    ranked, cats = data["token_importance_ranked"], data["low_importance_categories"]
    sample = dropdown("sample", options(ranked, "sample"), "sample")
    measure = dropdown("measure", options(ranked, "measure"), "importance measure")
    bars = ranked_bars(ranked, sample, measure, "lowest", "lowest tokens (mean over layers and KV heads)")
    shares = (
        alt.Chart(cats)
        .transform_filter(f"{equals('sample', sample)} && {equals('measure', measure)}")
        .mark_bar()
        .encode(
            y=alt.Y("category:N", title=None),
            yOffset=alt.YOffset("tokens:N", sort=["lowest", "all"]),
            x=alt.X("share:Q", title="share of tokens", axis=alt.Axis(format="%")),
            color=alt.Color("tokens:N", title="among", scale=alt.Scale(range=["#bbbbbb", "#d62728"])),
            tooltip=[
                "category:N",
                "tokens:N",
                alt.Tooltip("share:Q", format=".1%"),
                alt.Tooltip("n:Q", title="tokens"),
            ],
        )
        .properties(width=300, height=alt.Step(10), title="category mix: lowest 10% vs all tokens")
    )
    return alt.hconcat(bars, shares).add_params(sample, measure).resolve_scale(color="independent")


REPORT = Report(
    name="low_importance_tokens",
    title="7. Low-importance tokens",
    summary="The tokens of a sample with the smallest key norm, value norm or attention received, with their "
    "text, and which token categories are over-represented among the lowest 10%.",
    queries=("token_importance_ranked", "low_importance_categories"),
    chart=chart,
    needs=("samples", "token_stats", "tokens"),
    params={"n": 20, "share_low": 0.1},
)
