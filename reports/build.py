"""Build every report page and the index from the warehouse catalog.

One run is drawn per page. When the table a report reads holds several runs,
the report is built once per run (at most MAX_RUNS, most rows first): the
default run's page is `<report>.html` (the run with the most samples unless
`run` names another; reports over eviction and the demo tables pick among the
runs those tables hold), the others `<report>--<run>.html`, and each page
carries a run selector linking to the same report of the other runs.
A report whose tables are empty gets a page that says what to run; a report
that fails is listed as failed on the index and the others are still built.
The index also says what the pages were built on (runs, samples per task,
lengths, truncation, evaluations).
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from reports import html
from reports.base import Report, ReportError, fetch, load
from reports.glossary import about
from reports.registry import REPORTS
from warehouse import catalog, config
from warehouse.schemas import TABLES

log = logging.getLogger(__name__)
MAX_RUNS = 8  # pages per report: the runs with the most rows (and the named run); bounds build time and disk


@dataclass(frozen=True)
class Built:
    name: str
    path: Path
    status: str  # ok | no data | failed: <reason>
    size_bytes: int
    seconds: float
    run_id: str | None
    others: tuple[Built, ...] = field(default_factory=tuple)  # the same report drawn from the other runs


def _check_table(table: str) -> str:
    if table not in TABLES and table not in ("sample_labels", "token_summary"):
        raise ReportError(f"unknown table {table!r}")
    return table


def page_runs(con: duckdb.DuckDBPyConnection, table: str, preferred: str | None, limit: int = MAX_RUNS) -> list:
    """The runs a page can draw, its default first: `preferred` if the table has it, then by rows (most first).

    [None] for a table without runs.
    """
    if "run_id" not in TABLES[_check_table(table)].columns:
        return [None]
    rows = con.execute(
        f"SELECT run_id FROM {table} WHERE run_id IS NOT NULL GROUP BY run_id "  # table names come from TABLES only
        "ORDER BY (run_id = $p) DESC NULLS LAST, count(*) DESC, run_id LIMIT $n",
        {"p": preferred, "n": limit},
    ).fetchall()
    return [r for (r,) in rows] or [None]


def choose_run(con: duckdb.DuckDBPyConnection, table: str, preferred: str | None) -> str | None:
    """The run whose rows a page draws: `preferred` if the table has it, else the run with most rows."""
    return page_runs(con, table, preferred, limit=1)[0]


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


def page_file(name: str, run_id: str | None, default: bool) -> str:
    """`<name>.html` for the default run, `<name>--<run>.html` for another (file-name-safe)."""
    if default or run_id is None:
        return f"{name}.html"
    return f"{name}--{re.sub(r'[^A-Za-z0-9._-]+', '_', run_id)[:80]}.html"


@dataclass(frozen=True)
class RunInfo:
    """What a run selector and a page's meta line say about a run (from index_runs.sql)."""

    run_id: str
    model: str
    samples: int
    max_tokens: int | None
    window: int | None
    truncated: int

    @property
    def label(self) -> str:
        budget = f" · max {self.max_tokens} tokens" if self.max_tokens else ""
        return f"{self.run_id} · {self.model.rsplit('/', 1)[-1]}{budget} · {self.samples} samples"


def run_infos(con: duckdb.DuckDBPyConnection) -> dict[str, RunInfo]:
    cols = ("run_id", "model", "samples", "max_tokens", "window", "truncated")
    table = fetch(con, "index_runs", {})
    return {r["run_id"]: RunInfo(**{c: r[c] for c in cols}) for r in table.to_pylist()}


def _label(con, table: str, run_id: str | None, infos: dict[str, RunInfo]) -> str:
    if run_id in infos:
        return infos[run_id].label
    if run_id is None or "model" not in TABLES[table].columns:
        return str(run_id)
    model = con.execute(f"SELECT any_value(model) FROM {table} WHERE run_id = $r", {"r": run_id}).fetchall()[0][0]
    return f"{run_id} · {str(model).rsplit('/', 1)[-1]}"


def _meta(con, report: Report, run_id: str | None, infos: dict[str, RunInfo]) -> str:
    table = report.needs[0]
    if run_id is None or "model" not in TABLES[table].columns:
        return ""
    model = con.execute(f"SELECT any_value(model) FROM {table} WHERE run_id = $r", {"r": run_id}).fetchall()[0][0]
    extra = ""
    if info := infos.get(run_id):
        extra = f" · {info.samples} samples ({info.truncated} truncated)"
        extra += f" · max_tokens {info.max_tokens}" if info.max_tokens else ""
        extra += f" · window {info.window}" if info.window else ""
    return f"model {model} · run {run_id}{extra} · built {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"


def build_one(
    con: duckdb.DuckDBPyConnection,
    report: Report,
    out: Path,
    run_id: str | None,
    runs: list[html.RunLink] | None = None,
    infos: dict[str, RunInfo] | None = None,
    file: str | None = None,
) -> Built:
    """One page of one report drawn from one run (`runs`: the selector's entries, this page's marked current)."""
    t0 = time.perf_counter()
    path = out / (file or f"{report.name}.html")
    missing = missing_tables(con, report, run_id)
    held = len(page_runs(con, report.needs[0], None)) if report.min_runs > 1 else 1
    if missing:
        html.write(path, html.no_data_page(report.title, report.summary, missing, report.hint, runs))
        status = "no data"
    elif held < report.min_runs:
        reason = f"this report needs {report.min_runs} runs in {report.needs[0]}; the warehouse holds {held}."
        html.write(path, html.no_data_page(report.title, report.summary, [], report.hint, runs, reason=reason))
        status = "no data"
    else:
        data = load(con, report, {"run_id": run_id})
        chart = report.chart(data)
        meta = _meta(con, report, run_id, infos or {}) if report.per_run else ""
        html.write(path, html.chart_page(chart, report.title, report.summary, meta, about(report), runs))
        status = "ok"
    return Built(report.name, path, status, path.stat().st_size, time.perf_counter() - t0, run_id)


def _failed(report: Report, path: Path, err: Exception, run_id: str | None) -> Built:
    log.exception("report %s failed", report.name)
    html.write(path, html.failed_page(report.title, report.summary, f"{type(err).__name__}: {err}"))
    return Built(report.name, path, f"failed: {err}", path.stat().st_size, 0.0, run_id)


def build_report(
    con: duckdb.DuckDBPyConnection, report: Report, out: Path, run: str | None, infos: dict[str, RunInfo]
) -> Built:
    """Every page of one report: the default run's, then one per other run; the default's Built carries them."""
    runs = page_runs(con, report.needs[0], run) if report.per_run else [run]
    files = [page_file(report.name, r, i == 0) for i, r in enumerate(runs)]
    labels = [_label(con, report.needs[0], r, infos) for r in runs]
    built = []
    for i, (run_id, file) in enumerate(zip(runs, files, strict=True)):
        nav = [html.RunLink(lab, f, j == i) for j, (lab, f) in enumerate(zip(labels, files, strict=True))]
        try:
            built.append(build_one(con, report, out, run_id, nav if len(runs) > 1 else None, infos, file))
        except Exception as err:  # one broken page must not hide the others
            built.append(_failed(report, out / file, err, run_id))
    first = built[0]
    return Built(first.name, first.path, first.status, first.size_bytes, first.seconds, first.run_id, tuple(built[1:]))


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
        infos = run_infos(con)
        for report in reports:
            try:
                built.append(build_report(con, report, out, run, infos))
            except Exception as err:  # one broken report must not hide the others
                built.append(_failed(report, out / f"{report.name}.html", err, None))
            log.info("%s: %s (%.1f s, %d run(s))", report.name, built[-1].status, built[-1].seconds,
                     1 + len(built[-1].others))  # fmt: skip
        facts = provenance(con, infos)
    finally:
        con.close()
    write_index(out, built, reports, run, facts)
    return built


def select(only: list[str] | None) -> list[Report]:
    if not only:
        return list(REPORTS)
    names = {r.name: r for r in REPORTS}
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ReportError(f"unknown report(s) {unknown}; known: {', '.join(names)}")
    return [names[n] for n in only]


def provenance(con: duckdb.DuckDBPyConnection, infos: dict[str, RunInfo]) -> list[html.Facts]:
    """What the pages were built on: runs, samples per task with lengths and truncation, evaluations."""
    runs = fetch(con, "index_runs", {}).to_pylist()
    tasks = fetch(con, "index_tasks", {}).to_pylist()
    evals = fetch(con, "index_evaluations", {}).to_pylist()
    demo = con.execute("SELECT run_id, any_value(model), count(*) FROM demo_decode GROUP BY run_id").fetchall()
    run_cols = ("run_id", "model", "dtype", "device", "attn_impl", "max_tokens", "window", "samples", "tasks",
                "truncated", "min_tokens", "median_tokens", "longest", "finished")  # fmt: skip
    task_cols = ("run_id", "task", "samples", "truncated", "min_tokens", "median_tokens", "max_tokens",
                 "longest_before_truncation")  # fmt: skip
    eval_cols = ("run_id", "policy", "policy_ids", "budgets", "settings", "samples", "rows", "rankings_of_run")
    return [
        html.Facts(
            "Extraction runs",
            "token lengths are what the model saw, after truncation; the pages draw the "
            "first run unless a page's run selector picks another",
            run_cols,
            tuple(tuple(r[c] for c in run_cols) for r in runs),
            "no extraction run yet",
        ),  # fmt: skip
        html.Facts("Samples per task", "", task_cols, tuple(tuple(r[c] for c in task_cols) for r in tasks), "none"),
        html.Facts(
            "Evaluations (quality rows)",
            "per run and policy: policy settings, budgets, cache settings and "
            "samples evaluated; rankings_of_run = keep-set rankings stored for the run",
            eval_cols,
            tuple(tuple(r[c] for c in eval_cols) for r in evals),
            "no evaluation yet: `prefect deployment run evaluate/longbench` (or `kvw eval`)",
        ),  # fmt: skip
        html.Facts(
            "Demo runs (reports 14, 15)",
            "",
            ("run_id", "model", "decode steps"),
            tuple(demo),
            "no demo run yet (`kvw report` runs one)",
        ),  # fmt: skip
    ]


def write_index(
    out: Path, built: list[Built], reports: list[Report], run: str | None, facts: list[html.Facts] | None = None
) -> Path:
    """The index lists what was built now, plus pages of other reports left by an earlier build in `out`."""
    done = {b.name: b for b in built}
    known = {r.name: r for r in [*reports, *REPORTS]}
    entries = []
    for name, r in known.items():
        if b := done.get(name):
            others = tuple(html.RunLink(o.run_id or "", o.path.name) for o in b.others)
            entries.append(html.IndexEntry(b.path.name, r.title, r.summary, b.status, b.size_bytes, b.seconds, others))
        elif (page := out / f"{name}.html").exists():
            entries.append(html.IndexEntry(page.name, r.title, r.summary, "earlier build", page.stat().st_size, 0.0))
    meta = f"extraction run {run or '(none yet)'} · built {datetime.now(UTC):%Y-%m-%d %H:%M} UTC · opens offline"
    return html.write(out / "index.html", html.index_page(entries, meta, facts))
