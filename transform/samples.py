"""Which extracted samples a transform works on: the one loader for keep-sets and evaluation.

A selection is a run (default: the one extracted most recently), optionally some tasks, and `limit`
samples per task in LongBench order (file line). Asking for a task the run has not extracted is an
error naming the tasks it has. Token ids (for rebuilding and decoding prompts) are read only on request,
in one query for the whole selection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from transform.policies import PolicyError


class SelectionError(PolicyError):
    """The requested run, tasks or limit select nothing that exists; the message says what does."""


@dataclass(frozen=True)
class Sample:
    """An extracted sample as the warehouse knows it."""

    run_id: str
    model: str
    task: str
    sample_id: str
    source: str  # file:line in LongBench
    n_tokens: int
    context_end: int
    max_new_tokens: int  # LongBench's answer length for the task
    answers: tuple[str, ...]
    all_classes: tuple[str, ...] | None
    token_ids: np.ndarray | None = None  # int64 [n_tokens], from `tokens` (with_tokens=True)
    source_dir: str | None = None  # the LongBench folder it was read from (NULL: extracted before it was recorded)
    source_sha256: str | None = None  # of the record's bytes at extraction


def select(
    con,
    run_id: str | None = None,
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    with_tokens: bool = False,
) -> list[Sample]:
    """Samples of a run over the `samples` (and `tokens`) views of `con`, sorted by task and source line."""
    if limit is not None and limit < 1:
        raise SelectionError(f"limit must be >= 1 (or None for every sample), got {limit}")
    if tasks is not None and (not tasks or any(not str(t).strip() for t in tasks)):  # tasks="": not every task
        raise SelectionError(
            f"empty task name in tasks={list(tasks)!r}: name tasks separated by commas, or leave tasks unset for all"
        )
    if run_id is None:
        row = con.execute("SELECT run_id FROM samples ORDER BY extracted_at DESC NULLS LAST LIMIT 1").fetchone()
        if row is None:
            raise SelectionError("no extracted samples: run `prefect deployment run extract/longbench` first")
        run_id = row[0]
    have = [
        r[0] for r in con.execute("SELECT DISTINCT task FROM samples WHERE run_id = ? ORDER BY 1", [run_id]).fetchall()
    ]
    if not have:
        raise SelectionError(f"no extracted samples for run {run_id}")
    missing = [t for t in tasks or [] if t not in have]
    if missing:
        raise SelectionError(f"task(s) {missing} have not been extracted in run {run_id}; extracted: {', '.join(have)}")
    rows = con.execute(
        """
        SELECT model, task, sample_id, source, n_tokens, context_end, max_new_tokens, answers, all_classes,
               source_dir, source_sha256
        FROM samples
        WHERE run_id = $run AND (len($tasks::VARCHAR[]) = 0 OR list_contains($tasks::VARCHAR[], task))
        QUALIFY row_number() OVER (
            PARTITION BY task ORDER BY try_cast(split_part(source, ':', -1) AS BIGINT) NULLS LAST, source, sample_id
        ) <= coalesce($limit, 2147483647)
        ORDER BY task, try_cast(split_part(source, ':', -1) AS BIGINT) NULLS LAST, source, sample_id
        """,
        {"run": run_id, "tasks": list(tasks or []), "limit": limit},
    ).fetchall()
    out = [
        Sample(
            run_id,
            model,
            task,
            sid,
            source,
            int(n),
            int(ctx),
            int(max_new or 0) or 32,
            tuple(answers or ()),
            tuple(classes) if classes else None,
            source_dir=src_dir,
            source_sha256=sha,
        )  # fmt: skip
        for model, task, sid, source, n, ctx, max_new, answers, classes, src_dir, sha in rows
    ]
    return _with_tokens(con, out) if with_tokens else out


def _with_tokens(con, samples: list[Sample]) -> list[Sample]:
    if not samples:
        return samples
    rows = con.execute(
        """
        SELECT task, sample_id, list(token_id ORDER BY position) AS ids
        FROM tokens
        WHERE run_id = $run AND list_contains($tasks::VARCHAR[], task) AND list_contains($ids::VARCHAR[], sample_id)
        GROUP BY task, sample_id
        """,
        {"run": samples[0].run_id, "tasks": sorted({s.task for s in samples}), "ids": [s.sample_id for s in samples]},
    ).fetchall()
    ids = {(task, sid): np.asarray(tokens, dtype=np.int64) for task, sid, tokens in rows}
    out = []
    for s in samples:
        got = ids.get((s.task, s.sample_id), np.zeros(0, np.int64))
        if len(got) != s.n_tokens:
            raise SelectionError(
                f"{s.task}/{s.sample_id}: the tokens table holds {len(got)} tokens, samples says {s.n_tokens}"
            )
        out.append(replace(s, token_ids=got))
    return out
