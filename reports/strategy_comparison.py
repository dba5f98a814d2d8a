"""13. strategy_comparison: what each eviction policy costs in quality, and what it saves in memory.

The top panel is the quality-vs-budget curve per policy (x: the share of the
cache kept): the LongBench score (the point at 100% is the full cache), its
change against the full cache, the increase of the reference answer's NLL,
or KL(full || evicted) of the next-token distributions. The lower panel is
the K/V memory each point saves. A good policy stays near the full-cache
score while saving the most.
"""

from __future__ import annotations

import altair as alt

from reports.base import Data, Report, options
from reports.charts import dropdown, equals, radio
from reports.eviction_patterns import EVAL_HINT

METRICS = {
    "score": "LongBench score (x100)",
    "score_change": "score change vs full cache",
    "nll_increase": "answer NLL increase (nats/token)",
    "kl": "KL(full || evicted)",
}


def chart(data: Data) -> alt.TopLevelMixin:
    q = data["strategy_quality"]
    tasks = options(q, "task")
    task = dropdown("task", tasks, "task", value="(all tasks)")
    setting = radio("setting", options(q, "setting"), "setting", value="question_aware")
    metric = dropdown("metric", list(METRICS.values()), "quality measure")
    base = alt.Chart(q).transform_filter(f"{equals('task', task)} && {equals('setting', setting)}")
    x = alt.X("kept_share:Q", title="share of the cache kept", axis=alt.Axis(format="%"), scale=alt.Scale(zero=False))
    tooltip = [
        "policy:N",
        "params:N",
        "budget:Q",
        "budget_unit:N",
        "samples:Q",
        alt.Tooltip("kept_share:Q", title="cache kept", format=".1%"),
        alt.Tooltip("score:Q", format=".2f"),
        alt.Tooltip("score_full:Q", title="score, full cache", format=".2f"),
        alt.Tooltip("nll_increase:Q", title="NLL increase", format=".3f"),
        alt.Tooltip("kl:Q", title="KL", format=".4f"),
        alt.Tooltip("memory_saved:Q", title="memory saved", format=".1%"),
        alt.Tooltip("mib_saved:Q", title="MiB saved per sample", format=".2f"),
    ]
    curves = (
        base.transform_fold(list(METRICS), as_=["stat", "value"])
        .transform_calculate(measure="{" + ",".join(f"{k!r}:{v!r}" for k, v in METRICS.items()) + "}[datum.stat]")
        .transform_filter(f"datum.measure === {metric.name}")
        .mark_line(point=True)
        .encode(
            x=x,
            y=alt.Y("value:Q", title="chosen quality measure"),
            color=alt.Color("policy:N", title="policy"),
            tooltip=tooltip,
        )
    )
    memory = base.mark_line(point=True).encode(
        x=x,
        y=alt.Y("memory_saved:Q", title="K/V memory saved", axis=alt.Axis(format="%")),
        color="policy:N",
        tooltip=tooltip,
    )
    return alt.vconcat(
        curves.properties(width=720, height=300, title="quality vs budget"),
        memory.properties(width=720, height=160, title="memory saved"),
    ).add_params(task, setting, metric)


REPORT = Report(
    name="strategy_comparison",
    title="13. Eviction strategy comparison",
    summary="Quality vs budget per policy and task (LongBench score, score change, answer NLL increase, KL) "
    "with the full-cache score, and the K/V memory each setting saves.",
    queries=("strategy_quality",),
    chart=chart,
    needs=("quality", "policies"),
    hint=EVAL_HINT.replace("Keep-sets come", "Quality rows come").replace(
        "`kvw keep` (or the `evaluate/longbench` deployment, which writes them before it decodes)",
        "`prefect deployment run evaluate/longbench`",
    ),
)
