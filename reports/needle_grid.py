"""needle_grid: can the model still find the needle once the cache is evicted? The field's classic figure.

Each square is one cell of the built-in needle task (extract/needle.py): x is the context length asked
for (tokens), y the depth of the needle in the haystack (0% = the start, 100% = just before the question).
Its colour is the share of samples whose answer named the needle exactly (0% to 100%). The first panel is
the full cache: what the model retrieves with nothing evicted. Every other panel is one policy at one
budget, on the same samples.

Read a policy's panel against the full cache's. Cells outlined in black are where the full cache itself
misses the needle: there the model cannot retrieve it even with every token kept, so a miss there is the
model's limit, not the policy's. A policy is to blame only for cells that are solid in the full-cache
panel and pale in its own.

Kinds: passkey (a 5-digit pass key in repetitive filler), single (one magic-number sentence in LongBench
prose), multi (the asked-for magic number among three distractors with other keys). Lengths are
approximate; hover a square for the real prompt length, the depth the needle landed at and the cache kept.
"""

from __future__ import annotations

import altair as alt

from reports.base import Data, Report, ReportError, options
from reports.charts import dropdown, equals, heat_color

ACCURACY = alt.Scale(scheme="blues", domain=[0, 1])
FULL_MISSES = "full cache misses it here: the model's limit, not the policy's"
FULL_FINDS = "full cache retrieves every sample"
OUTLINE = alt.Scale(domain=[FULL_FINDS, FULL_MISSES], range=["#ffffff", "#000000"])


def chart(data: Data) -> alt.TopLevelMixin:
    grid = data["needle_grid"]
    if not grid.num_rows:
        raise ReportError("this run's needle samples have no quality rows: evaluate them (tasks=needle)")
    kind = dropdown("kind", options(grid, "kind"), "needle kind")
    setting = dropdown("setting", options(grid, "setting"), "setting", value="question_aware")
    panels = options(grid, "panel")
    base = (
        alt.Chart()
        .transform_filter(f"{equals('kind', kind)} && {equals('setting', setting)}")
        .transform_calculate(full=f"datum.accuracy_full < 1 ? {FULL_MISSES!r} : {FULL_FINDS!r}")
        .encode(
            x=alt.X("length_requested:O", title="context length asked for (tokens)", sort="ascending"),
            y=alt.Y("depth_requested:O", title="needle depth (%)", sort="ascending"),
        )
    )
    tooltip = [
        alt.Tooltip("panel:N", title="cache"),
        alt.Tooltip("length_requested:O", title="length asked for"),
        alt.Tooltip("depth_requested:O", title="depth asked for (%)"),
        alt.Tooltip("accuracy:Q", title="retrieved", format=".0%"),
        alt.Tooltip("accuracy_full:Q", title="retrieved, full cache", format=".0%"),
        alt.Tooltip("samples:Q", title="samples"),
        alt.Tooltip("prompt_tokens:Q", title="prompt tokens (mean)", format=".0f"),
        alt.Tooltip("depth_actual:Q", title="depth landed at (%)", format=".1f"),
        alt.Tooltip("kept_share:Q", title="cache kept", format=".0%"),
        alt.Tooltip("needle_cut:Q", title="samples whose needle truncation cut"),
    ]
    cells = base.mark_rect(strokeWidth=2.5).encode(
        color=heat_color("accuracy", "retrieved (exact match)", ACCURACY, ".0%"),
        stroke=alt.Stroke("full:N", scale=OUTLINE, title="where the full cache fails", legend=alt.Legend(
            orient="bottom", symbolType="square", symbolFillColor="#ffffff", labelLimit=500)),
        tooltip=tooltip,
    )  # fmt: skip
    labels = base.mark_text(fontSize=10).encode(
        text=alt.Text("accuracy:Q", format=".0%"),
        color=alt.condition("datum.accuracy > 0.55", alt.value("white"), alt.value("#333")),
        tooltip=tooltip,
    )
    return (
        alt.layer(cells, labels, data=grid)
        .properties(width=170, height=150)
        .facet(
            facet=alt.Facet(
                "panel:N", sort=panels, title=None, header=alt.Header(labelFontSize=12, labelFontWeight="bold")
            ),
            columns=4,
        )  # fmt: skip
        .add_params(kind, setting)
        .properties(
            title=alt.TitleParams(
                "Needle retrieved, by context length and depth: full cache first, then each policy and budget",
                subtitle=[
                    "Cells outlined in black: the full cache itself misses the needle there, so a miss there is "
                    "the model's limit, not the policy's.",
                    "A policy is to blame only for cells the full cache retrieves and it does not.",
                ],
                anchor="start",
            )
        )
        .resolve_scale(color="shared")
    )


REPORT = Report(
    name="needle_grid",
    title="17. Needle in a haystack",
    summary="Depth × length accuracy grid of the built-in needle task per eviction policy and budget, beside the "
    "full cache's: where a policy loses the needle, and where the model itself cannot find it.",
    queries=("needle_grid",),
    chart=chart,
    needs=("needles", "quality"),
    hint="Extract the built-in needle task, then evaluate policies on it: `prefect deployment run "
    "extract/longbench -p tasks=needle -p limit=null` (grid: `-p needle_grid='{\"lengths\": [256, 512]}'`), "
    "then `prefect deployment run evaluate/longbench -p tasks=needle -p limit=null`.",
)
