"""15. kv_caching: what the KV cache buys, measured on the model itself.

- Attention with vs without the cache. The last few tokens of a short prompt
  are fed one at a time: each new query attends to the keys and values already
  in the cache (middle matrix). The same rows recomputed from the whole prompt
  without a cache (left) are the same numbers: the right matrix is their
  absolute difference, float32 rounding, and the line above it states the
  largest difference over every layer and head against the tolerance. Pick a
  layer and a query head (its KV head in brackets: 3 query heads share one
  under grouped-query attention).

- Time per generated token vs the length already generated (log-log axes).
  Without the cache each token recomputes the whole sequence, so its cost
  grows with the length (slope about 1: linear per token); with the cache it
  only attends to the stored keys, so it stays nearly flat (slope near 0).
  Summed over a generation (right, linear axes) that is quadratic vs linear
  total time. Medians of a few repeats; the band spans fastest to slowest.

- Same output: greedy decoding both ways picks the same tokens; bars are the
  largest logit difference per step.

- Shared-prefix reuse: one context prefilled once, its cache copied for each
  question; each question then costs only its own tokens, with the same answer.
"""

from __future__ import annotations

import altair as alt

from reports.attention_patterns import DEMO_HINT
from reports.base import Data, Report, options
from reports.charts import dropdown, equals

TOLERANCE = 1e-5  # float32: the cached and recomputed attention weights must agree to this
MODES = alt.Scale(domain=["with cache", "without cache"], range=["#2ca02c", "#d62728"])
WAYS = alt.Scale(domain=["from scratch", "reusing the cached context"], range=["#d62728", "#2ca02c"])
WEIGHT = alt.Scale(scheme="blues", domain=[0, 1])


def _matrix(rows, tokens, layer, head, title: str, color: alt.Color) -> alt.Chart:
    axis = alt.Axis(labelExpr="substring(datum.label, 3)", labelLimit=90)
    return (
        alt.Chart(rows)
        .transform_filter(f"{equals('layer', layer)} && {equals('q_head', head)}")
        .transform_flatten(["key_pos", "with_cache", "without_cache", "abs_diff"])
        .transform_lookup(lookup="query_pos", from_=alt.LookupData(tokens, "position", ["label"]), as_=["query"])
        .transform_lookup(lookup="key_pos", from_=alt.LookupData(tokens, "position", ["label"]), as_=["key"])
        .mark_rect()
        .encode(
            x=alt.X("key:O", title="key (cached) token", sort=alt.EncodingSortField("key_pos"), axis=axis),
            y=alt.Y("query:O", title="new query token", sort=alt.EncodingSortField("query_pos"), axis=axis),
            color=color,
            tooltip=[
                alt.Tooltip("query:N", title="query token"),
                alt.Tooltip("key:N", title="key token"),
                alt.Tooltip("without_cache:Q", title="weight without cache", format=".6f"),
                alt.Tooltip("with_cache:Q", title="weight with cache", format=".6f"),
                alt.Tooltip("abs_diff:Q", title="|difference|", format=".1e"),
            ],
        )
        .properties(width=300, height=110, title=title)
    )


def _attention(rows, tokens, summary) -> alt.VConcatChart:
    layers = sorted(options(rows, "layer"))
    layer = dropdown("cache_layer", layers, "layer", value=layers[len(layers) // 2])
    heads = sorted(options(rows, "q_head"))
    group = dict(zip(rows.column("q_head").to_pylist(), rows.column("kv_head").to_pylist(), strict=True))
    head = alt.param(
        name="cache_head",
        value=heads[0],
        bind=alt.binding_select(options=heads, labels=[f"{h} (KV head {group[h]})" for h in heads],
                                name="query head "),
    )  # fmt: skip
    weight = lambda field: alt.Color(f"{field}:Q", title="attention weight", scale=WEIGHT)  # noqa: E731
    diff = alt.Color(
        "abs_diff:Q",
        title="|difference|",
        scale=alt.Scale(scheme="oranges", domain=[0, TOLERANCE]),
        legend=alt.Legend(format=".0e"),
    )
    panels = alt.hconcat(
        _matrix(rows, tokens, layer, head, "without the cache (whole prompt recomputed)", weight("without_cache")),
        _matrix(rows, tokens, layer, head, "with the cache (one query at a time)", weight("with_cache")),
        _matrix(rows, tokens, layer, head, "|with - without| (scale: 0 to the tolerance)", diff),
    ).resolve_scale(color="independent")
    verdict = (
        alt.Chart(summary)
        .transform_calculate(
            text="(datum.within_tolerance ? '✓ equal within ' : '✗ NOT equal within ') + format(datum.tolerance, '.0e')"
            " + ': largest |difference| ' + format(datum.max_abs_diff, '.1e') + ' over ' + datum.weights"
            " + ' attention weights (' + datum.layers + ' layers × ' + datum.heads + ' query heads × last '"
            " + datum.queries + ' queries)' + (datum.unmatched > 0 ? '; ' + datum.unmatched + ' unmatched' : '')"
        )
        .mark_text(align="left", fontSize=13, fontWeight="bold", x=0)
        .encode(
            text="text:N",
            color=alt.condition("datum.within_tolerance", alt.value("#2ca02c"), alt.value("#d62728")),
        )
        .properties(width=900, height=18, view=alt.ViewConfig(stroke=None))
    )
    return (
        alt.vconcat(verdict, panels)
        .add_params(layer, head)
        .properties(title=alt.TitleParams("1. attention with vs without the cache", anchor="start", fontSize=15))
    )


def _fit_text(fit, field: str, what: str) -> alt.Chart:
    return (
        alt.Chart(fit)
        .transform_calculate(text=f"datum.mode + ': slope ' + format(datum.{field}, '.2f') + ' ({what})'")
        .mark_text(align="left", fontSize=12, x=0)
        .encode(
            y=alt.Y("mode:N", axis=None),
            text="text:N",
            color=alt.Color("mode:N", scale=MODES, legend=None),
        )
        .properties(width=360, height=34, view=alt.ViewConfig(stroke=None))
    )


def _timing(curve, fit) -> alt.HConcatChart:
    base = alt.Chart(curve)
    log_x = alt.X("length:Q", title="tokens so far (log)", scale=alt.Scale(type="log", nice=False))
    color = alt.Color("mode:N", scale=MODES, title="decoding")
    tips = [
        "mode:N",
        "length:Q",
        alt.Tooltip("ms:Q", title="median ms", format=".1f"),
        alt.Tooltip("ms_min:Q", title="fastest ms", format=".1f"),
        alt.Tooltip("ms_max:Q", title="slowest ms", format=".1f"),
        "repeats:Q",
    ]
    band = base.mark_area(opacity=0.2).encode(x=log_x, y="ms_min:Q", y2="ms_max:Q", color=color)
    line = base.mark_line(point=True).encode(
        x=log_x, y=alt.Y("ms:Q", title="ms per generated token (log)", scale=alt.Scale(type="log", nice=False)),
        color=color, tooltip=tips,
    )  # fmt: skip
    per_token = alt.vconcat(
        alt.layer(band, line).properties(width=360, height=240, title="time per token (log-log)"),
        _fit_text(fit, "slope_per_token", "1 = linear, 0 = flat"),
    )
    total = alt.vconcat(
        base.mark_line(point=True)
        .encode(
            x=alt.X("length:Q", title="tokens generated"),
            y=alt.Y("seconds_total:Q", title="seconds to generate them (estimated)"),
            color=color,
            tooltip=["mode:N", "length:Q", alt.Tooltip("seconds_total:Q", format=".1f")],
        )
        .properties(width=360, height=240, title="whole generation (linear axes): quadratic vs linear"),
        _fit_text(fit, "slope_total", "log-log: 2 = quadratic, 1 = linear"),
    )
    caption = (
        alt.Chart(fit)
        .transform_filter("datum.mode === 'with cache'")
        .transform_calculate(
            text="'one token after L tokens of ' + datum.source + ', ' + datum.min_length + ' to ' + datum.max_length"
            " + ' tokens, ' + datum.attn_impl + ' attention; medians of repeats'"
        )
        .mark_text(align="left", color="#555", x=0)
        .encode(text="text:N")
        .properties(width=740, height=14, view=alt.ViewConfig(stroke=None))
    )
    return alt.vconcat(caption, alt.hconcat(per_token, total)).properties(
        title=alt.TitleParams("2. time per token as the sequence grows", anchor="start", fontSize=15)
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
        width=360, height=160, title=alt.TitleParams("3. same output with and without the cache", offset=16)
    )


def _reuse(prefix) -> alt.Chart:
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
    return bars.properties(
        width=380, height=alt.Step(16), title="4. shared prefix: one context, several questions reuse its cache"
    )


def chart(data: Data) -> alt.TopLevelMixin:
    attention = _attention(data["demo_cache_attention_rows"], data["demo_tokens_attention"],
                           data["demo_cache_attention_summary"])  # fmt: skip
    timing = _timing(data["demo_timing_curve"], data["demo_timing_fit"])
    outputs = alt.hconcat(
        _agreement(data["demo_decode_steps"], data["demo_decode_summary"]), _reuse(data["demo_prefix_reuse"])
    ).resolve_scale(color="independent")
    return alt.vconcat(attention, timing, outputs, spacing=30).resolve_scale(color="independent")


REPORT = Report(
    name="kv_caching",
    title="15. Decoding with the KV cache vs recomputing",
    summary="Attention with vs without the cache (equal within 1e-5, as matrices), time per token up to 2K "
    "tokens (flat vs growing, fitted slopes), identical greedy tokens, and one prefilled context reused by "
    "several questions.",
    queries=(
        "demo_cache_attention_rows",
        "demo_cache_attention_summary",
        "demo_tokens_attention",
        "demo_timing_curve",
        "demo_timing_fit",
        "demo_decode_steps",
        "demo_decode_summary",
        "demo_prefix_reuse",
    ),
    chart=chart,
    needs=("demo_decode", "demo_prefix", "demo_cache_attention", "demo_timing"),
    hint=DEMO_HINT,
    params={"tolerance": TOLERANCE},
)
