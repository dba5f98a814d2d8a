"""What a report is, and the one place where report data is read from DuckDB.

A report is its name (the brief's figure name), a title, the one line the
index shows, the SQL files it reads (reports/sql/<name>.sql, aggregated and
sampled in DuckDB so pages stay small), an optional pure array step (PCA
needs an SVD) and a chart function from named Arrow tables to an Altair chart.
Chart functions hold no SQL and do no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import altair as alt
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SQL_DIR = Path(__file__).parent / "sql"
_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
SIGNIFICANT = 4  # digits kept of every float sent to the page: JSON size, not precision, is the limit

Data = dict[str, pa.Table]


@dataclass(frozen=True)
class Report:
    name: str  # file stem of the page, after the brief's figure name
    title: str
    summary: str  # the index line: what a researcher sees on the page
    queries: tuple[str, ...]  # reports/sql/<query>.sql, each becomes data[<query>]
    chart: Callable[[Data], alt.TopLevelMixin]
    needs: tuple[str, ...] = ("samples",)  # tables that must have rows for the chosen run
    hint: str = "Run the extraction first: `prefect deployment run extract/longbench` (or scripts/quickstart.sh)."
    params: dict = field(default_factory=dict)  # defaults of the report's own $parameters
    prepare: Callable[[Data], Data] | None = None  # pure array step between SQL and chart
    per_run: bool = True  # built once per run of its first table (with a run selector); False: one page over runs
    min_runs: int = 1  # runs its first table must hold (a cross-run comparison needs 2)


class ReportError(RuntimeError):
    """A report could not be built; the message names the report and the step."""


def sql_text(query: str) -> str:
    path = SQL_DIR / f"{query}.sql"
    if not path.exists():
        raise ReportError(f"no SQL file {path}")
    return path.read_text()


def used_params(sql: str) -> set[str]:
    """The $names a query binds (DuckDB refuses parameters a statement does not use)."""
    no_comments = re.sub(r"--[^\n]*", "", sql)
    return set(_PARAM.findall(no_comments))


def compact_floats(values, digits: int = SIGNIFICANT) -> list[float | None]:
    """Floats rounded to `digits` significant digits, as the shortest decimal JSON can print."""
    return [None if v != v else float(f"{v:.{digits}g}") for v in np.asarray(values, dtype=np.float64).tolist()]


def compact(table: pa.Table) -> pa.Table:
    """Page-ready columns: floats and decimals to a few significant digits, dictionaries to plain strings."""
    cols = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        t = col.type
        if pa.types.is_floating(t) or pa.types.is_decimal(t):  # DuckDB's sum/avg of integers can be DECIMAL
            arr = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
            col = pa.array(compact_floats(arr), pa.float64())
        elif pa.types.is_dictionary(t):
            col = pc.cast(col, t.value_type)
        cols[name] = col
    return pa.table(cols)


def fetch(con: duckdb.DuckDBPyConnection, query: str, params: dict) -> pa.Table:
    """Run reports/sql/<query>.sql with the $parameters it uses, as a page-ready Arrow table."""
    sql = sql_text(query)
    names = used_params(sql)
    missing = names - params.keys()
    if missing:
        raise ReportError(f"{query}.sql needs parameter(s) {sorted(missing)}")
    try:
        table = con.sql(sql, params={k: params[k] for k in names}).to_arrow_table()
    except duckdb.Error as err:
        raise ReportError(f"{query}.sql failed: {err}") from err
    return compact(table)


def load(con: duckdb.DuckDBPyConnection, report: Report, context: dict) -> Data:
    """Every table a report draws, after its optional array step."""
    params = {**report.params, **context}
    data = {q: fetch(con, q, params) for q in report.queries}
    return report.prepare(data) if report.prepare else data


def options(table: pa.Table, column: str) -> list:
    """Distinct values of a column in first-seen order (the SQL orders them): dropdown choices."""
    return list(dict.fromkeys(table.column(column).to_pylist()))
