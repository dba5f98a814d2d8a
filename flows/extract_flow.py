"""Prefect flow `extract` (deployment `longbench`): LongBench + a model -> KV statistics in Parquet.

Orchestration only: parameters, one task per sample with retries, the run
record, the catalog refresh and a summary artifact. The work is in extract/.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from extract import model as models
from extract.longbench import LongBench, Sample, Skip, open_longbench
from extract.run import (
    Outcome,
    effective_max_tokens,
    make_run_id,
    plan,
    process_sample,
    record_skip,
    summary_markdown,
    write_run,
)
from extract.sample import StatsConfig
from flows.params import as_list
from warehouse import catalog, config
from warehouse.store import Store


def _run_name() -> str:
    p = flow_run.parameters
    tasks = as_list(p.get("tasks")) or ["all"]
    shown = ",".join(tasks[:3]) + (f"+{len(tasks) - 3}" if len(tasks) > 3 else "")
    return f"{models.model_slug(p.get('model', models.DEFAULT_MODEL))}-{shown}-limit{p.get('limit')}"


@task(retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE)
def load_model(model: str, device: str, dtype: str, attn: str) -> models.Loaded:
    return models.load_cached(model, device, dtype, attn)


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE, task_run_name="{sample.task}/{sample.sample_id}")
def extract_sample(
    store: Store,
    loaded: models.Loaded,
    lb: LongBench,
    sample: Sample,
    run_id: str,
    max_tokens: int,
    cfg: StatsConfig,
    overwrite: bool,
) -> Outcome:
    return process_sample(store, loaded, lb, sample, run_id, max_tokens, cfg, overwrite)


@flow(name="extract", flow_run_name=_run_name, log_prints=True)
def extract(
    model: str = models.DEFAULT_MODEL,
    data_dir: str | None = None,
    tasks: list[str] | str | None = None,
    limit: int | None = 1,
    max_tokens: int = 2048,
    window: int = 32,
    raw_kv: bool = False,
    raw_kv_layers: list[int] | None = None,
    raw_kv_heads: list[int] | None = None,
    raw_kv_positions: int = 256,
    output: str | None = None,  # a folder for data/ and kv.duckdb; default warehouse/
    overwrite: bool = False,
    run_name: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    attn: str = "auto",
) -> dict:
    """Extract KV statistics of `model` over LongBench `tasks` (all when empty), `limit` samples each."""
    log = get_run_logger()
    t0, started = time.perf_counter(), datetime.now(UTC)
    lb = open_longbench(data_dir)
    work = plan(lb, as_list(tasks), limit)
    cfg = StatsConfig(
        window=window,
        raw_kv=raw_kv,
        raw_kv_positions=raw_kv_positions,
        raw_kv_layers=tuple(raw_kv_layers) if raw_kv_layers is not None else None,
        raw_kv_heads=tuple(raw_kv_heads) if raw_kv_heads is not None else None,
    )
    loaded = load_model(model, device, dtype, attn)
    max_tok = effective_max_tokens(loaded, max_tokens)
    run_id = make_run_id(loaded, max_tok, cfg, run_name)
    data_root, db_file = config.locations(output)
    store = Store(data_root)
    store.clean_tmp()
    log.info(
        "run %s: %d samples of %d task(s) from %s into %s",
        run_id,
        len(work.samples),
        len({s.task for s in work.samples}),
        lb.root,
        store.root,
    )

    outcomes = [record_skip(store, run_id, loaded.name, s) for s in work.skips]
    for i, sample in enumerate(work.samples, 1):
        try:
            outcome = extract_sample(store, loaded, lb, sample, run_id, max_tok, cfg, overwrite)
        except Exception as err:  # after retries: record why, keep going with the other samples
            outcome = record_skip(
                store,
                run_id,
                loaded.name,
                Skip(sample.task, sample.sample_id, sample.source, f"extraction failed: {err!r}"),
                status="failed",
            )
        outcomes.append(outcome)
        log.info(
            "[%d/%d] %s/%s %s %d tokens %.1fs",
            i,
            len(work.samples),
            sample.task,
            sample.sample_id,
            outcome.status,
            outcome.n_tokens,
            outcome.seconds,
        )

    seconds = time.perf_counter() - t0
    parameters = dict(flow_run.parameters) or {"model": model, "tasks": tasks, "limit": limit}
    parameters["max_tokens_effective"] = max_tok
    run = write_run(store, loaded, run_id, parameters, started, seconds)
    db = catalog.build(store, db_file)
    create_markdown_artifact(
        summary_markdown(run, outcomes, str(store.root), str(db), seconds),
        key="extract-summary",
        description=f"extract run {run_id}",
    )
    failed = [o for o in outcomes if o.status == "failed"]
    if work.samples and len(failed) == len(work.samples):
        raise RuntimeError(f"every sample failed; first error: {failed[0].reason}")
    return {
        "run_id": run_id,
        "data": str(store.root),
        "db": str(db),
        "samples": run["samples"],
        "tokens": run["tokens"],
        "skipped": run["skipped"],
    }
