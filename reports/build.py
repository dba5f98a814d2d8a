"""Build every report page and the index from the warehouse catalog.

One run of the extraction is drawn per page (the one with the most samples
unless `run` names another); reports over eviction and the demo tables pick
the run those tables hold. A report whose tables are empty gets a page that
says what to run; a report that fails is listed as failed on the index and
the others are still built.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from reports import html
from reports.base import Report, ReportError, load
from reports.registry import REPORTS
from warehouse import catalog, config
from warehouse.schemas import TABLES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Built:
    name: str
    path: Path
    status: str  # ok | no data | failed: <reason>
    size_bytes: int
    seconds: float
    run_id: str | None


def _check_table(table: str) -> str:
    if table not in TABLES and table not in ("sample_labels", "token_summary"):
        raise ReportError(f"unknown table {table!r}")
    return table


def choose_run(con: duckdb.DuckDBPyConnection, table: str, preferred: str | None) -> str | None:
    """The run whose rows a page draws: `preferred` if the table has it, else the run with most rows."""
    if "run_id" not in TABLES[_check_table(table)].columns:
        return None
    rows = con.execute(
        f"SELECT run_id FROM {table} GROUP BY run_id "  # table names come from TABLES only
        "ORDER BY (run_id = $p) DESC NULLS LAST, count(*) DESC, run_id LIMIT 1",
        {"p": preferred},
    ).fetchall()
    return rows[0][0] if rows else None


def check_run(con: duckdb.DuckDBPyConnection, reports: list[Report], run: str) -> None:
    """Refuse a run that none of the reports' tables holds: `choose_run` would silently draw another one."""
    tables = sorted({r.needs[0] for r in reports if "run_id" in TABLES[_check_table(r.needs[0])].columns})
    if not tables:
        return
    union = " UNION ".join(f"SELECT DISTINCT run_id FROM {t}" for t in tables)  # names from TABLES only
    known = sorted(r for (r,) in con.execute(union).fetchall() if r is not None)
    if run not in known:
        raise ReportError(
            f"run {run!r} is not in {', '.join(tables)}; runs there: {', '.join(known[:10]) or 'none'}"
            + (f" (+{len(known) - 10} more)" if len(known) > 10 else "")
        )


def default_run(con: duckdb.DuckDBPyConnection) -> str | None:
    """The extraction run with the most samples (latest first on a tie)."""
    rows = con.execute(
        "SELECT s.run_id FROM samples AS s LEFT JOIN runs AS r USING (run_id) "
        "GROUP BY s.run_id ORDER BY count(*) DESC, max(r.finished_at) DESC NULLS LAST, s.run_id LIMIT 1"
    ).fetchall()
    return rows[0][0] if rows else None


def missing_tables(con: duckdb.DuckDBPyConnection, report: Report, run_id: str | None) -> list[str]:
    """The tables a report needs that have no rows (for its run, where the table has runs)."""
    missing = []
    for table in report.needs:
        has_run = "run_id" in TABLES[_check_table(table)].columns and run_id is not None
        where = "WHERE run_id = $r" if has_run else ""
        sql = f"SELECT count(*) FROM (SELECT 1 FROM {table} {where} LIMIT 1)"
        if con.execute(sql, {"r": run_id} if has_run else {}).fetchall()[0][0] == 0:
            missing.append(table)
    return missing


def _meta(con, report: Report, run_id: str | None) -> str:
    table = report.needs[0]
    if run_id is None or "model" not in TABLES[table].columns:
        return ""
    model = con.execute(f"SELECT any_value(model) FROM {table} WHERE run_id = $r", {"r": run_id}).fetchall()[0][0]
    return f"model {model} · run {run_id} · built {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"


def build_one(con: duckdb.DuckDBPyConnection, report: Report, out: Path, run: str | None) -> Built:
    t0 = time.perf_counter()
    path = out / f"{report.name}.html"
    run_id = choose_run(con, report.needs[0], run)
    missing = missing_tables(con, report, run_id)
    if missing:
        html.write(path, html.no_data_page(report.title, report.summary, missing, report.hint))
        status = "no data"
    else:
        data = load(con, report, {"run_id": run_id})
        chart = report.chart(data)
        html.write(path, html.chart_page(chart, report.title, report.summary, _meta(con, report, run_id)))
        status = "ok"
    return Built(report.name, path, status, path.stat().st_size, time.perf_counter() - t0, run_id)


def build_all(
    db: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    run: str | None = None,
    only: list[str] | None = None,
    reports: list[Report] | None = None,
) -> list[Built]:
    """Write <out>/<report>.html for every report (or `only` these, or these `reports`) and <out>/index.html."""
    out = Path(out or config.reports_dir())
    reports = reports if reports is not None else select(only)
    con = catalog.connect(db, read_only=True)
    built: list[Built] = []
    try:
        if run is not None:
            check_run(con, reports, run)
        run = run or default_run(con)
        for report in reports:
            try:
                built.append(build_one(con, report, out, run))
            except Exception as err:  # one broken report must not hide the others
                log.exception("report %s failed", report.name)
                path = out / f"{report.name}.html"
                html.write(path, html.failed_page(report.title, report.summary, f"{type(err).__name__}: {err}"))
                built.append(Built(report.name, path, f"failed: {err}", path.stat().st_size, 0.0, None))
            log.info("%s: %s (%.1f s)", report.name, built[-1].status, built[-1].seconds)
    finally:
        con.close()
    write_index(out, built, reports, run)
    return built


def select(only: list[str] | None) -> list[Report]:
    if not only:
        return list(REPORTS)
    names = {r.name: r for r in REPORTS}
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ReportError(f"unknown report(s) {unknown}; known: {', '.join(names)}")
    return [names[n] for n in only]


def write_index(out: Path, built: list[Built], reports: list[Report], run: str | None) -> Path:
    """The index lists what was built now, plus pages of other reports left by an earlier build in `out`."""
    done = {b.name: b for b in built}
    known = {r.name: r for r in [*reports, *REPORTS]}
    entries = []
    for name, r in known.items():
        if b := done.get(name):
            entries.append(html.IndexEntry(b.path.name, r.title, r.summary, b.status, b.size_bytes, b.seconds))
        elif (page := out / f"{name}.html").exists():
            entries.append(html.IndexEntry(page.name, r.title, r.summary, "earlier build", page.stat().st_size, 0.0))
    meta = f"extraction run {run or '(none yet)'} · built {datetime.now(UTC):%Y-%m-%d %H:%M} UTC · opens offline"
    return html.write(out / "index.html", html.index_page(entries, meta))
