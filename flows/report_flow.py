"""Prefect flow `report` (deployment `longbench`): the warehouse -> one offline HTML page per report + index.

Orchestration only: run the model-internals demo when its tables are missing
(reports 14 and 15 read them), refresh the catalog, build every page, and
publish a summary artifact that links to the index. The work is in
extract/demo.py and reports/.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from extract import demo
from extract import model as models
from reports import build as reports
from warehouse import catalog, config
from warehouse.store import Store

DEMO_MODES = ("auto", "always", "never")


@task(cache_policy=NO_CACHE)
def missing_demo_tables(db: str, model: str) -> list[str]:
    con = catalog.connect(db, read_only=True)
    try:
        return demo.demo_missing(con, models.model_slug(model))
    finally:
        con.close()


@task(retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def run_demo(data: str, model: str, cfg: demo.DemoConfig, device: str) -> demo.DemoResult:
    return demo.run_demo(Store(data), model, cfg, device=device)


@task(cache_policy=NO_CACHE)
def refresh_catalog(data: str, db: str) -> str:
    return str(catalog.build(Store(data), db))


@task(cache_policy=NO_CACHE)
def build_reports(db: str, out: str, run_id: str | None, only: list[str] | None) -> list[reports.Built]:
    return reports.build_all(db, out, run_id, only)


def summary_markdown(built: list[reports.Built], out: Path) -> str:
    rows = "\n".join(f"| {b.name} | {b.status} | {b.size_bytes / 1e6:.2f} MB | {b.seconds:.1f} s |" for b in built)
    return (
        f"# Reports\n\nIndex: [{out / 'index.html'}]({(out / 'index.html').as_uri()}) (opens offline)\n\n"
        f"| report | state | size | build |\n|---|---|---|---|\n{rows}\n"
    )


@flow(name="report", log_prints=True)
def report(
    output: str | None = None,  # the folder holding data/ and kv.duckdb (as extract's `output`); default warehouse/
    out: str | None = None,  # where the pages go; default reports/out or $KVW_REPORTS
    run_id: str | None = None,  # extraction run to draw; default the one with the most samples
    only: list[str] | None = None,  # report names; default all
    demo_mode: str = "auto",  # auto: run the model-internals demo when its tables are missing
    model: str = models.DEFAULT_MODEL,
    demo_new_tokens: int = 32,
    device: str = "cpu",
) -> dict:
    """Build every report page and index.html from the warehouse; the demo step runs the model when needed."""
    log = get_run_logger()
    if demo_mode not in DEMO_MODES:
        raise ValueError(f"demo_mode must be one of {', '.join(DEMO_MODES)}, got {demo_mode!r}")
    reports.select(only)  # unknown report names fail before any work
    data, db = (str(p) for p in config.locations(output))
    out_dir = config.writable_dir(out or config.reports_dir(), "out")  # before the catalog and the demo

    refresh_catalog(data, db)
    missing = missing_demo_tables(db, model)
    if demo_mode == "always" or (demo_mode == "auto" and missing):
        log.info("running the model-internals demo (missing: %s)", ", ".join(missing) or "none, forced")
        result = run_demo(data, model, demo.DemoConfig(new_tokens=demo_new_tokens), device)
        log.info("demo run %s: %s rows in %.1f s", result.run_id, result.rows, result.seconds)
        refresh_catalog(data, db)

    built = build_reports(db, str(out_dir), run_id, only)
    index = out_dir / "index.html"
    create_markdown_artifact(summary_markdown(built, out_dir), key="reports-summary", description="report build")
    create_link_artifact(index.as_uri(), link_text="reports index", key="reports-index")
    failed = [b for b in built if b.status.startswith("failed")]
    if failed:
        raise RuntimeError(f"{len(failed)} report(s) failed: " + "; ".join(f"{b.name}: {b.status}" for b in failed))
    return {"index": str(index), "reports": {b.name: b.status for b in built}}
