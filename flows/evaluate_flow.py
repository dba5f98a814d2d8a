"""Prefect flow `evaluate` (deployment `longbench`): kept-versus-evicted quality of eviction policies.

Orchestration only: resolve the extraction run, check the request (nothing is written when it is wrong),
rank what the policies need (one SQL pass per ranking and setting over every sample), one task per sample
(one prefill serves every policy; rows are written a task's worth at a time), the catalog refresh and a
summary artifact. The work is in transform/evaluate_run.py and transform/evaluate.py.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from extract.longbench import open_longbench
from flows.params import as_list
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


@task(retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE)
def load_model(plan: er.Plan, device: str):
    return er.load_model(plan.run, device)


@task(cache_policy=NO_CACHE)
def check_prompts(loaded, plan: er.Plan, data_dir: str | None) -> None:
    er.check_prompts(loaded, open_longbench(data_dir or plan.run.data_dir), plan)


@task(cache_policy=NO_CACHE)
def rank(store: Store, plan: er.Plan, overwrite: bool):
    return er.materialize_keep(store, plan, overwrite)


@task(retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE, task_run_name="{sample.task}/{sample.sample_id}")
def evaluate_sample(
    store: Store, loaded, plan: er.Plan, sample: Sample, reader: er.KeepReader, writer: QualityWriter
) -> er.SampleOutcome:
    return er.evaluate_one(store, loaded, plan, sample, reader, writer)


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def flush(writer: QualityWriter) -> int:
    writer.close()
    return writer.files


@flow(name="evaluate", flow_run_name=_run_name, log_prints=True)
def evaluate(
    policies: list | str | None = None,  # names or JSON specs; default: er.DEFAULT_POLICIES (all 7)
    budgets: list[float] | str | None = (0.25, 0.5),  # tokens (>= 1) or shares (< 1); a spec's own budget wins
    setting: str = "question_aware",  # question_aware | question_agnostic | both
    run_id: str | None = None,  # default: the latest extraction run of `model`
    model: str | None = None,  # default: the run's model (the default model when run_id is empty)
    tasks: list[str] | str | None = None,
    limit: int | None = 1,
    overwrite: bool = False,
    max_new_tokens: int | None = None,  # cap on LongBench's per-task answer length (quick looks)
    data_dir: str | None = None,  # LongBench folder; default: the run's
    output: str | None = None,  # a folder holding data/ and kv.duckdb; default warehouse/
    device: str = "auto",
) -> dict:
    """Evaluate eviction `policies` (names or JSON specs) x `budgets` on extracted samples of a run."""
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
    outcomes = []
    if plan.pending:
        loaded = load_model(plan, device)
        check_prompts(loaded, plan, data_dir)
        ranked = rank(store, plan, overwrite)
        log.info("ranked %d (sample, ranking, setting) in %d SQL pass(es), %.1fs", ranked.samples,
                 ranked.statements, ranked.seconds)  # fmt: skip
        reader, writer = er.KeepReader(store), QualityWriter(store, overwrite)
        try:
            for i, sample in enumerate(plan.samples, 1):
                outcome = evaluate_sample(store, loaded, plan, sample, reader, writer)
                outcomes.append(outcome)
                log.info("[%d/%d] %s/%s: %d evaluated, %d already done, %.1fs", i, len(plan.samples), sample.task,
                         sample.sample_id, outcome.evaluated, outcome.existing, outcome.seconds)  # fmt: skip
        finally:
            log.info("quality: %d file(s)", flush(writer))
            reader.close()
    else:
        outcomes = [er.SampleOutcome(s.task, s.sample_id, 0, len(plan.policies) * len(plan.settings), 0.0)
                    for s in plan.samples]  # fmt: skip
    db = catalog.build(store, db_file)
    seconds = time.perf_counter() - t0
    create_markdown_artifact(
        er.summary_markdown(store, plan, outcomes, str(db), seconds),
        key="evaluate-summary",
        description=f"evaluate run {plan.run.run_id}",
    )
    return {
        "run_id": plan.run.run_id,
        "policies": [p.policy_id for p in plan.policies],
        "evaluated": sum(o.evaluated for o in outcomes),
        "existing": sum(o.existing for o in outcomes),
        "db": str(db),
    }
