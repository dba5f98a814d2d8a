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

from extract.longbench import LongBench, read_task
from extract.longbench import Sample as Record
from extract.prompts import build_prompt
from transform import decode, decode_batch, metrics
from transform.evict import kv_bytes, restrict
from transform.samples import Sample
from warehouse import schemas
from warehouse.store import Store


class EvaluationError(ValueError):
    """An evaluation cannot run as asked; the message names the problem."""


@dataclass(frozen=True)
class PolicyRef:
    """A fully specified policy as the quality table records it."""

    policy_id: str
    label: str
    budget: float | None


KeepFor = Callable[[Sample, PolicyRef, str], np.ndarray]  # (sample, policy, setting) -> keep [L, H, K]


def find_record(lb: LongBench, sample: Sample) -> Record:
    """The LongBench record a sample was extracted from."""
    for item in read_task(lb, sample.task):
        if isinstance(item, Record) and item.sample_id == sample.sample_id:
            return item
    raise EvaluationError(f"{sample.task}/{sample.sample_id} ({sample.source}) is not in {lb.root}")


def check_prompt(tokenizer, lb: LongBench, sample: Sample, max_tokens: int) -> None:
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


def answer_ids(tokenizer, sample: Sample) -> list[int]:
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
    loaded, sample: Sample, policies: Sequence[PolicyRef], settings: Sequence[str], keep_for: KeepFor
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


QUALITY_KEY = ["sample_id", "policy_id", "setting"]


def evaluated(store: Store, run_id: str) -> set[tuple[str, str, str, str]]:
    """(task, sample_id, policy_id, setting) already in `quality` for the run: what a rerun skips."""
    return store.keys(store.files("quality", run_id=run_id), ["task", *QUALITY_KEY])


class QualityWriter:
    """Buffers quality rows and writes them as one file per (run, task) partition per flush, not one per row.

    It flushes when the LongBench task changes, when `flush_seconds` have passed since the last flush (a killed
    evaluation loses at most that much work; a rerun redoes it) and on `close()`. With `overwrite`, the keys it
    writes are first removed from older files, so every (sample, policy, setting) is in exactly one file.
    """

    def __init__(self, store: Store, overwrite: bool = False, flush_seconds: float = 600.0):
        self.store, self.overwrite, self.flush_seconds = store, overwrite, flush_seconds
        self.parts: list[pa.Table] = []
        self.task: str | None = None
        self.since = time.monotonic()
        self.rows = self.files = 0

    def add(self, rows: pa.Table) -> None:
        tasks = set(rows["task"].to_pylist())
        if self.parts and (tasks - {self.task} or time.monotonic() - self.since > self.flush_seconds):
            self.flush()
        if rows.num_rows:
            self.parts.append(rows)
            self.task = next(iter(tasks))

    def flush(self) -> None:
        if not self.parts:
            return
        rows = pa.concat_tables(self.parts)
        if self.overwrite:
            self.store.drop_rewritten("quality", rows, QUALITY_KEY)
        self.files += len(self.store.write_batch("quality", rows, "quality", QUALITY_KEY, rows_per_file=500_000))
        self.rows += rows.num_rows
        self.parts, self.since = [], time.monotonic()

    def close(self) -> None:
        self.flush()
