"""8. token_importance_comparison: the most and the least important tokens of a sample, side by side.

On a shared log scale the gap between the two ends shows how uneven the
cache is: with attention the top few tokens (the sink, separators, the
question's key words) take orders of magnitude more than the bottom ones,
which is the bet every score-based eviction policy makes.
"""

from __future__ import annotations

import altair as alt

from reports.base import Data, Report, options
from reports.charts import dropdown
from reports.low_importance_tokens import ranked_bars


def chart(data: Data) -> alt.TopLevelMixin:
    ranked = data["token_importance_ranked"]
    sample = dropdown("sample", options(ranked, "sample"), "sample")
    measure = dropdown("measure", options(ranked, "measure"), "importance measure", value="attn received")
    return (
        alt.hconcat(
            ranked_bars(ranked, sample, measure, "highest", "highest", log=True),
            ranked_bars(ranked, sample, measure, "lowest", "lowest", log=True),
        )
        .add_params(sample, measure)
        .resolve_scale(x="shared")
    )


REPORT = Report(
    name="token_importance_comparison",
    title="8. Highest vs lowest importance tokens",
    summary="The most and the least important tokens of a sample on one log scale, by key norm, value norm "
    "or attention received, with their text, category and segment.",
    queries=("token_importance_ranked",),
    chart=chart,
    needs=("samples", "token_stats", "tokens"),
    params={"n": 15},
)
