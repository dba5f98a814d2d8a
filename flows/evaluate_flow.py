"""Prefect flow `evaluate` (deployment `longbench`): kept-versus-evicted quality of eviction policies.

Orchestration only: resolve the extraction run, check the request (nothing is written when it is wrong),
rank what the policies need (one SQL pass per ranking and setting over every sample), one task per sample
(one prefill serves every policy; rows are written a task's worth at a time), the catalog refresh and a
summary artifact. The work is in transform/evaluate_run.py and transform/evaluate.py. With `work_pool`,
the ranking stays here and the decoding goes out as shards: one `evaluate-shard` child run per task and
range of samples with pending work, each checking its own prompts before it writes.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Failed

from flows import fanout, worker
from flows.params import as_list, check_before_work, retryable
from flows.shards import DEFAULT_SHARD_SIZE, Shard, counts_by_task, lost_work, make_shards
from transform import evaluate_run as er
from transform.evaluate import QualityWriter
from transform.samples import Sample
from warehouse import catalog, config
from warehouse.store import Store


def _run_name() -> str:
    p = flow_run.parameters
    pols = p.get("policies") or ["all"]
    shown = pols if isinstance(pols, str) else ",".join(x if isinstance(x, str) else x.get("name", "?") for x in pols)
    return f"evaluate-{shown[:40]}-{p.get('setting')}-limit{p.get('limit')}"


@task(cache_policy=NO_CACHE)
def make_plan(store: Store, policies, budgets, setting, run_id, model, tasks, limit, overwrite, max_new) -> er.Plan:
    pols, settings = er.parse_policies(policies, budgets), er.parse_settings(setting)
    con = catalog.memory(store)
    try:
        run = er.resolve_run(con, model, run_id)
    finally:
        con.close()
    return er.plan(store, pols, settings, run, tasks, limit, overwrite, max_new)


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=retryable, cache_policy=NO_CACHE)
def load_model(plan: er.Plan, device: str, attn: str = "auto"):
    return er.load_model(plan.run, device, None if attn == "auto" else attn)


@task(cache_policy=NO_CACHE)
def check_prompts(loaded, plan: er.Plan, data_dir: str | None) -> None:
    for note in er.check_prompts(loaded, plan, data_dir):
        get_run_logger().warning(note)


@task(cache_policy=NO_CACHE)
def rank(store: Store, plan: er.Plan, overwrite: bool):
    return er.materialize_keep(store, plan, overwrite)


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=retryable, cache_policy=NO_CACHE,
      task_run_name="{sample.task}/{sample.sample_id}")  # fmt: skip
def evaluate_sample(
    store: Store, loaded, plan: er.Plan, sample: Sample, reader: er.KeepReader, writer: QualityWriter
) -> er.SampleOutcome:
    return er.evaluate_one(store, loaded, plan, sample, reader, writer)


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def flush(writer: QualityWriter) -> int:
    writer.close()
    return writer.files


def evaluate_all(store: Store, loaded, plan: er.Plan, samples: list[Sample], overwrite: bool) -> list[er.SampleOutcome]:
    """One task run per sample (one prefill serves every policy); quality rows are flushed even after an error."""
    log = get_run_logger()
    reader, writer = er.KeepReader(store), QualityWriter(store, overwrite)
    outcomes = []
    try:
        for i, sample in enumerate(samples, 1):
            outcome = evaluate_sample(store, loaded, plan, sample, reader, writer)
            outcomes.append(outcome)
            log.info("[%d/%d] %s/%s: %d evaluated, %d already done, %.1fs", i, len(samples), sample.task,
                     sample.sample_id, outcome.evaluated, outcome.existing, outcome.seconds)  # fmt: skip
    finally:
        log.info("quality: %d file(s)", flush(writer))
        reader.close()
    return outcomes


def _all_done(plan: er.Plan, samples: list[Sample]) -> list[er.SampleOutcome]:
    n = len(plan.policies) * len(plan.settings)
    return [er.SampleOutcome(s.task, s.sample_id, 0, n - len(plan.todo.get(s.sample_id, [])), 0.0) for s in samples]


@flow(name="evaluate", flow_run_name=_run_name, log_prints=True)
def evaluate(
    policies: list | str | None = None,  # names or JSON specs; default: er.DEFAULT_POLICIES (all 7)
    budgets: list[float] | str | None = er.DEFAULT_BUDGETS,  # tokens (>= 1) or shares (< 1); a spec's own wins
    setting: str = "both",  # question_aware | question_agnostic | both
    run_id: str | None = None,  # default: the latest extraction run of `model`
    model: str | None = None,  # default: the run's model (the default model when run_id is empty)
    tasks: list[str] | str | None = None,
    limit: int | None = 1,
    overwrite: bool = False,
    max_new_tokens: int | None = None,  # cap on LongBench's per-task answer length (quick looks)
    data_dir: str | None = None,  # LongBench folder; default: the run's
    output: str | None = None,  # a folder holding data/ and kv.duckdb; default warehouse/
    device: str = "auto",
    attn: str = "auto",  # attention implementation; auto: the one the extraction ran (runs.attn_impl)
    work_pool: str | None = None,  # fan shards out to this pool's workers (`kvw deploy --pool`); None: in-process
    shard_size: int = DEFAULT_SHARD_SIZE,  # samples per shard (one task each) when `work_pool` is set
):
    """Evaluate eviction `policies` (names or JSON specs) x `budgets` on extracted samples of a run.

    Rankings are computed here, one SQL pass per ranking over every sample; with a `work_pool` the
    decoding is fanned out by shard, and the run ends Failed (after its summary) when a shard failed."""
    check_before_work(output, None, "cpu" if work_pool else device)  # the model is the run's: checked at load
    log = get_run_logger()
    t0 = time.perf_counter()
    data_root, db_file = config.locations(output)
    store = Store(data_root)
    store.clean_tmp()
    policies = policies if policies is not None else list(er.DEFAULT_POLICIES)
    budgets = [float(b) for b in as_list(list(budgets) if isinstance(budgets, tuple) else budgets) or []]
    plan = make_plan(store, policies, budgets, setting, run_id, model, as_list(tasks), limit, overwrite, max_new_tokens)
    log.info(
        "run %s: %d sample(s) x %d policies x %d setting(s), %d pending",
        plan.run.run_id,
        len(plan.samples),
        len(plan.policies),
        len(plan.settings),
        plan.pending,
    )
    outcomes, message, shards_md = _all_done(plan, plan.samples), None, ""
    if plan.pending:
        loaded = None
        if not work_pool:  # with a pool, each shard checks its prompts before it writes quality rows
            loaded = load_model(plan, device, attn)
            check_prompts(loaded, plan, data_dir)
        ranked = rank(store, plan, overwrite)
        log.info("ranked %d (sample, ranking, setting) in %d SQL pass(es), %.1fs", ranked.samples,
                 ranked.statements, ranked.seconds)  # fmt: skip
        if work_pool:
            shard_params = dict(policies=policies, budgets=budgets, setting=setting, run_id=plan.run.run_id,
                                limit=limit, overwrite=overwrite, max_new_tokens=max_new_tokens, data_dir=data_dir,
                                output=output, device=device, attn=attn)  # fmt: skip
            # overwrite rewrites a task's older files: one shard per task, so no two shards rewrite the same file
            size = max(len(plan.samples), 1) if overwrite else shard_size
            shards = [s for s in make_shards(counts_by_task(s.task for s in plan.samples), size)
                      if any(plan.todo[x.sample_id] for x in _slice(plan, s))]  # fmt: skip
            log.info("%d shard(s) with pending work on pool %s", len(shards), work_pool)
            runs = fanout.run_shards(SHARD_DEPLOYMENT, shards, shard_params)
            store.clean_tmp()  # every shard is final: temp files left now are crashed shards'
            done = {(row["task"], row["sample_id"]): er.SampleOutcome(**row) for r in runs for row in r.rows}
            outcomes = [done.get((o.task, o.sample_id), o) for o in outcomes]
            lost = fanout.failures(runs)
            message = lost_work(lost, len(runs), "shards") if lost else None
            shards_md = fanout.shards_markdown(runs, work_pool)
        else:
            outcomes = evaluate_all(store, loaded, plan, plan.samples, overwrite)
    db = catalog.build(store, db_file)
    seconds = time.perf_counter() - t0
    create_markdown_artifact(
        er.summary_markdown(store, plan, outcomes, str(db), seconds) + shards_md,
        key="evaluate-summary",
        description=f"evaluate run {plan.run.run_id}",
    )
    result = {
        "run_id": plan.run.run_id,
        "policies": [p.policy_id for p in plan.policies],
        "evaluated": sum(o.evaluated for o in outcomes),
        "existing": sum(o.existing for o in outcomes),
        "db": str(db),
    }
    return Failed(message=message) if message else result


SHARD_DEPLOYMENT = "evaluate-shard/longbench"


def _slice(plan: er.Plan, shard: Shard) -> list[Sample]:
    """The shard's samples: positions start..stop-1 among its task's samples in the plan (their selection order)."""
    return [s for s in plan.samples if s.task == shard.task][shard.start : shard.stop]


@flow(name="evaluate-shard", flow_run_name="{task}[{start}:{stop}]", log_prints=True)
def evaluate_shard(
    task: str,
    start: int,
    stop: int,
    run_id: str,
    last: bool = True,
    policies: list | str | None = None,
    budgets: list[float] | str | None = er.DEFAULT_BUDGETS,
    setting: str = "both",
    limit: int | None = 1,
    overwrite: bool = False,
    max_new_tokens: int | None = None,
    data_dir: str | None = None,
    output: str | None = None,
    device: str = "auto",
    attn: str = "auto",
):
    """One shard of an `evaluate` run on a pool worker: decode samples start..stop-1 of `task` under every
    policy. Idempotent: finished (sample, policy, setting) rows are skipped, so a resubmitted shard finishes
    what is missing; its rankings were written by the parent (any missing one is ranked here)."""
    check_before_work(output, None, device)
    threads = worker.apply_thread_pin()
    log = get_run_logger()
    store = Store(config.locations(output)[0])
    policies = policies if policies is not None else list(er.DEFAULT_POLICIES)
    budgets = [float(b) for b in as_list(list(budgets) if isinstance(budgets, tuple) else budgets) or []]
    full = make_plan(store, policies, budgets, setting, run_id, None, [task], limit, overwrite, max_new_tokens)
    mine = _slice(full, Shard(task, start, stop, last))
    plan = er.Plan(full.run, mine, full.policies, full.settings, {s.sample_id: full.todo[s.sample_id] for s in mine})
    log.info("shard %s of run %s: %d sample(s), %d pending, torch threads %s, CUDA_VISIBLE_DEVICES=%r",
             f"{task}[{start}:{stop}]", run_id, len(mine), plan.pending, threads,
             os.environ.get("CUDA_VISIBLE_DEVICES"))  # fmt: skip
    outcomes = _all_done(plan, mine)
    if plan.pending:
        loaded = load_model(plan, device, attn)
        check_prompts(loaded, plan, data_dir)
        rank(store, plan, False)  # the parent ranked: this only fills what is missing
        outcomes = evaluate_all(store, loaded, plan, mine, overwrite)
    create_table_artifact([asdict(o) for o in outcomes], description=fanout.OUTCOMES_KEY)
    return {"run_id": run_id, "evaluated": sum(o.evaluated for o in outcomes)}
