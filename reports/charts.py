"""Small pieces every chart uses: dropdown parameters, filters, palettes, tooltips. No SQL, no I/O."""

from __future__ import annotations

import altair as alt

from extract.tokens import CATEGORIES

KV_COLORS = alt.Scale(domain=["key", "value"], range=["#1f77b4", "#ff7f0e"])
DIVERGING = alt.Scale(scheme="redblue", reverse=True, domainMid=0)
SEQUENTIAL = alt.Scale(scheme="viridis")
CATEGORY_COLORS = alt.Scale(domain=list(CATEGORIES), scheme="tableau10")  # same colour per category everywhere
ALL = "(all)"  # the dropdown choice that keeps every value of a field


def dropdown(name: str, values: list, label: str | None = None, value=None) -> alt.Parameter:
    """A page-level selector bound to a <select>; `name` is also the Vega signal the filters use."""
    if not values:
        raise ValueError(f"dropdown {name!r} has no choices")
    first = values[0] if value is None or value not in values else value
    return alt.param(name=name, value=first, bind=alt.binding_select(options=values, name=f"{label or name} "))


def radio(name: str, values: list, label: str | None = None, value=None) -> alt.Parameter:
    first = values[0] if value is None or value not in values else value
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
