"""Prefect flow `extract` (deployment `longbench`): LongBench + a model -> KV statistics in Parquet.

Orchestration only: parameters, one task per sample with retries, the run
record, the catalog refresh and a summary artifact. The work is in extract/.
With `work_pool`, the samples go out as shards: one `extract-shard` child run
per task and range of samples, on that pool's workers (flows/fanout.py).
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import asdict, fields
from datetime import UTC, datetime
from types import SimpleNamespace

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Failed

from extract import model as models
from extract import needle
from extract.longbench import LongBench, Sample, Skip, open_longbench, read_task
from extract.run import (
    Outcome,
    effective_max_tokens,
    make_run_id,
    plan,
    process_sample,
    record_skip,
    summary_markdown,
    write_layers,
    write_run,
)
from extract.sample import StatsConfig
from flows import fanout, worker
from flows.params import as_list, check_before_work, retryable
from flows.shards import DEFAULT_SHARD_SIZE, Shard, counts_by_task, lost_work, make_shards, owned
from warehouse import catalog, config
from warehouse.store import Store


def _run_name() -> str:
    p = flow_run.parameters
    tasks = as_list(p.get("tasks")) or ["all"]
    shown = ",".join(tasks[:3]) + (f"+{len(tasks) - 3}" if len(tasks) > 3 else "")
    return f"{models.model_slug(p.get('model', models.DEFAULT_MODEL))}-{shown}-limit{p.get('limit')}"


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=retryable, cache_policy=NO_CACHE)
def load_model(model: str, device: str, dtype: str, attn: str) -> models.Loaded:
    return models.load_cached(model, device, dtype, attn)


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=retryable, cache_policy=NO_CACHE,
      task_run_name="{sample.task}/{sample.sample_id}")  # fmt: skip
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


def check_concurrency(concurrency: int | None) -> None:
    if concurrency is not None and concurrency < 1:
        raise ValueError(f"concurrency must be >= 1 (or empty: 3 on a GPU, 1 on a CPU), got {concurrency}")


def in_flight(concurrency: int | None, loaded) -> int:
    """Samples extracted at once: 3 on an accelerator (it prefills one at a time, under
    extract.sample.DEVICE_LOCK, while the others tokenize and write: 2-3x a GPU run's throughput), 1 on a CPU,
    whose cores the prefill already fills. `concurrency` was checked before the model load (check_concurrency)."""
    return concurrency or (3 if str(loaded.device).startswith("cuda") else 1)


def extract_all(
    store: Store, loaded, lb: LongBench, samples, run_id: str, max_tok: int, cfg, overwrite: bool, concurrency: int = 1
) -> list:
    """One task run per sample, up to `concurrency` at once; a sample that still raises after its retries is
    recorded as failed, not fatal."""
    log = get_run_logger()
    outcomes = []
    window: deque = deque()

    def settle(sample, run) -> None:
        try:
            outcome = run() if callable(run) else run.result()
        except Exception as err:  # after retries: record why, keep going with the other samples
            skip = Skip(sample.task, sample.sample_id, sample.source, f"extraction failed: {err!r}")
            outcome = record_skip(store, run_id, loaded.name, skip, status="failed")
        outcomes.append(outcome)
        log.info("[%d/%d] %s/%s %s %d tokens %.1fs", len(outcomes), len(samples), sample.task, sample.sample_id,
                 outcome.status, outcome.n_tokens, outcome.seconds)  # fmt: skip

    for sample in samples:
        args = (store, loaded, lb, sample, run_id, max_tok, cfg, overwrite)
        if concurrency <= 1:
            settle(sample, lambda args=args: extract_sample(*args))
            continue
        window.append((sample, extract_sample.submit(*args)))
        if len(window) >= concurrency:
            settle(*window.popleft())
    while window:
        settle(*window.popleft())
    return outcomes


def _stats_config(window, raw_kv, raw_kv_layers, raw_kv_heads, raw_kv_positions) -> StatsConfig:
    return StatsConfig(
        window=window,
        raw_kv=raw_kv,
        raw_kv_positions=raw_kv_positions,
        raw_kv_layers=tuple(raw_kv_layers) if raw_kv_layers is not None else None,
        raw_kv_heads=tuple(raw_kv_heads) if raw_kv_heads is not None else None,
    )


def _lost(outcomes: list[Outcome], planned: int) -> str | None:
    failed = [f"{o.task}/{o.sample_id}: {o.reason}" for o in outcomes if o.status == "failed"]
    return lost_work(failed, planned, "samples") if failed else None


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
    concurrency: int | None = None,  # samples in flight per process; None: 3 on a GPU, 1 on a CPU
    work_pool: str | None = None,  # fan shards out to this pool's workers (`kvw deploy --pool`); None: in-process
    shard_size: int = DEFAULT_SHARD_SIZE,  # samples per shard (one task each) when `work_pool` is set
    needle_grid: dict | str | None = None,  # task `needle`: {kinds, lengths, depths, seeds}; None: needle.Grid()
):
    """Extract KV statistics of `model` over LongBench `tasks` (all when empty), `limit` samples each.

    Ends Failed (after writing the run record, the catalog and the summary) when any sample or shard failed."""
    args = dict(locals())  # every parameter, defaults included: what each shard is handed
    check_concurrency(concurrency)
    pooled = bool(work_pool)  # the shards check their own model and device
    check_before_work(output, None if pooled else model, "cpu" if pooled else device, dtype, run_name)
    if work_pool:
        return _fan_out(args)
    log = get_run_logger()
    t0, started = time.perf_counter(), datetime.now(UTC)
    lb = needle.attach(open_longbench(data_dir), needle_grid)
    work = plan(lb, as_list(tasks), limit)
    cfg = _stats_config(window, raw_kv, raw_kv_layers, raw_kv_heads, raw_kv_positions)
    loaded = load_model(model, device, dtype, attn)
    max_tok = effective_max_tokens(loaded, max_tokens)
    run_id = make_run_id(loaded, max_tok, cfg, run_name)
    data_root, db_file = config.locations(output)
    store = Store(data_root)
    store.clean_tmp()
    log.info("run %s: %d samples of %d task(s) from %s into %s", run_id, len(work.samples),
             len({s.task for s in work.samples}), lb.root, store.root)  # fmt: skip

    outcomes = [record_skip(store, run_id, loaded.name, s) for s in work.skips]
    outcomes += extract_all(store, loaded, lb, work.samples, run_id, max_tok, cfg, overwrite,
                            in_flight(concurrency, loaded))  # fmt: skip

    seconds = time.perf_counter() - t0
    parameters = dict(flow_run.parameters) or {"model": model, "tasks": tasks, "limit": limit}
    parameters["max_tokens_effective"] = max_tok
    parameters["data_dir"] = str(lb.root)  # resolved: runs.data_dirs names every folder the run read
    run = write_run(store, loaded, run_id, parameters, started, seconds)
    db = catalog.build(store, db_file)
    create_markdown_artifact(
        summary_markdown(run, outcomes, str(store.root), str(db), seconds, work.warnings),
        key="extract-summary",
        description=f"extract run {run_id}",
    )
    result = {"run_id": run_id, "data": str(store.root), "db": str(db), "samples": run["samples"],
              "tokens": run["tokens"], "skipped": run["skipped"]}  # fmt: skip
    lost = _lost(outcomes, len(work.samples))
    return Failed(message=lost) if lost else result


def _fan_out(p: dict):
    """The parent of a pool run: plan, one child run per shard, wait, then the run record, catalog and summary."""
    log = get_run_logger()
    work_pool, shard_size = p["work_pool"], p["shard_size"]
    t0, started = time.perf_counter(), datetime.now(UTC)
    lb = needle.attach(open_longbench(p["data_dir"]), p["needle_grid"])
    work = plan(lb, as_list(p["tasks"]), p["limit"])
    counts = dict.fromkeys(dict.fromkeys([*(s.task for s in work.samples), *(s.task for s in work.skips)]), 0)
    counts.update(counts_by_task(s.task for s in work.samples))
    shards = make_shards(counts, shard_size)
    data_root, db_file = config.locations(p["output"])
    store = Store(data_root)
    store.clean_tmp()  # before any shard writes: a temp file now is a killed writer's
    log.info("%d samples of %d task(s) in %d shard(s) of <= %d on pool %s", len(work.samples), len(counts),
             len(shards), shard_size, work_pool)  # fmt: skip
    shard_params = {k: v for k, v in p.items() if k not in ("tasks", "work_pool", "shard_size")}
    shard_params["data_dir"] = str(lb.root)
    runs = fanout.run_shards(SHARD_DEPLOYMENT, shards, shard_params)
    store.clean_tmp()  # every shard is final: temp files left now are crashed shards'

    rows = [row for r in runs for row in r.rows]
    lost = fanout.failures(runs)
    message = lost_work(lost, len(runs), "shards") if lost else None
    if not rows:
        raise RuntimeError(message or "no shard reported an outcome")
    run_ids = sorted({row["run_id"] for row in rows})
    if len(run_ids) > 1:  # e.g. workers on different devices resolve dtype=auto differently
        message = f"shards wrote {len(run_ids)} different run ids {run_ids} (mixed devices or dtypes?)" + (
            f"; {message}" if message else "")  # fmt: skip
    meta = SimpleNamespace(**{k: rows[0][k] for k in RUN_META}, name=rows[0]["model"])
    outcomes = [Outcome(*(row[f] for f in OUTCOME_FIELDS)) for row in rows]
    parameters = {**p, "data_dir": str(lb.root), "max_tokens_effective": rows[0]["max_tokens_effective"],
                  "shards": len(runs)}  # fmt: skip
    seconds = time.perf_counter() - t0
    run = write_run(store, meta, run_ids[0], parameters, started, seconds)
    db = catalog.build(store, db_file)
    create_markdown_artifact(
        summary_markdown(run, outcomes, str(store.root), str(db), seconds, work.warnings)
        + fanout.shards_markdown(runs, work_pool),
        key="extract-summary",
        description=f"extract run {run_ids[0]} on pool {work_pool}",
    )
    result = {"run_id": run_ids[0], "data": str(store.root), "db": str(db), "samples": run["samples"],
              "tokens": run["tokens"], "skipped": run["skipped"], "shards": len(runs),
              "failed_shards": len(lost)}  # fmt: skip
    return Failed(message=message) if message else result


OUTCOME_FIELDS = [f.name for f in fields(Outcome)]
RUN_META = ("source", "revision", "dtype", "device", "attn_impl")  # what write_run reads off a loaded model
SHARD_DEPLOYMENT = "extract-shard/longbench"


@flow(name="extract-shard", flow_run_name="{task}[{start}:{stop}]", log_prints=True)
def extract_shard(
    task: str,
    start: int,
    stop: int,
    last: bool = True,
    model: str = models.DEFAULT_MODEL,
    data_dir: str | None = None,
    limit: int | None = 1,
    max_tokens: int = 2048,
    window: int = 32,
    raw_kv: bool = False,
    raw_kv_layers: list[int] | None = None,
    raw_kv_heads: list[int] | None = None,
    raw_kv_positions: int = 256,
    output: str | None = None,
    overwrite: bool = False,
    run_name: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    attn: str = "auto",
    concurrency: int | None = None,
    needle_grid: dict | str | None = None,
):
    """One shard of an `extract` run on a pool worker: samples start..stop-1 of `task` (and the bad records
    among them). Idempotent: done samples are skipped, so a resubmitted shard finishes what is missing."""
    check_concurrency(concurrency)
    check_before_work(output, model, device, dtype, run_name)
    threads = worker.apply_thread_pin()
    log = get_run_logger()
    lb = needle.attach(open_longbench(data_dir), needle_grid)
    shard = Shard(task, start, stop, last)
    samples, skips = owned(list(read_task(lb, task, limit)), shard, lambda item: isinstance(item, Sample))
    cfg = _stats_config(window, raw_kv, raw_kv_layers, raw_kv_heads, raw_kv_positions)
    loaded = load_model(model, device, dtype, attn)
    max_tok = effective_max_tokens(loaded, max_tokens)
    run_id = make_run_id(loaded, max_tok, cfg, run_name)
    store = Store(config.locations(output)[0])
    write_layers(store, loaded, run_id)
    log.info("shard %s of run %s: %d samples, %d bad records, torch threads %s, CUDA_VISIBLE_DEVICES=%r",
             shard.name, run_id, len(samples), len(skips), threads,
             os.environ.get("CUDA_VISIBLE_DEVICES"))  # fmt: skip
    outcomes = [record_skip(store, run_id, loaded.name, s) for s in skips]
    outcomes += extract_all(store, loaded, lb, samples, run_id, max_tok, cfg, overwrite,
                            in_flight(concurrency, loaded))  # fmt: skip
    meta = {k: getattr(loaded, k) for k in RUN_META}
    rows = [{**asdict(o), **meta, "run_id": run_id, "model": loaded.name, "max_tokens_effective": max_tok}
            for o in outcomes]  # fmt: skip
    create_table_artifact(rows, description=fanout.OUTCOMES_KEY)
    lost = _lost(outcomes, len(samples))
    return Failed(message=lost) if lost else {"run_id": run_id, "outcomes": len(outcomes)}
