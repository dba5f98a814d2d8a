"""Parameter shapes shared by the flows (what `prefect deployment run -p` hands them)."""

from __future__ import annotations


def as_list(value: list | str | None) -> list | None:
    """A JSON list, or a comma-separated string (`-p tasks=qasper,trec`). None stays None ("unset": every
    task); "" gives [], which the consumers refuse as an empty task name (it never means every task). It
    does not raise itself: flow run names are built with it before the flow can report an error."""
    if value is None or isinstance(value, list):
        return value
    return [v.strip() for v in value.split(",") if v.strip()]
