"""15. kv_caching: what the KV cache buys, measured on the model itself.

Left: greedy decoding fed the same tokens two ways: one new token at a time
against the cache, or the whole sequence recomputed. The outputs agree (the
largest logit difference is float rounding) while the time per token without
the cache grows with the length and with it stays flat. Right: one context
prefilled once and reused by several questions: each question then costs only
its own tokens, and the answers are the same as from scratch.
"""

from __future__ import annotations

import altair as alt

from reports.attention_patterns import DEMO_HINT
from reports.base import Data, Report

MODES = alt.Scale(domain=["with cache", "without cache"], range=["#2ca02c", "#d62728"])
WAYS = alt.Scale(domain=["from scratch", "reusing the cached context"], range=["#d62728", "#2ca02c"])


def _timing(steps) -> alt.Chart:
    return (
        alt.Chart(steps)
        .transform_filter("datum.step > 0")
        .mark_line(point=True)
        .encode(
            x=alt.X("length:Q", title="sequence length (tokens)", scale=alt.Scale(zero=False)),
            y=alt.Y("ms:Q", title="ms per generated token"),
            color=alt.Color("mode:N", scale=MODES, title="decoding"),
            tooltip=["step:Q", "length:Q", "mode:N", alt.Tooltip("ms:Q", format=".1f"), "token:N"],
        )
        .properties(width=460, height=240, title="time per token as the sequence grows (step 0, the prefill, left out)")
    )


def _agreement(steps, summary) -> alt.LayerChart:
    bars = (
        alt.Chart(steps)
        .transform_filter("datum.mode === 'with cache'")
        .mark_bar()
        .encode(
            x=alt.X("step:O", title="step", axis=alt.Axis(labelOverlap=True)),
            y=alt.Y("max_abs_diff:Q", title="max |logit difference|", axis=alt.Axis(format=".1e")),
            color=alt.Color(
                "same_token:N",
                title="same greedy token",
                scale=alt.Scale(domain=[True, False], range=["#2ca02c", "#d62728"]),
            ),
            tooltip=["step:Q", "token:N", "same_token:N", alt.Tooltip("max_abs_diff:Q", format=".2e")],
        )
    )
    note = (
        alt.Chart(summary)
        .transform_calculate(
            text="datum.same_tokens + ' of ' + datum.steps + ' greedy tokens identical; largest |logit difference| '"
            " + format(datum.max_abs_diff, '.1e')"
        )
        .mark_text(align="left", x=4, y=-10, fontWeight="bold")
        .encode(text="text:N")
    )
    return alt.layer(bars, note).properties(
        width=460, height=160, title=alt.TitleParams("same output with and without the cache", offset=16)
    )


def _reuse(prefix) -> alt.LayerChart:
    bars = (
        alt.Chart(prefix)
        .mark_bar()
        .encode(
            y=alt.Y("question:N", title=None, axis=alt.Axis(labelLimit=300)),
            yOffset="way:N",
            x=alt.X("seconds:Q", title="seconds to prefill the question"),
            color=alt.Color("way:N", scale=WAYS, title="prefill"),
            tooltip=[
                "question:N",
                "way:N",
                alt.Tooltip("seconds:Q", format=".3f"),
                "prefix_tokens:Q",
                "question_tokens:Q",
                alt.Tooltip("seconds_prefix:Q", title="shared context, once (s)", format=".3f"),
                alt.Tooltip("answer_full:N", title="answer from scratch"),
                alt.Tooltip("answer_reuse:N", title="answer reusing the cache"),
                "same_answer:N",
                alt.Tooltip("max_abs_diff:Q", title="max |logit difference|", format=".1e"),
            ],
        )
    )
    return bars.properties(width=420, height=alt.Step(16), title="one context, several questions: reuse its cache")


def chart(data: Data) -> alt.TopLevelMixin:
    steps, summary, prefix = data["demo_decode_steps"], data["demo_decode_summary"], data["demo_prefix_reuse"]
    left = alt.vconcat(_timing(steps), _agreement(steps, summary)).resolve_scale(color="independent")
    return alt.hconcat(left, _reuse(prefix)).resolve_scale(color="independent")


REPORT = Report(
    name="kv_caching",
    title="15. Decoding with the KV cache vs recomputing",
    summary="Greedy decoding with and without the cache: identical tokens (max logit difference shown), time "
    "per token as the sequence grows, and one prefilled context reused by several questions.",
    queries=("demo_decode_steps", "demo_decode_summary", "demo_prefix_reuse"),
    chart=chart,
    needs=("demo_decode", "demo_prefix"),
    hint=DEMO_HINT,
)
