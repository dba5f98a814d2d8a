"""Kept-versus-evicted quality of one sample: one prefill, then every policy on a compacted copy of the cache.

Per (sample, setting): prefill once and keep the full cache; decode the full-cache answer and the
teacher-forced log-probabilities of the reference answer once; then for each policy slice a copy of the cache
to its keep-set, decode greedily (LongBench's max_new_tokens for the task) and teacher-force the reference
again; copies of equal length (policies sharing a budget) decode together as one batch (transform.decode_batch).
Every (policy, setting) becomes one `quality` row: LongBench score evicted vs full, answer NLL evicted
vs full, mean KL(full || evicted) over the answer tokens, tokens and K/V bytes kept, decode time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from extract.longbench import LongBench, Sample, read_task
from extract.prompts import build_prompt
from transform import decode, decode_batch, metrics
from transform.evict import kv_bytes, restrict
from warehouse import schemas
from warehouse.store import Store


class EvaluationError(ValueError):
    """An evaluation cannot run as asked; the message names the problem."""


@dataclass(frozen=True)
class SampleInput:
    """What the warehouse knows about an extracted sample: enough to rebuild and check its prompt."""

    run_id: str
    model: str
    task: str
    sample_id: str
    source: str  # file:line in LongBench
    n_tokens: int
    context_end: int
    max_new_tokens: int
    answers: tuple[str, ...]
    all_classes: tuple[str, ...] | None
    token_ids: np.ndarray  # int64 [n_tokens], from the `tokens` table


@dataclass(frozen=True)
class PolicyRef:
    """A fully specified policy as the quality table records it."""

    policy_id: str
    label: str
    budget: float | None


KeepFor = Callable[[SampleInput, PolicyRef, str], np.ndarray]  # (sample, policy, setting) -> keep [L, H, K]


def store_connection(store: Store):
    """An in-memory DuckDB with one view per table over the store's current files (never a stale catalog)."""
    import duckdb

    from warehouse.catalog import table_sql

    con = duckdb.connect()
    for table in schemas.TABLES.values():
        con.execute(f"CREATE VIEW {table.name} AS {table_sql(store, table)}")
    return con


def load_samples(con, run_id: str, tasks: Sequence[str] | None = None, limit: int | None = None) -> list[SampleInput]:
    """Extracted samples of a run (`limit` per task, in source order) with their token ids.

    A task that was not extracted in the run is an error naming the tasks that were.
    """
    if limit is not None and limit < 1:
        raise EvaluationError(f"limit must be >= 1 (or None for every sample), got {limit}")
    have = [
        r[0] for r in con.execute("SELECT DISTINCT task FROM samples WHERE run_id = ? ORDER BY 1", [run_id]).fetchall()
    ]
    if not have:
        raise EvaluationError(f"run {run_id!r} has no extracted samples")
    missing = [t for t in (tasks or []) if t not in have]
    if missing:
        raise EvaluationError(
            f"task(s) {missing} have not been extracted in run {run_id}; extracted tasks: {', '.join(have)}"
        )
    rows = con.execute(
        """
        SELECT model, task, sample_id, source, n_tokens, context_end, max_new_tokens, answers, all_classes
        FROM samples
        WHERE run_id = ? AND (len(?::VARCHAR[]) = 0 OR list_contains(?::VARCHAR[], task))
        QUALIFY row_number() OVER (PARTITION BY task ORDER BY source, sample_id) <= coalesce(?, 2147483647)
        ORDER BY task, source, sample_id
        """,
        [run_id, list(tasks or []), list(tasks or []), limit],
    ).fetchall()
    out = []
    for model, task, sample_id, source, n, ctx_end, max_new, answers, classes in rows:
        ids = con.execute(
            "SELECT token_id FROM tokens WHERE run_id = ? AND task = ? AND sample_id = ? ORDER BY position",
            [run_id, task, sample_id],
        ).fetchnumpy()["token_id"]
        if len(ids) != n:
            raise EvaluationError(f"{task}/{sample_id}: the tokens table holds {len(ids)} tokens, samples says {n}")
        out.append(
            SampleInput(
                run_id,
                model,
                task,
                sample_id,
                source,
                int(n),
                int(ctx_end),
                int(max_new or 0) or 32,
                tuple(answers or ()),
                tuple(classes) if classes else None,
                np.asarray(ids, dtype=np.int64),
            )
        )
    return out


def find_record(lb: LongBench, sample: SampleInput) -> Sample:
    """The LongBench record a sample was extracted from."""
    for item in read_task(lb, sample.task):
        if isinstance(item, Sample) and item.sample_id == sample.sample_id:
            return item
    raise EvaluationError(f"{sample.task}/{sample.sample_id} ({sample.source}) is not in {lb.root}")


def check_prompt(tokenizer, lb: LongBench, sample: SampleInput, max_tokens: int) -> None:
    """Rebuild the prompt as extraction did; the token ids must equal the run's `tokens` table."""
    prompt = build_prompt(tokenizer, lb.prompts[sample.task], find_record(lb, sample), max_tokens)
    ids = prompt.input_ids
    if len(ids) != len(sample.token_ids) or not np.array_equal(ids, sample.token_ids):
        diff = np.flatnonzero(ids[: len(sample.token_ids)] != sample.token_ids[: len(ids)])
        where = int(diff[0]) if len(diff) else min(len(ids), len(sample.token_ids))
        raise EvaluationError(
            f"{sample.task}/{sample.sample_id}: the rebuilt prompt ({len(ids)} tokens, max_tokens={max_tokens}) "
            f"differs from run {sample.run_id}'s tokens table ({len(sample.token_ids)} tokens) from position "
            f"{where}: different tokenizer, LongBench data or prompt code than at extraction"
        )


def stop_ids(tokenizer, model, task: str) -> frozenset[int]:
    """EOS ids of the tokenizer and generation config; samsum also stops at a newline, as LongBench's pred.py."""
    ids = set()
    for value in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        ids.update(value if isinstance(value, list | tuple) else [value] if value is not None else [])
    if task == "samsum":
        ids.add(tokenizer.encode("\n", add_special_tokens=False)[-1])
    return frozenset(ids)


def answer_ids(tokenizer, sample: SampleInput) -> list[int]:
    """The first reference answer as tokens, capped at the task's max_new_tokens."""
    if not sample.answers:
        return []
    return tokenizer(sample.answers[0], add_special_tokens=False)["input_ids"][: sample.max_new_tokens]


@dataclass
class Outcome:
    """What decoding one cache produced."""

    prediction: str
    new_tokens: int
    seconds: float  # its share of its batch: (evict + feed the rest + greedy decode) / rows decoded together
    nll: float | None = None  # teacher-forced answer NLL
    kl: float | None = None  # mean KL(reference || this cache) over the answer tokens, when a reference is given
    logprobs: object = None  # torch [m, vocab], kept only when no reference is given (the full cache's)


FORCED_ROWS = 2048  # answer positions teacher-forced per forward: bounds the [rows, m, vocab] log-probs in memory


def _run(model, tokenizer, prefix, keeps, sample, stops, answer, reference=None) -> list[Outcome]:
    """Decode and teacher-force each keep-set (None = the full cache), caches of equal length batched together.

    Outcomes in `keeps` order. With a `reference` (the full cache's log-probs) each outcome gets its KL to it.
    """
    out: list[Outcome | None] = [None] * len(keeps)
    min_new = 1 if sample.task == "samsum" else 0
    for rows in decode_batch.groups(prefix, keeps):
        t0 = time.perf_counter()
        batch = decode_batch.resume_batch(model, prefix, [keeps[i] for i in rows], rows)
        forced = decode_batch.fork(batch) if answer else None
        tokens = decode_batch.greedy_batch(model, batch, sample.max_new_tokens, stops, min_new_tokens=min_new)
        seconds = (time.perf_counter() - t0) / len(rows)
        for row, toks in zip(rows, tokens, strict=True):
            out[row] = Outcome(tokenizer.decode(toks, skip_special_tokens=True), len(toks), seconds)
        if not answer:
            continue
        step = max(1, FORCED_ROWS // len(answer))
        for j in range(0, len(rows), step):
            part = forced if step >= len(rows) else decode_batch.select(forced, range(j, min(j + step, len(rows))))
            for row, lp in zip(part.rows, decode_batch.answer_logprobs_batch(model, part, answer), strict=True):
                out[row].nll = decode.nll(lp, answer)
                if reference is None:
                    out[row].logprobs = lp
                else:
                    out[row].kl = decode.mean_kl(reference, lp)
    return out


def evaluate_sample(
    loaded, sample: SampleInput, policies: Sequence[PolicyRef], settings: Sequence[str], keep_for: KeepFor
) -> pa.Table:
    """Quality rows of one sample for every (policy, setting): one prefill per setting serves every policy."""
    model, tok = loaded.model, loaded.tokenizer
    stops, answer = stop_ids(tok, model, sample.task), answer_ids(tok, sample)
    metric = metrics.metric_name(sample.task)
    rows = []
    for setting in settings:
        prefix = decode.prefill(model, sample.token_ids, setting, sample.context_end)
        L = len(prefix.cache.layers)
        _, H, _, D = prefix.cache.layers[0].keys.shape
        elsize = prefix.cache.layers[0].keys.element_size()
        (full,) = _run(model, tok, prefix, [None], sample, stops, answer)
        score_full = metrics.score(sample.task, full.prediction, sample.answers, sample.all_classes)
        keeps = [keep_for(sample, policy, setting) for policy in policies]
        outcomes = _run(model, tok, prefix, keeps, sample, stops, answer, full.logprobs)
        for policy, keep, got in zip(policies, keeps, outcomes, strict=True):
            kept = restrict(keep, prefix.length).shape[2] + (sample.n_tokens - prefix.length)
            rows.append(
                {
                    "run_id": sample.run_id,
                    "model": sample.model,
                    "task": sample.task,
                    "sample_id": sample.sample_id,
                    "policy_id": policy.policy_id,
                    "setting": setting,
                    "budget": policy.budget,
                    "metric": metric,
                    "score": metrics.score(sample.task, got.prediction, sample.answers, sample.all_classes),
                    "score_full": score_full,
                    "answer_nll": got.nll,
                    "answer_nll_full": full.nll,
                    "kl": got.kl,
                    "kept_tokens": kept,
                    "n_tokens": sample.n_tokens,
                    "kv_bytes_kept": kv_bytes(L, H, kept, D, elsize),
                    "kv_bytes_full": kv_bytes(L, H, sample.n_tokens, D, elsize),
                    "decode_seconds": got.seconds,
                    "decode_seconds_full": full.seconds,
                    "prefill_seconds": prefix.seconds,
                    "new_tokens": got.new_tokens,
                    "answer_tokens": len(answer),
                    "prediction": got.prediction,
                    "prediction_full": full.prediction,
                    "evaluated_at": datetime.now(UTC),
                }
            )
    return pa.Table.from_pylist(rows, schema=schemas.QUALITY.schema)


def quality_name(sample_id: str, policy_id: str, setting: str) -> str:
    """One file per (sample, policy, setting): its presence marks that evaluation done."""
    return f"{sample_id}.{policy_id}.{setting}"


def is_done(store: Store, sample: SampleInput, policy_id: str, setting: str) -> bool:
    name = quality_name(sample.sample_id, policy_id, setting)
    return store.exists("quality", name, model=sample.model, task=sample.task, run_id=sample.run_id)


def write_quality(store: Store, table: pa.Table) -> int:
    """Write each row as its own (sample, policy, setting) file; a rerun overwrites, never duplicates."""
    for i in range(table.num_rows):
        row = table.slice(i, 1)
        r = row.to_pylist()[0]
        store.write("quality", row, quality_name(r["sample_id"], r["policy_id"], r["setting"]))
    return table.num_rows
