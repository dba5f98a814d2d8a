"""An evaluation run: which extracted run, policies, settings and samples; checks first, then keep-sets, then quality.

Everything that can be wrong with the request (unknown policy or parameter, a zero or negative budget, a budget
larger than a sample, a task that was not extracted, a prompt that no longer rebuilds to the extracted tokens)
is found before anything is written. Finished (sample, policy, setting) rows are skipped on rerun, so a killed
evaluation resumes where it stopped. `flows/evaluate_flow.py` calls these steps one by one; `evaluate()` runs
them in-process (CLI, benchmarks, tests).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from extract import model as models
from extract import needle
from extract.longbench import LongBench, LongBenchError, open_longbench
from transform import decode, keep
from transform import samples as selection
from transform.evaluate import (
    EvaluationError,
    PolicyRef,
    QualityWriter,
    check_prompt,
    evaluate_sample,
    evaluated,
)
from transform.policies import REGISTRY, Policy, PolicyError, make, names
from transform.samples import Sample
from warehouse import catalog
from warehouse.store import Store

# Every registered policy, each with the parameters its class gives the default sweep (Policy.sweep).
DEFAULT_POLICIES = tuple(REGISTRY[name].sweep_spec() for name in names())
# The default sweep's budgets (shares of the cache kept): five, denser where policies differ most. The lowest
# leaves sink_recent_uniform's 32 + 64 fixed tokens room in a question_agnostic context of ~700 tokens or more.
DEFAULT_BUDGETS = (0.15, 0.25, 0.35, 0.5, 0.7)


@dataclass(frozen=True)
class RunInfo:
    """The extraction run an evaluation reads: its model (as `extract.model.load` takes it) and prompt budget."""

    run_id: str
    model: str  # slug: the `model` column
    load_as: str  # model argument of the extraction (hub id, path or the default's name)
    max_tokens: int
    data_dir: str | None  # the last LongBench folder the run read; each sample records its own (source_dir)
    dtype: str
    attn_impl: str | None = None  # the attention implementation extraction ran (evaluate loads the same)
    revision: str | None = None  # the weights' revision at extraction: evaluate refuses other weights


def resolve_run(con, model: str | None = None, run_id: str | None = None) -> RunInfo:
    """The given run, else the latest run of `model` (default: the default model)."""
    if run_id is None:
        slug = models.model_slug(model or models.DEFAULT_MODEL)
        row = con.execute(
            "SELECT run_id FROM runs WHERE model = ? ORDER BY finished_at DESC NULLS LAST LIMIT 1", [slug]
        ).fetchone()
        if row is None:
            raise EvaluationError(
                f"no extraction run of model {slug!r}: run `prefect deployment run extract/longbench`"
            )
        run_id = row[0]
    row = con.execute(
        "SELECT model, parameters, dtype, max_tokens_effective, attn_impl, model_revision, model_source FROM runs "
        "WHERE run_id = ?",
        [run_id],
    ).fetchone()
    if row is None:
        known = [r[0] for r in con.execute("SELECT run_id FROM runs ORDER BY finished_at DESC").fetchall()]
        raise EvaluationError(f"unknown run_id {run_id!r}; runs: {', '.join(known) or 'none'}")
    slug, params, dtype, max_tokens, attn_impl, revision, source = row
    params = json.loads(params or "{}")
    if model is not None and models.model_slug(model) != slug:
        raise EvaluationError(f"run {run_id} extracted model {slug!r}, not {models.model_slug(model)!r}")
    max_tokens = max_tokens or params.get("max_tokens_effective") or params.get("max_tokens")  # older runs: JSON
    if not max_tokens:
        raise EvaluationError(f"run {run_id} records no max_tokens: cannot rebuild its prompts")
    # a local model is reloaded from the absolute path extraction recorded, whatever the current folder
    recorded = source if source and not source.startswith("gguf://") else params.get("model")
    return RunInfo(run_id, slug, model or recorded or models.DEFAULT_MODEL, int(max_tokens),
                   params.get("data_dir"), dtype or "auto", attn_impl, revision)  # fmt: skip


def _spec(spec: str | dict) -> tuple[str, dict]:
    if isinstance(spec, dict):
        params = dict(spec)
    elif spec.strip().startswith("{"):
        try:
            params = json.loads(spec)
        except json.JSONDecodeError as err:
            raise PolicyError(f"policy spec {spec!r} is not valid JSON: {err}") from err
    else:
        params = {"name": spec.strip()}
    if not isinstance(params.get("name"), str):
        raise PolicyError(f"policy spec {spec!r} has no name; known policies: {', '.join(names())}")
    return params.pop("name"), params


def _budget(value: float | int | str) -> float | int:
    b = float(value)
    return int(b) if b >= 1 and b == int(b) else b


def parse_policies(specs: Sequence[str | dict] | str | None, budgets: Sequence[float] | None = None) -> list[Policy]:
    """Policy names or JSON specs ({"name": ..., params}), each crossed with `budgets` unless it gives its own."""
    if isinstance(specs, str):
        specs = [specs] if specs.strip().startswith("{") else [s for s in specs.split(",") if s.strip()]
    if not specs:
        raise PolicyError(f"no policies given; known policies: {', '.join(names())}")
    out: dict[str, Policy] = {}
    for spec in specs:
        name, params = _spec(spec)
        if "budget" in params or not budgets:
            made = [make(name, **params)]
        else:
            made = [make(name, **params, budget=_budget(b)) for b in budgets]
        out.update({p.policy_id: p for p in made})
    return list(out.values())


def parse_settings(setting: str | Sequence[str]) -> list[str]:
    """`question_aware`, `question_agnostic`, `both`, or a list of them."""
    items = [setting] if isinstance(setting, str) else list(setting)
    items = [s.strip() for item in items for s in item.split(",") if s.strip()]
    out = list(decode.SETTINGS) if items == ["both"] else items
    for s in out:
        decode.check_setting(s)
    if not out:
        raise decode.SettingError(f"no setting given; use one of {', '.join(decode.SETTINGS)} or both")
    return list(dict.fromkeys(out))


def policy_ref(policy: Policy) -> PolicyRef:
    return PolicyRef(policy.policy_id, policy.label(), policy.nominal_budget())


@dataclass
class Plan:
    run: RunInfo
    samples: list[Sample]
    policies: list[Policy]
    settings: list[str]
    todo: dict[str, list[tuple[Policy, str]]] = field(default_factory=dict)  # sample_id -> pending (policy, setting)
    notes: list[str] = field(default_factory=list)  # what check_prompts could not verify, and why

    @property
    def pending(self) -> int:
        return sum(len(v) for v in self.todo.values())


def plan(
    store: Store,
    policies: Sequence[Policy],
    settings: Sequence[str],
    run: RunInfo,
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    max_new_tokens: int | None = None,
) -> Plan:
    """Samples and pending (policy, setting) pairs; raises, naming every problem, before anything is written.

    `max_new_tokens` caps LongBench's per-task answer length (quick looks; None = LongBench's).
    """
    if max_new_tokens is not None and max_new_tokens < 1:
        raise EvaluationError(f"max_new_tokens must be >= 1 (or None for LongBench's per task), got {max_new_tokens}")
    con = catalog.memory(store)
    try:
        samples = selection.select(con, run.run_id, tasks, limit, with_tokens=True)
    except selection.SelectionError as err:
        raise EvaluationError(str(err)) from err
    finally:
        con.close()
    if max_new_tokens is not None:
        samples = [replace(s, max_new_tokens=min(s.max_new_tokens, max_new_tokens)) for s in samples]
    try:
        keep.check(store, policies, settings, samples)  # the same checks `kvw keep` makes
    except PolicyError as err:
        raise EvaluationError(str(err)) from err
    out = Plan(run, samples, list(policies), list(settings))
    done = set() if overwrite else evaluated(store, run.run_id)
    for s in samples:
        out.todo[s.sample_id] = [
            (p, st) for p in policies for st in settings if (s.task, s.sample_id, p.policy_id, st) not in done
        ]
    return out


def check_prompts(loaded, p: Plan, data_dir: str | None = None) -> list[str]:
    """Every pending sample's prompt, rebuilt from the LongBench folder it was extracted from (`data_dir`
    overrides: the folder moved), must equal its stored tokens; raises before any write. Evaluation itself
    reads only the stored token ids and answers, so where that folder or task file is gone the sample is
    evaluated unverified, and a note (returned, and kept in `p.notes`) says so."""
    books: dict[str | None, LongBench | str] = {}
    notes = []
    for s in p.samples:
        if not p.todo[s.sample_id]:
            continue
        folder = data_dir or s.source_dir or p.run.data_dir
        if folder not in books:
            try:
                books[folder] = open_longbench(folder)
            except LongBenchError as err:
                books[folder] = str(err).split(". ")[0]
        lb = books[folder]
        if isinstance(lb, str):
            notes.append(f"{s.task}/{s.sample_id}: not verified against LongBench ({lb})")
        elif s.task not in lb.tasks and s.task != needle.TASK:  # needle: generated, always checkable
            notes.append(f"{s.task}/{s.sample_id}: not verified against LongBench (no {s.task} in {lb.root})")
        else:
            check_prompt(loaded.tokenizer, lb, s, p.run.max_tokens)
    p.notes[:] = notes
    return notes


def materialize_keep(store: Store, p: Plan, overwrite: bool = False) -> keep.Ranked:
    """Rank what the pending evaluations need: one SQL pass per ranking and setting over every such sample."""
    refs = [s for s in p.samples if p.todo[s.sample_id]]
    pending = {pol.policy_id: pol for s in refs for pol, _ in p.todo[s.sample_id]}
    return keep.rank(store, list(pending.values()), p.settings, refs, overwrite)


class KeepReader:
    """Keep-sets from the catalog's `keep_sets` view for the live cache: one query per (sample, setting)."""

    def __init__(self, store: Store):
        self.con = catalog.memory(store)  # after the rankings are written: a view made earlier would not see them
        self.loaded: tuple[str, str] | None = None  # the (sample_id, setting) of `sets`
        self.sets: dict[str, np.ndarray] = {}

    def __call__(self, sample: Sample, ref: PolicyRef, setting: str) -> np.ndarray:
        assert self.loaded == (sample.sample_id, setting), "load() the sample and setting first"
        return self.sets[ref.policy_id]

    def load(self, sample: Sample, policy_ids: Sequence[str], setting: str) -> None:
        self.sets = keep.keep_sets_of(self.con, sample, policy_ids, setting)
        self.loaded = (sample.sample_id, setting)

    def close(self) -> None:
        self.con.close()


@dataclass(frozen=True)
class SampleOutcome:
    task: str
    sample_id: str
    evaluated: int  # (policy, setting) rows computed now
    existing: int  # already done, skipped
    seconds: float


def evaluate_one(store: Store, loaded, p: Plan, sample: Sample, reader: KeepReader, writer: QualityWriter):
    """Evaluate a sample's pending (policy, setting) pairs: one prefill per setting; rows go to `writer`."""
    t0 = time.perf_counter()
    pending = p.todo.get(sample.sample_id, [])
    existing = len(p.policies) * len(p.settings) - len(pending)
    done = 0
    for setting in p.settings:
        pols = [policy_ref(pol) for pol, st in pending if st == setting]
        if pols:
            reader.load(sample, [x.policy_id for x in pols], setting)
            rows = evaluate_sample(loaded, sample, pols, [setting], reader)
            writer.add(rows)
            done += rows.num_rows
    return SampleOutcome(sample.task, sample.sample_id, done, existing, time.perf_counter() - t0)


def load_model(run: RunInfo, device: str | None = None, attn: str | None = None):
    """The model as extraction loaded it: its dtype and attention implementation (`attn` overrides; a Gemma2
    run extracted with eager is evaluated with eager), and the same weights: a local model whose files changed
    since extraction would decode new weights against old statistics, so it is refused."""
    on_gpu = models.pick_device(device).startswith("cuda")
    if attn is None and not (run.attn_impl and "flash" in run.attn_impl and not on_gpu):
        attn = run.attn_impl  # (a GPU run's flash attention does not exist on a CPU: the model's default there)
    loaded = models.load_cached(run.load_as, device, run.dtype, attn)
    if run.revision and loaded.revision != run.revision:
        raise EvaluationError(
            f"run {run.run_id} was extracted from {run.load_as} at revision {run.revision}; it is now at "
            f"{loaded.revision} (its files changed): extract it again (a new run id) and evaluate that run"
        )
    return loaded


def evaluate(
    store: Store,
    policies: Sequence[str | dict] | str,
    budgets: Sequence[float] | None = None,
    setting: str | Sequence[str] = "question_aware",
    run_id: str | None = None,
    model: str | None = None,
    tasks: Sequence[str] | None = None,
    limit: int | None = 1,
    overwrite: bool = False,
    data_dir: str | None = None,
    device: str | None = None,
    max_new_tokens: int | None = None,
) -> tuple[Plan, list[SampleOutcome]]:
    """The whole evaluation in-process: the same steps the Prefect flow runs."""
    pols, settings = parse_policies(policies, budgets), parse_settings(setting)
    con = catalog.memory(store)
    try:
        run = resolve_run(con, model, run_id)
    finally:
        con.close()
    p = plan(store, pols, settings, run, tasks, limit, overwrite, max_new_tokens)
    loaded = load_model(run, device)
    check_prompts(loaded, p, data_dir)
    materialize_keep(store, p, overwrite)
    reader, writer = KeepReader(store), QualityWriter(store, overwrite)
    try:
        outcomes = [evaluate_one(store, loaded, p, s, reader, writer) for s in p.samples]
    finally:
        writer.close()  # what was evaluated before an error is kept
        reader.close()
    return p, outcomes


def summary_markdown(store: Store, p: Plan, outcomes: Sequence[SampleOutcome], db: str, seconds: float) -> str:
    """The flow's artifact: what was evaluated and the mean quality per policy and setting."""
    con = catalog.memory(store)
    try:
        rows = con.execute(
            """
            SELECT q.policy_id, q.setting, count(*), avg(q.score), avg(q.score_full), avg(q.kl_continuation),
                   count(q.kl_continuation), avg(q.kl), count(q.kl), avg(q.kept_share),
                   sum(q.kv_bytes_full - q.kv_bytes_kept)
            FROM quality_samples AS q  -- the one definition of each measure (NULL where undefined, skipped here)
            WHERE q.run_id = ? AND list_contains(?::VARCHAR[], q.sample_id) AND list_contains(?::VARCHAR[], q.policy_id)
            GROUP BY ALL ORDER BY 2, 1
            """,
            [p.run.run_id, [s.sample_id for s in p.samples], [x.policy_id for x in p.policies]],
        ).fetchall()
    finally:
        con.close()
    labels = {x.policy_id: x.label() for x in p.policies}
    done = sum(o.evaluated for o in outcomes)
    lines = [
        f"# evaluate {p.run.model} — run `{p.run.run_id}`",
        "",
        "| | |",
        "|---|---|",
        f"| samples | {len(p.samples)} |",
        f"| policies x settings | {len(p.policies)} x {len(p.settings)} ({', '.join(p.settings)}) |",
        f"| (sample, policy, setting) evaluated now | {done} |",
        f"| already done (skipped) | {sum(o.existing for o in outcomes)} |",
        f"| wall time | {seconds:.1f} s |",
        f"| DuckDB catalog | `{db}` |",
        "",
        "| policy | setting | samples | score | score (full cache) | continuation KL (n) | answer KL (n) | kept "
        "| K/V bytes saved |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for pid, setting, n, score, full, ckl, n_ckl, kl, n_kl, kept, saved in rows:
        ckl_text = "NULL" if ckl is None else f"{ckl:.4f} ({n_ckl})"
        kl_text = "NULL" if kl is None else f"{kl:.4f} ({n_kl})"
        lines.append(
            f"| {labels.get(pid, pid)} | {setting} | {n} | {score:.1f} | {full:.1f} | {ckl_text} | {kl_text} | "
            f"{kept:.0%} | {saved / 2**20:,.1f} MiB |"
        )
    if p.notes:
        lines += ["", f"## Not verified against LongBench ({len(p.notes)}: evaluated from the stored tokens)", ""]
        lines += [f"- {n}" for n in p.notes[:20]] + ([f"- … {len(p.notes) - 20} more"] if len(p.notes) > 20 else [])
    lines += ["", f"Compare: `kvw compare {' '.join(sorted({x.name for x in p.policies}))}`"]
    return "\n".join(lines) + "\n"
