"""Kept-versus-evicted quality of one sample: one prefill, then every policy decoded over that one cache.

Per (sample, setting): prefill once and keep the full cache; decode the full-cache answer and the
teacher-forced log-probabilities of the reference answer once; then decode every policy greedily (LongBench's
max_new_tokens for the task) and teacher-force the reference again, all policies as one batch over the shared
cache with a keep mask per row (transform.masked, the default). `decoding="compacted"` instead slices a copy of
the cache per policy and batches copies of equal length (transform.decode_batch): the reference the masked
path is tested against.
Every (policy, setting) becomes one `quality` row: LongBench score evicted vs full, answer NLL evicted
vs full, mean KL(full || evicted) over the reference answer's tokens, tokens and K/V bytes kept, decode time.

`kl_continuation` is the reference-free measure, defined for every sample: the full cache's own greedy
answer (prediction_full's tokens, EOS included, `continuation_tokens` of them) is teacher-forced through the
full cache and through each evicted cache, and KL(full || evicted) is averaged over its steps. Both KLs are
stored over every step; in question_aware step 0 is the full prefill's distribution under every policy (KL 0
by construction) and the `quality_samples` view averages over the steps after it instead (NULL for one step).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from extract import needle
from extract.longbench import LongBench, read_task
from extract.longbench import Sample as Record
from extract.prompts import build_prompt
from transform import decode, decode_batch, masked, metrics
from transform.evict import evicted_layers, held, kv_bytes, restrict
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
    """The LongBench record a sample was extracted from; where extraction recorded the record's hash, the
    record found must have it (the same _id with other content is other data, not this sample)."""
    generated = sample.task == needle.TASK  # built in: re-created from its id, whatever grid it came from
    for item in [needle.record(lb, sample.sample_id, sample.source)] if generated else read_task(lb, sample.task):
        if isinstance(item, Record) and item.sample_id == sample.sample_id:
            if sample.source_sha256 and item.source_sha256 != sample.source_sha256:
                raise EvaluationError(
                    f"{sample.task}/{sample.sample_id}: the record at {lb.root / 'data'}/{item.source} differs from "
                    f"the one extracted from {sample.source_dir or '?'}/data/{sample.source} (sha256 "
                    f"{item.source_sha256[:12]}… vs {sample.source_sha256[:12]}…): a different LongBench copy or "
                    "edited data; pass the folder it was extracted from as data_dir"
                )
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
    seconds: float  # its share of its batch: (build the batch + feed the rest + greedy decode) / rows in it
    nll: float | None = None  # teacher-forced answer NLL
    kl: float | None = None  # mean KL(reference || this cache) over the answer tokens, when a reference is given
    logprobs: object = None  # torch [m, vocab], kept only when no reference is given (the full cache's)
    tokens: list[int] | None = None  # the greedy tokens (EOS included)
    kl_continuation: float | None = None  # mean KL(reference || this cache) along the reference's continuation
    continuation_logprobs: object = None  # torch [c, vocab] along its own continuation, only without a reference


@dataclass(frozen=True)
class Reference:
    """The full cache's side of every comparison: its answer log-probs, its greedy tokens and their log-probs."""

    answer_logprobs: object  # torch [m, vocab] or None when the sample has no reference answer
    continuation: list[int]  # the full cache's greedy tokens (prediction_full), EOS included
    continuation_logprobs: object  # torch [c, vocab]: teacher-forced along `continuation` through the full cache


FORCED_BYTES = 32 << 20  # logits of the positions teacher-forced per forward (x3 with their log-softmax)


def _force(model, batch: decode_batch.Batch, ids: list[int], each: Callable) -> None:
    """Teacher-force `ids` through a copy of each row of `batch` (a few rows per forward, so the [rows, m, vocab]
    log-probs stay small); `each(row, logprobs [m, vocab])`. `batch` itself is left as it was."""
    vocab = batch.logits.shape[-1]
    step = max(1, FORCED_BYTES // (4 * vocab * len(ids)))
    for j in range(0, len(batch), step):
        part = decode_batch.select(batch, range(j, min(j + step, len(batch))))
        for row, lp in zip(part.rows, decode_batch.answer_logprobs_batch(model, part, ids), strict=True):
            each(row, lp)


DECODINGS = ("masked", "compacted")  # transform.masked (the default) or transform.decode_batch (the reference)


def _batches(model, prefix, keeps, decoding: str) -> list[list[int]]:
    """Indices into `keeps` decoded together: every row at once when masked (as many as memory allows), caches
    of equal length when compacted."""
    if decoding == "compacted":
        return decode_batch.groups(prefix, keeps)
    if decoding != "masked":
        raise EvaluationError(f"unknown decoding {decoding!r}: one of {', '.join(DECODINGS)}")
    step = masked.max_rows(model, prefix)
    return [list(range(j, min(j + step, len(keeps)))) for j in range(0, len(keeps), step)]


def _run(
    model, tokenizer, prefix, keeps, sample, stops, answer, reference: Reference | None = None, decoding="masked"
) -> list[Outcome]:
    """Decode and teacher-force each keep-set (None = the full cache), batched as `decoding` says (_batches).

    Outcomes in `keeps` order. Without a `reference` (the full cache's run) each outcome keeps its answer
    log-probs and its own greedy continuation's; with one, each gets its KLs to the reference: over the
    reference answer, and along the reference's greedy continuation (both teacher-forced the same way).
    """
    out: list[Outcome | None] = [None] * len(keeps)
    min_new = 1 if sample.task == "samsum" else 0
    resume = masked.resume if decoding == "masked" else decode_batch.resume_batch
    for rows in _batches(model, prefix, keeps, decoding):
        t0 = time.perf_counter()
        batch = resume(model, prefix, [keeps[i] for i in rows], rows)
        t1 = time.perf_counter()
        for row in rows:
            out[row] = Outcome("", 0, 0.0)
        if answer:  # teacher forcing first, on copies of a few rows at a time: greedy decoding then consumes `batch`

            def scored(row, lp):
                out[row].nll = decode.nll(lp, answer)
                if reference is None:
                    out[row].logprobs = lp
                else:
                    out[row].kl = decode.mean_kl(reference.answer_logprobs, lp)

            _force(model, batch, answer, scored)
        if reference is not None:
            _force(model, batch, reference.continuation, lambda r, lp: setattr(
                out[r], "kl_continuation", decode.mean_kl(reference.continuation_logprobs, lp)))  # fmt: skip
        along = decode_batch.fork(batch) if reference is None else None  # each row along its own continuation
        t2 = time.perf_counter()
        tokens = decode_batch.greedy_batch(model, batch, sample.max_new_tokens, stops, min_new_tokens=min_new)
        seconds = (time.perf_counter() - t2 + t1 - t0) / len(rows)
        for row, toks in zip(rows, tokens, strict=True):
            got = out[row]
            got.prediction, got.new_tokens, got.seconds, got.tokens = (
                tokenizer.decode(toks, skip_special_tokens=True), len(toks), seconds, toks)  # fmt: skip
        if along is not None:
            for i, row in enumerate(rows):
                _force(model, decode_batch.select(along, [i]), out[row].tokens,
                       lambda r, lp: setattr(out[r], "continuation_logprobs", lp))  # fmt: skip
    return out


def evaluate_sample(
    loaded,
    sample: Sample,
    policies: Sequence[PolicyRef],
    settings: Sequence[str],
    keep_for: KeepFor,
    decoding: str = "masked",
) -> pa.Table:
    """Quality rows of one sample for every (policy, setting): one prefill per setting serves every policy."""
    model, tok = loaded.model, loaded.tokenizer
    stops, answer = stop_ids(tok, model, sample.task), answer_ids(tok, sample)
    metric = metrics.metric_name(sample.task)
    rows = []
    for setting in settings:
        horizon = sample.n_tokens + sample.max_new_tokens  # the farthest position decoding or forcing reaches
        prefix = decode.prefill(model, sample.token_ids, setting, sample.context_end, horizon)
        _, H, _, D = prefix.cache.layers[0].keys.shape
        elsize = prefix.cache.layers[0].keys.element_size()
        rest = sample.n_tokens - prefix.length
        bytes_full = kv_bytes(1, H, sum(held(prefix.cache, None, horizon, rest)), D, elsize)
        n_evicted = sum(evicted_layers(prefix.cache, horizon))
        (full,) = _run(model, tok, prefix, [None], sample, stops, answer, decoding=decoding)
        reference = Reference(full.logprobs, full.tokens, full.continuation_logprobs)
        score_full = metrics.score(sample.task, full.prediction, sample.answers, sample.all_classes)
        keeps = [keep_for(sample, policy, setting) for policy in policies]
        # a keep-set that keeps every prefix position is the full cache: its outcome, KLs exactly 0
        whole = [restrict(k, prefix.length).shape[2] == prefix.length for k in keeps]
        runs = iter(_run(model, tok, prefix, [k for k, w in zip(keeps, whole, strict=True) if not w], sample, stops,
                         answer, reference, decoding))  # fmt: skip
        same = replace(full, kl=0.0 if answer else None, kl_continuation=0.0, logprobs=None, continuation_logprobs=None)
        outcomes = [same if w else next(runs) for w in whole]
        for policy, keep, got in zip(policies, keeps, outcomes, strict=True):
            k = restrict(keep, prefix.length).shape[2]
            positions = held(prefix.cache, k, horizon, rest)
            # per head of an evicted layer; where every layer slides past its window, what each layer holds
            kept = k + rest if n_evicted else round(sum(positions) / len(positions))
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
                    "kl_continuation": got.kl_continuation,
                    "continuation_tokens": full.new_tokens,
                    "kept_tokens": kept,
                    "n_tokens": sample.n_tokens,
                    "evicted_layers": n_evicted,
                    "kv_bytes_kept": kv_bytes(1, H, sum(positions), D, elsize),
                    "kv_bytes_full": bytes_full,
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
