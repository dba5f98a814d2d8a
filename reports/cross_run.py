"""16. cross_run: two extraction runs side by side (two models, or one model at 2K and at 4K tokens).

Top: the mean key and value norm of every layer in each run (the band spans
the lowest to the highest KV head), on one shared y axis, so a model whose
cache is larger, or a longer prompt that shifts magnitudes, shows at a glance.
Bottom: KL against the share of the cache kept, per eviction policy, for each
run that has quality rows: a curve lower in one run means eviction hurts that
model (or that length) less at the same budget. The two runs with the most
samples are shown first; pick others above the chart when the warehouse holds
more than two.
"""

from __future__ import annotations

import altair as alt

from reports.base import Data, Report, options
from reports.charts import INDEPENDENT_KV, KV_COLORS, bands, dropdown, equals, fixed, kv_line, radio

WIDTH, HEIGHT = 400, 230


def _run_note(runs, run: alt.Parameter, text: str, when: str = "true") -> alt.Chart:
    """A line of text about the chosen run, drawn over its panel (`when`: a Vega test on the run's row)."""
    return (
        alt.Chart(runs)
        .transform_filter(f"{equals('run_id', run)} && ({when})")
        .transform_calculate(note=text)
        .mark_text(align="left", baseline="top", x=4, y=4, fontSize=11, color="#444")
        .encode(text="note:N")
    )


def _magnitude(mag, runs, run: alt.Parameter) -> alt.LayerChart:
    base = alt.Chart(mag).transform_filter(equals("run_id", run)).encode(x=alt.X("layer:Q", title="layer"))
    line = base.mark_line(point=alt.OverlayMarkDef(size=14)).encode(
        y=alt.Y("norm:Q", title="mean norm over tokens (band: KV heads)"),
        **kv_line(),
        tooltip=[
            "tensor:N",
            "layer:Q",
            alt.Tooltip("norm:Q", title="mean over KV heads", format=".3f"),
            alt.Tooltip("lowest_head:Q", title="lowest head", format=".3f"),
            alt.Tooltip("highest_head:Q", title="highest head", format=".3f"),
        ],
    )
    note = _run_note(runs, run, "datum.label")
    return alt.layer(*bands(base, KV_COLORS, "lowest_head:Q", "highest_head:Q"), line, note).properties(
        width=WIDTH, height=HEIGHT
    )


def _kl(quality, runs, run: alt.Parameter, setting: alt.Parameter, kl_max: float) -> alt.LayerChart:
    """Fixed axes (share 0-100%, KL from 0 to the largest mean): a run without rows draws an empty frame."""
    lines = (
        alt.Chart(quality)
        .transform_filter(f"{equals('run_id', run)} && {equals('setting', setting)}")
        .mark_line(point=True)
        .encode(
            x=alt.X(
                "kept_share:Q",
                title="share of the cache kept",
                axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1]),
            ),
            y=alt.Y("kl:Q", title="mean KL(full ‖ evicted)", scale=alt.Scale(domain=[0, kl_max])),
            color=alt.Color("policy:N", title="policy", legend=alt.Legend(title="policy")),
            tooltip=[
                "policy:N",
                "setting:N",
                alt.Tooltip("budget:Q", title="budget"),
                alt.Tooltip("kept_share:Q", title="kept", format=".1%"),
                alt.Tooltip("kl:Q", title="mean KL", format=".4f"),
                alt.Tooltip("samples:Q", title="samples"),
            ],
        )
    )
    label = _run_note(runs, run, "datum.label")
    missing = _run_note(
        runs,
        run,
        "'no quality rows for this run: evaluate it (prefect deployment run evaluate/longbench)'",
        "!datum.has_quality",
    ).encode(y=alt.value(24))
    return alt.layer(lines, label, missing).properties(width=WIDTH, height=HEIGHT)


def chart(data: Data) -> alt.TopLevelMixin:
    runs, mag, quality = data["cross_run_runs"], data["cross_run_magnitude"], data["cross_run_quality"]
    ids, labels = options(runs, "run_id"), options(runs, "label")
    if len(ids) > 2:
        run_a = dropdown("run_a", ids, "left run", ids[0], labels)
        run_b = dropdown("run_b", ids, "right run", ids[1], labels)
    else:  # exactly two: nothing to choose
        run_a = fixed("run_a", ids[0], "left run", labels[0])
        run_b = fixed("run_b", ids[-1], "right run", labels[-1])
    magnitudes = (
        alt.hconcat(_magnitude(mag, runs, run_a), _magnitude(mag, runs, run_b))
        .resolve_scale(y="shared")
        .properties(title="key and value norm by layer (left run | right run)")
    )
    if quality.num_rows == 0:  # nothing to draw: say so instead of two empty frames
        note = (
            alt.Chart(runs)
            .transform_aggregate(runs="count()")
            .transform_calculate(
                note="'KL vs budget: none of these runs has quality rows yet. Evaluate them: "
                "prefect deployment run evaluate/longbench'"
            )  # fmt: skip
            .mark_text(align="left", x=0, y=10, fontSize=13, color="#8a5a00")
            .encode(text="note:N")
            .properties(width=2 * WIDTH, height=30)
        )
        return alt.vconcat(magnitudes, note).add_params(run_a, run_b).resolve_scale(**INDEPENDENT_KV)
    settings = options(quality, "setting")
    setting = radio("setting", settings, "cache setting")
    kl_max = max(0.01, 1.05 * max(v for v in quality.column("kl").to_pylist() if v is not None))
    return (
        alt.vconcat(
            magnitudes,
            alt.hconcat(_kl(quality, runs, run_a, setting, kl_max), _kl(quality, runs, run_b, setting, kl_max))
            .resolve_scale(y="shared")
            .properties(title="KL vs share of the cache kept, per policy (left run | right run)"),
        )
        .add_params(run_a, run_b, setting)
        .resolve_scale(**INDEPENDENT_KV)
    )


REPORT = Report(
    name="cross_run",
    title="16. Two runs side by side",
    summary="Two extraction runs (e.g. two models, or 2K vs 4K tokens) side by side: key and value norm by "
    "layer, and KL vs the share of the cache kept per policy where both runs were evaluated.",
    queries=("cross_run_runs", "cross_run_magnitude", "cross_run_quality"),
    chart=chart,
    needs=("samples", "token_stats"),
    hint="Extract a second run (another model, or another max_tokens) to compare two runs.",
    per_run=False,
    min_runs=2,
)
