"""Small pieces every chart uses, so every page speaks the same visual language. No SQL, no I/O.

- one colour per token category (`CATEGORY_COLORS`) and per prompt segment (`SEGMENT_COLORS`), on every page;
- key vs value told apart by colour AND dash/shape, with a legend titled so it reads "key" / "value"
  (`kv_color`, `kv_dash`, `kv_shape`, `kv_line`, `kv_points`);
- every heatmap gets a labelled colour legend (`heat_color`);
- `dropdown` / `radio` render no control when there is one choice: the page shows the value as text.
"""

from __future__ import annotations

import altair as alt

from warehouse.vocabulary import CATEGORIES, SEGMENTS, TENSORS

# Token categories: fixed colours (Tableau 10), so a category has the same colour on every page.
CATEGORY_PALETTE = {
    "special": "#e15759",
    "whitespace": "#bab0ac",
    "cjk": "#b07aa1",
    "digit": "#edc948",
    "punctuation": "#76b7b2",
    "code_symbol": "#9c755f",
    "stopword": "#f28e2b",
    "word": "#4e79a7",
    "other": "#59a14f",
}
assert tuple(CATEGORY_PALETTE) == CATEGORIES, "one colour per category of warehouse.vocabulary"
CATEGORY_COLORS = alt.Scale(domain=list(CATEGORIES), range=list(CATEGORY_PALETTE.values()))

# Prompt segments: strong colours for marks, light ones for shading behind lines.
SEGMENT_PALETTE = {"chat": "#7f7f7f", "instruction": "#9467bd", "context": "#1f77b4", "question": "#d62728"}
SEGMENT_SHADES = {"chat": "#eeeeee", "instruction": "#ece4f5", "context": "#e8eef7", "question": "#fbe3e3"}
assert tuple(SEGMENT_PALETTE) == SEGMENTS == tuple(SEGMENT_SHADES)
SEGMENT_COLORS = alt.Scale(domain=list(SEGMENTS), range=list(SEGMENT_PALETTE.values()))
SEGMENT_FILLS = alt.Scale(domain=list(SEGMENTS), range=list(SEGMENT_SHADES.values()))

# Keys and values: colour, plus a dash (lines) or a shape (points), so print and colour-blind readers can tell.
KEY_COLOR, VALUE_COLOR = "#1f77b4", "#ff7f0e"
KV_COLORS = alt.Scale(domain=list(TENSORS), range=[KEY_COLOR, VALUE_COLOR])
KV_DASHES = alt.Scale(domain=list(TENSORS), range=[[1, 0], [6, 3]])
KV_SHAPES = alt.Scale(domain=list(TENSORS), range=["circle", "triangle-up"])
KV_TITLE = "tensor (key / value)"

DIVERGING = alt.Scale(scheme="redblue", reverse=True, domainMid=0)
SEQUENTIAL = alt.Scale(scheme="viridis")
ALL = "(all)"  # the dropdown choice that keeps every value of a field


def kv_color(field: str = "tensor", title: str = KV_TITLE) -> alt.Color:
    """Colour by key/value with a legend that names them (merges with `kv_dash` / `kv_shape` of the same title)."""
    return alt.Color(f"{field}:N", scale=KV_COLORS, title=title, legend=alt.Legend(title=title, titleLimit=300))


def kv_dash(field: str = "tensor", title: str = KV_TITLE) -> alt.StrokeDash:
    """Solid keys, dashed values: the second half of the key/value encoding on lines."""
    legend = alt.Legend(title=title, titleLimit=300, symbolType="stroke", symbolStrokeWidth=2.5)
    return alt.StrokeDash(f"{field}:N", scale=KV_DASHES, title=title, legend=legend)


def kv_shape(field: str = "tensor", title: str = KV_TITLE) -> alt.Shape:
    """Circles for keys, triangles for values: the second half of the key/value encoding on points."""
    return alt.Shape(f"{field}:N", scale=KV_SHAPES, title=title, legend=alt.Legend(title=title, titleLimit=300))


def kv_line(field: str = "tensor", title: str = KV_TITLE) -> dict:
    """Encodings for key/value lines: colour and dash in one legend.

    The legends merge only where colour and strokeDash resolve alike: a concat that resolves colour
    "independent" must resolve strokeDash "independent" too (`INDEPENDENT_KV`). A band behind the lines
    should take `kv_band()`, which draws no legend of its own.
    """
    legend = alt.Legend(title=title, titleLimit=300, symbolType="stroke", symbolOpacity=1, symbolStrokeWidth=2.5)
    return {
        "color": alt.Color(f"{field}:N", scale=KV_COLORS, title=title, legend=legend),
        "strokeDash": alt.StrokeDash(f"{field}:N", scale=KV_DASHES, title=title, legend=legend),
    }


INDEPENDENT_KV = {"color": "independent", "strokeDash": "independent", "shape": "independent"}


def bands(base: alt.Chart, scale: alt.Scale, y: str, y2: str, field: str = "tensor", opacity: float = 0.16) -> list:
    """One shaded band per value of `scale`'s domain, in its fixed colour, with no legend of its own.

    Bands drawn through a colour (or fill) channel without a legend switch off the lines' legend, or add a
    second one: a band per value, each one plain colour, leaves the lines' legend alone.
    """
    return [
        base.transform_filter(f"datum[{field!r}] === {value!r}")
        .mark_area(opacity=opacity, color=color)
        .encode(y=y, y2=y2)
        for value, color in zip(scale.domain, scale.range, strict=True)
    ]


def kv_points(field: str = "tensor", title: str = KV_TITLE) -> dict:
    """Encodings for key/value points: colour and shape in one legend."""
    return {"color": kv_color(field, title), "shape": kv_shape(field, title)}


def kv_mark_color(tensor: str) -> str:
    """The fixed colour of 'key' or 'value', for a mark drawn for one of them only."""
    if tensor not in TENSORS:
        raise ValueError(f"tensor must be one of {TENSORS}, got {tensor!r}")
    return KEY_COLOR if tensor == "key" else VALUE_COLOR


def category_color(field: str = "category", title: str = "token category") -> alt.Color:
    return alt.Color(f"{field}:N", scale=CATEGORY_COLORS, title=title, legend=alt.Legend(title=title))


def segment_color(field: str = "segment", title: str = "prompt segment") -> alt.Color:
    return alt.Color(f"{field}:N", scale=SEGMENT_COLORS, title=title, legend=alt.Legend(title=title))


def heat_color(field: str, title: str, scale: alt.Scale = SEQUENTIAL, fmt: str | None = None) -> alt.Color:
    """The colour channel of a heatmap, always with a titled gradient legend saying what a colour means."""
    if ":" not in field:
        field = f"{field}:Q"
    legend = alt.Legend(title=title, orient="right", gradientLength=140, **({"format": fmt} if fmt else {}))
    return alt.Color(field, title=title, scale=scale, legend=legend)


def _fixed(name: str, value, label: str | None) -> alt.Parameter:
    """A parameter with one possible value: shown as 'label: value' text, with no control to operate."""
    return alt.param(name=name, value=value, bind=alt.BindInput(input="hidden", name=f"{label or name}: {value}"))


def fixed(name: str, value, label: str | None = None, shown=None) -> alt.Parameter:
    """A parameter the page does not let one change, shown as 'label: value' text (`shown` instead of value)."""
    return (
        _fixed(name, value, label)
        if shown is None
        else alt.param(name=name, value=value, bind=alt.BindInput(input="hidden", name=f"{label or name}: {shown}"))
    )


def dropdown(
    name: str, values: list, label: str | None = None, value=None, labels: list | None = None
) -> alt.Parameter:
    """A page-level selector bound to a <select>; `name` is also the Vega signal the filters use.

    With a single choice there is nothing to select: the value is shown as text instead of a dead control.
    `labels` are what the options show (one per value) when the values themselves are ids.
    """
    if not values:
        raise ValueError(f"dropdown {name!r} has no choices")
    if labels is not None and len(labels) != len(values):
        raise ValueError(f"dropdown {name!r}: {len(labels)} labels for {len(values)} choices")
    first = values[0] if value is None or value not in values else value
    if len(values) == 1:
        return fixed(name, first, label, labels[0] if labels else None)
    bind = alt.binding_select(options=values, name=f"{label or name} ", **({"labels": labels} if labels else {}))
    return alt.param(name=name, value=first, bind=bind)


def radio(name: str, values: list, label: str | None = None, value=None) -> alt.Parameter:
    if not values:
        raise ValueError(f"radio {name!r} has no choices")
    first = values[0] if value is None or value not in values else value
    if len(values) == 1:
        return _fixed(name, first, label)
    return alt.param(name=name, value=first, bind=alt.binding_radio(options=values, name=f"{label or name} "))


def equals(field: str, param: alt.Parameter) -> str:
    """Vega expression: the row's `field` equals the dropdown's current value."""
    return f"datum[{field!r}] === {param.name}"


def equals_or_all(field: str, param: alt.Parameter) -> str:
    """As `equals`, but the ALL choice keeps every row."""
    return f"({param.name} === {ALL!r} || datum[{field!r}] === {param.name})"


def token_tooltip(*extra: alt.Tooltip | str) -> list:
    """Token text first, then where it sits; extra fields after."""
    return [
        alt.Tooltip("token:N", title="token"),
        alt.Tooltip("position:Q", title="position"),
        *extra,
    ]
