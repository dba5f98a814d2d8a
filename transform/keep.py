"""Keep-sets in the warehouse: run a policy's SQL over extracted samples and write `keep` rows.

One file per (sample, policy, setting):
`keep/model=M/task=T/run_id=R/<sample_id>.<policy_id>.<setting>.parquet`, one row per
layer, KV head and prompt position with `kept`. A rerun skips finished files
(`overwrite` redoes them). Everything is checked before anything is written: an
unknown setting, a task that was not extracted, or a budget that some sample
cannot hold raises and writes nothing. In the question-agnostic setting the
cache is evicted at the end of the context; the positions after it (the
question) are added afterwards and recorded as kept.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transform.policies import Policy, PolicyError, Stats
from transform.policies.base import read_sql
from transform.settings import SETTINGS, check_setting  # noqa: F401 (SETTINGS re-exported)
from warehouse import schemas
from warehouse.store import Store

log = logging.getLogger(__name__)

BATCH = 8  # samples per SQL run: bounds memory at ~8 x 184k candidate rows for 2K-token prompts


@dataclass(frozen=True, order=True)
class SampleRef:
    """An extracted sample. Functions here accept any object with these attributes
    (e.g. transform.evaluate.SampleInput)."""

    run_id: str
    model: str
    task: str
    sample_id: str
    n_tokens: int
    context_end: int


def cache_len(sample, setting: str) -> int:
    """Positions in the cache when the policy runs: the whole prompt, or up to the end of the context."""
    return sample.context_end if setting == "question_agnostic" else sample.n_tokens


def parts(sample) -> dict[str, str]:
    return {"model": sample.model, "task": sample.task, "run_id": sample.run_id}


def find_samples(
    store: Store, run_id: str | None = None, tasks: list[str] | None = None, limit: int | None = None
) -> list[SampleRef]:
    """Extracted samples of a run (default: the most recently extracted one), `limit` per task."""
    files = store.files("samples")
    if run_id is not None:
        files = [f for f in files if f"run_id={run_id}" in f.parts]
    if not files:
        raise PolicyError(f"no extracted samples{f' for run {run_id}' if run_id else ''} under {store.root}")
    with duckdb.connect() as con:
        rows = (
            con.read_parquet([str(f) for f in files], union_by_name=True)
            .project("run_id, model, task, sample_id, n_tokens, context_end, extracted_at")
            .fetchall()
        )
    if run_id is None:
        run_id = max(rows, key=lambda r: r[6])[0]
        log.info("evicting run %s (the most recently extracted)", run_id)
    refs = sorted(SampleRef(*r[:6]) for r in rows if r[0] == run_id)
    done = sorted({r.task for r in refs})
    missing = [t for t in tasks or [] if t not in done]
    if missing:
        raise PolicyError(f"task(s) {missing} have not been extracted in run {run_id}; extracted: {', '.join(done)}")
    if tasks:
        refs = [r for r in refs if r.task in tasks]
    if limit is not None:
        if limit < 1:
            raise PolicyError(f"limit must be >= 1 (or None for every sample), got {limit}")
        refs = [r for r in refs if sum(o.task == r.task for o in refs[: refs.index(r)]) < limit]
    return refs


def keep_name(ref, policy: Policy, setting: str) -> str:
    return f"{ref.sample_id}.{policy.policy_id}.{setting}"


def register_policy(store: Store, policy: Policy) -> Path:
    """The policy's row in `policies` (name, parameters, budget); written once per policy_id."""
    if store.exists("policies", policy.policy_id, policy_id=policy.policy_id):
        return store.path("policies", policy.policy_id, policy_id=policy.policy_id)
    row = {
        "policy_id": policy.policy_id,
        "name": policy.name,
        "params": json.dumps(policy.params(), sort_keys=True),
        "budget": policy.nominal_budget(),
        "budget_unit": policy.budget_unit,
        "per_head": policy.per_head,
        "created_at": datetime.now(UTC),
    }
    return store.write("policies", pa.Table.from_pylist([row], schema=schemas.POLICIES.schema), policy.policy_id)


def _bind(sql: str, params: dict[str, object]) -> dict[str, object]:
    """Only the parameters the statement uses (DuckDB rejects extra ones); a missing one is a bug."""
    used = set(re.findall(r"\$([A-Za-z_]\w*)", sql))
    missing = used - set(params)
    if missing:
        raise KeyError(f"SQL parameter(s) {sorted(missing)} not bound")
    return {k: v for k, v in params.items() if k in used}


def run_policy_sql(con: duckdb.DuckDBPyConnection, policy: Policy, setting: str) -> pa.Table:
    """The policy over the `src_samples` / `src_stats` relations of `con` -> keep rows (schema of `keep`)."""
    check_setting(setting)
    frame = {"setting": setting, "budget": policy.budget}
    cand = read_sql("keep_candidates")
    con.execute(cand, _bind(cand, frame))
    sql, params = policy.sql(), {**frame, **policy.sql_params()}
    picked = con.sql(sql, params=_bind(sql, params)).to_arrow_table()
    tail_sql = read_sql("keep_tail")
    tail = con.sql(tail_sql, params=_bind(tail_sql, frame)).to_arrow_table()
    rows = pa.concat_tables([picked, tail.cast(picked.schema)])
    n = rows.num_rows
    rows = rows.append_column("policy_id", pa.repeat(pa.scalar(policy.policy_id), n))
    rows = rows.append_column("setting", pa.repeat(pa.scalar(setting), n))
    order = [(c, "ascending") for c in ("run_id", "task", "sample_id", "layer", "kv_head", "position")]
    return rows.sort_by(order).select(schemas.KEEP.columns).cast(schemas.KEEP.schema)


def _sources(con: duckdb.DuckDBPyConnection, store: Store, refs: list) -> None:
    """Views src_samples and src_stats over exactly these samples' files (no glob over the store)."""
    samples = [str(store.path("samples", r.sample_id, **parts(r))) for r in refs]
    stats = [str(store.path("token_stats", r.sample_id, **parts(r))) for r in refs]
    con.read_parquet(samples, union_by_name=True).create_view("src_samples", replace=True)
    rel = con.read_parquet(stats, union_by_name=True)
    if "attn_received_context" not in rel.columns:  # files extracted before the column existed
        rel = rel.project("*, NULL::FLOAT AS attn_received_context")
    rel.create_view("src_stats", replace=True)


def stat_column(need: str, setting: str) -> str:
    if need == "attn":
        return "attn_received_context" if setting == "question_agnostic" else "attn_received"
    return need


def missing_columns(store: Store, ref, policy: Policy, setting: str) -> list[str]:
    """Statistics the policy reads that this sample's token_stats file does not have."""
    names = pq.read_schema(store.path("token_stats", ref.sample_id, **parts(ref))).names
    return [c for c in (stat_column(x, setting) for x in policy.needs) if c not in names]


@dataclass(frozen=True)
class Applied:
    written: int  # keep files written now
    existing: int  # already there (skipped)
    samples: int
    policy_id: str


def apply_policy(
    store: Store,
    policy: Policy,
    setting: str = "question_aware",
    run_id: str | None = None,
    tasks: list[str] | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    refs: list | None = None,
) -> Applied:
    """Write the policy's keep-sets for the chosen samples (all checks first, then the writes).

    `refs`: the samples (SampleRef or alike); default: `find_samples(store, run_id, tasks, limit)`.
    """
    check_setting(setting)
    refs = refs if refs is not None else find_samples(store, run_id, tasks, limit)
    problems = []
    for ref in refs:
        try:
            policy.check(cache_len(ref, setting))
        except PolicyError as err:
            problems.append(f"{ref.task}/{ref.sample_id}: {err}")
        if missing := missing_columns(store, ref, policy, setting):
            problems.append(f"{ref.task}/{ref.sample_id}: token_stats has no {missing} (re-extract with overwrite)")
    if problems:
        shown = problems[:5] + ([f"... and {len(problems) - 5} more"] if len(problems) > 5 else [])
        raise PolicyError(f"{policy.label()} cannot run on {len(problems)} sample(s), nothing written:\n  "
                          + "\n  ".join(shown))  # fmt: skip
    register_policy(store, policy)
    todo = [r for r in refs if overwrite or not store.exists("keep", keep_name(r, policy, setting), **parts(r))]
    con = duckdb.connect()
    try:
        for i in range(0, len(todo), BATCH):
            batch = todo[i : i + BATCH]
            _sources(con, store, batch)
            rows = run_policy_sql(con, policy, setting)
            for ref in batch:
                one = rows.filter(pc.equal(rows["sample_id"], ref.sample_id))
                store.write("keep", one, keep_name(ref, policy, setting))
    finally:
        con.close()
    return Applied(len(todo), len(refs) - len(todo), len(refs), policy.policy_id)


def load_stats(store: Store, ref, setting: str = "question_aware") -> Stats:
    """A sample's statistics as the policy sees them in `setting` (the reference's input)."""
    check_setting(setting)
    cols = ["layer", "kv_head", "position", "key_norm", "value_norm", "attn_received", "attn_received_context"]
    t = pq.read_table(store.path("token_stats", ref.sample_id, **parts(ref)), columns=cols)
    layer, head, pos = (t[c].to_numpy().astype(np.int64) for c in cols[:3])
    L, H, T = layer.max() + 1, head.max() + 1, pos.max() + 1
    n = cache_len(ref, setting)

    def grid(name: str) -> np.ndarray:
        out = np.full((L, H, T), np.nan, dtype=np.float64)
        out[layer, head, pos] = t[name].to_numpy(zero_copy_only=False).astype(np.float64)
        return out[..., :n]

    attn = "attn_received_context" if setting == "question_agnostic" else "attn_received"
    return Stats(grid("key_norm"), grid("value_norm"), grid(attn))


def keep_sets(store: Store, sample, policy: Policy | str, setting: str = "question_aware") -> np.ndarray:
    """Kept positions of the cache at eviction time, read from `keep`: int64 [layers, kv_heads, kept].

    `sample`: anything with run_id, model, task, sample_id, n_tokens and context_end (a SampleRef, or
    transform.evaluate.SampleInput). Positions are sorted per head; every head keeps the same count.
    """
    check_setting(setting)
    policy_id = policy if isinstance(policy, str) else policy.policy_id
    name = f"{sample.sample_id}.{policy_id}.{setting}"
    if not store.exists("keep", name, **parts(sample)):
        where = f"{sample.task}/{sample.sample_id}, policy {policy_id}, {setting}"
        raise PolicyError(f"no keep-set for {where}: apply the policy first (transform.keep.apply_policy)")
    t = store.read("keep", name, **parts(sample))
    n = cache_len(sample, setting)
    t = t.filter(pc.and_(t["kept"], pc.less(t["position"], n)))
    layer, head, pos = (t[c].to_numpy().astype(np.int64) for c in ("layer", "kv_head", "position"))
    L, H = layer.max() + 1, head.max() + 1
    order = np.lexsort((pos, head, layer))
    return pos[order].reshape(L, H, -1)


def parse_params(pairs: list[str]) -> dict[str, object]:
    """`["sink_tokens=4", "per_head=false"]` -> {"sink_tokens": 4, "per_head": False} (JSON values, else text)."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise PolicyError(f"parameter {pair!r} must look like name=value")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out
