"""Run a flow in this process (`kvw extract`, `kvw evaluate`): no deployment, no `kvw serve`, no worker.

A quick look used to need a Prefect server, a served deployment and `prefect deployment run --watch` (a
minute before the run started on the 2-core machine). Prefect still records the run: on the server at
PREFECT_API_URL when one answers there (the run shows in its UI), else on a temporary server Prefect starts
for this process over the same PREFECT_HOME database, so a later `prefect server start` shows the run too.
The flow is the deployment's own: same parameters, same checks, same result.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


class ParamError(ValueError):
    """A `-p name=value` that the flow does not take, or one not shaped name=value."""


def parse_params(items: list[str], flow) -> dict[str, Any]:
    """`-p name=value` as `prefect deployment run -p` reads them (a JSON value, else the text itself), checked
    against the flow's parameters so a misspelt name is refused before anything runs."""
    known = list(inspect.signature(flow.fn).parameters)
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ParamError(f"-p takes name=value, got {item!r}")
        name = name.strip()
        if name not in known:
            raise ParamError(f"{flow.name} has no parameter {name!r}; parameters: {', '.join(known)}")
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError:
            params[name] = value
    return params


def server_answers(url: str | None, timeout: float = 3.0) -> bool:
    """Does a Prefect server answer at `url` (PREFECT_API_URL)? Its /health endpoint, no client needed."""
    if not url:
        return False
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class Outcome:
    completed: bool
    state: str  # Prefect's state name: Completed, Failed, Crashed, ...
    result: Any  # the flow's return value when it completed
    message: str  # the final state's message (why it failed)


def run(flow, params: dict[str, Any], url: str | None) -> Outcome:
    """Call `flow` here with `params`, recorded by the server at `url` (one that answers: server_answers), or
    with None by a temporary server Prefect starts for this call."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if url:
        settings = temporary_settings(updates={PREFECT_API_URL: url})
    else:
        settings = temporary_settings(restore_defaults={PREFECT_API_URL})
    console = [] if os.environ.get("KVW_DEBUG") else [h for h in logging.getLogger().handlers if _is_console(h)]
    for h in console:
        h.addFilter(_no_traceback)
    try:
        with settings:
            state = flow(**params, return_state=True)
            result = state.result(raise_on_failure=False) if state.is_completed() else None
    finally:
        for h in console:
            h.removeFilter(_no_traceback)
    return Outcome(state.is_completed(), state.name, result, state.message or "")


def _is_console(handler: logging.Handler) -> bool:
    return type(handler).__name__ == "PrefectConsoleHandler" or (
        isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (sys.stderr, sys.stdout)
    )


def _no_traceback(record: logging.LogRecord) -> bool:
    """The terminal shows each error as its one-line message: no `kvw` command prints a traceback. The run's
    logs on the server keep it (its handlers sit on Prefect's run loggers, which handle a record before the
    root's console handler does); KVW_DEBUG=1 keeps it here too."""
    record.exc_info, record.exc_text = None, None
    return True
