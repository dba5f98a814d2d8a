"""Keep-sets at warehouse scale: one SQL pass ranks every selected sample, every budget is a threshold.

`rank(store, policies, settings, samples)` runs, per ranking (a policy's parameters without its budget) and
setting, ONE DuckDB statement over all the selected samples' `token_stats` and writes the result to
`rankings`: per sample (and layer and KV head, unless the policy is shared) the cache positions from most to
least worth keeping. Scores that do not depend on when the cache is evicted (key/value norms, random) are
sorted once for both settings. Files are one per (run, task, ranking, setting) per write, named after the
samples they hold, written atomically; a rerun ranks only the samples still missing, `overwrite` first
removes the samples it redoes from the older files, so no sample is ever in two files.

A budget never reruns anything: the catalog view `keep_sets` (warehouse/views/keep.sql) takes the first k
positions of the ranking after the forced ones, for every policy instance registered in `policies`.
`keep_sets_of` reads those keep-sets back as arrays for the live cache. Everything is checked before
anything is written: an unknown setting, a task that was not extracted, a budget some sample cannot hold.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transform import samples as selection
from transform import settings as settings_mod
from transform.policies import Policy, PolicyError, Stats
from transform.policies.base import PositionPolicy, read_sql
from transform.settings import SETTINGS, cache_len, check_setting  # noqa: F401 (re-exported)
from warehouse import catalog, schemas
from warehouse.store import Store

log = logging.getLogger(__name__)

POSITIONS_PER_FILE = 64_000_000  # ~100 MB of rankings per file: sized for object stores and query planners


def policy_rows(policies: Sequence[Policy]) -> pa.Table:
    """The `policies` rows of these instances: what the keep views need to threshold their rankings."""
    rows = [
        {
            "policy_id": p.policy_id,
            "name": p.name,
            "params": json.dumps(p.params(), sort_keys=True),
            "budget": p.nominal_budget(),
            "budget_unit": p.budget_unit,
            "per_head": p.per_head,
            "created_at": datetime.now(UTC),
            "ranking_id": p.ranking_id,
            "threshold": p.threshold,
            "forced_first": p.forced_first(),
            "forced_last": p.forced_last(),
        }
        for p in policies
    ]
    return pa.Table.from_pylist(rows, schema=schemas.POLICIES.schema)


def register_policies(store: Store, policies: Sequence[Policy]) -> None:
    """Each policy's row in `policies` (written once per policy_id; rows of older versions are completed)."""
    for policy in policies:
        pid = policy.policy_id
        path = store.path("policies", pid, policy_id=pid)
        if path.exists() and "ranking_id" in pq.read_schema(path).names:
            continue
        store.write("policies", policy_rows([policy]), pid)


def _bind(sql: str, params: dict[str, object]) -> dict[str, object]:
    """Only the parameters the statement uses (DuckDB rejects extra ones); a missing one is a bug."""
    used = set(re.findall(r"\$([A-Za-z_]\w*)", sql))
    missing = used - set(params)
    if missing:
        raise KeyError(f"SQL parameter(s) {sorted(missing)} not bound")
    return {k: v for k, v in params.items() if k in used}


def _candidates(cut: str, attn: str) -> str:
    return read_sql("rank_candidates").replace("{cut}", cut).replace("{attn}", attn)


def ranking_statements(policy: Policy, settings: Sequence[str]) -> list[tuple[str, dict, list[str]]]:
    """The SQL that ranks every sample of the `src_samples` / `src_stats` relations for these settings:
    [(statement, bound parameters, settings it yields)]; each statement yields rankings rows (schema of
    `rankings` without ranking_id) with a `setting` column. One statement for both settings when the
    score does not depend on them."""
    wanted = [settings_mod.get(s) for s in settings]
    params = {"budget": policy.budget, **policy.sql_params()}
    body = policy.ranking_sql()
    if getattr(policy, "setting_free", False):
        base = settings_mod.QUESTION_AWARE  # the whole prompt: every setting's cache is a prefix of it
        selects = []
        for s in wanted:
            if s.cut_column == base.cut_column:
                selects.append(f"SELECT b.*, '{s.name}' AS setting FROM base AS b")
            else:
                selects.append(
                    f"SELECT b.* REPLACE (c.{s.cut_column}::INTEGER AS n, "
                    f"list_filter(b.positions, lambda p: p < c.{s.cut_column}) AS positions), '{s.name}' AS setting "
                    "FROM base AS b JOIN src_samples AS c USING (run_id, task, sample_id)"
                )
        sql = (
            f"WITH {_candidates(base.cut_column, 'NULL')},\nbase AS MATERIALIZED (SELECT * FROM (\n{body}\n))\n"
            + "\nUNION ALL\n".join(selects)
        )
        return [(sql, _bind(sql, params), [s.name for s in wanted])]
    out = []
    for s in wanted:
        sql = (
            f"WITH {_candidates(s.cut_column, 't.' + s.attn_column)}\nSELECT *, '{s.name}' AS setting FROM (\n{body}\n)"
        )
        out.append((sql, _bind(sql, params), [s.name]))
    return out


def run_ranking_sql(con: duckdb.DuckDBPyConnection, policy: Policy, settings: Sequence[str]) -> pa.Table:
    """Rank every sample of `con`'s `src_samples` / `src_stats` relations -> rows of `rankings`."""
    for s in settings:
        check_setting(s)
    parts = [_execute(con, sql, params, policy.ranking_id) for sql, params, _ in ranking_statements(policy, settings)]
    return pa.concat_tables(parts)


def _execute(con: duckdb.DuckDBPyConnection, sql: str, params: dict, ranking_id: str) -> pa.Table:
    rows = con.sql(sql, params=params).to_arrow_table()
    rows = rows.append_column("ranking_id", pa.repeat(pa.scalar(ranking_id), rows.num_rows))
    return rows.select(schemas.RANKINGS.columns).cast(schemas.RANKINGS.schema)


def _sources(con: duckdb.DuckDBPyConnection, store: Store, refs: Sequence) -> None:
    """Relations src_samples and src_stats over exactly these samples' files (no glob over the store)."""
    parts = lambda r: {"model": r.model, "task": r.task, "run_id": r.run_id}  # noqa: E731
    samples = [str(store.path("samples", r.sample_id, **parts(r))) for r in refs]
    stats = [str(store.path("token_stats", r.sample_id, **parts(r))) for r in refs]
    con.read_parquet(samples, union_by_name=True).create_view("src_samples", replace=True)
    rel = con.read_parquet(stats, union_by_name=True)
    if "attn_received_context" not in rel.columns:  # files extracted before the column existed
        rel = rel.project("*, NULL::FLOAT AS attn_received_context")
    rel.create_view("src_stats", replace=True)


def missing_columns(store: Store, refs: Sequence, policy: Policy, settings: Sequence[str]) -> list[str]:
    """Statistics the policy reads that some sample's token_stats file does not have (older extractions)."""
    if isinstance(policy, PositionPolicy) or not refs:
        return []
    want = {settings_mod.get(s).stat_column(x) for s in settings for x in policy.needs}
    have: set[str] | None = None
    for r in refs:
        names = set(pq.read_schema(store.path("token_stats", r.sample_id, model=r.model, task=r.task,
                                              run_id=r.run_id)).names)  # fmt: skip
        have = names if have is None else have & names
    return sorted(want - (have or set()))


def check(store: Store, policies: Sequence[Policy], settings: Sequence[str], refs: Sequence) -> None:
    """Raise PolicyError naming every (sample, policy, setting) that cannot run; nothing is written."""
    problems = []
    for setting in settings:
        check_setting(setting)
    for policy in policies:
        for setting in settings:
            for ref in refs:
                try:
                    policy.check(cache_len(ref, setting))
                except PolicyError as err:
                    problems.append(f"{ref.task}/{ref.sample_id} ({setting}): {err}")
        if missing := missing_columns(store, refs, policy, settings):
            problems.append(f"{policy.label()}: token_stats has no {missing} (re-extract with overwrite)")
    if problems:
        shown = problems[:8] + ([f"... and {len(problems) - 8} more"] if len(problems) > 8 else [])
        raise PolicyError(
            f"{len(problems)} (sample, policy, setting) cannot run, nothing written:\n  " + "\n  ".join(shown)
        )


def ranked_samples(store: Store, ranking_id: str, setting: str, run_id: str) -> set[tuple[str, str]]:
    """(task, sample_id) pairs that already have this ranking in this setting."""
    return store.keys(store.files("rankings", prefix=f"{ranking_id}.{setting}.", run_id=run_id), ["task", "sample_id"])


@dataclass(frozen=True)
class Ranked:
    rankings: int  # distinct rankings the policies need
    statements: int  # SQL passes run now (each over every sample that still needed it)
    samples: int  # (sample, ranking, setting) ranked now
    existing: int  # already there (skipped)
    files: int  # files written
    seconds: float


def rank(
    store: Store, policies: Sequence[Policy], settings: Sequence[str], refs: Sequence, overwrite: bool = False
) -> Ranked:
    """Rankings for every policy x setting x sample (all checks first, then one SQL pass per ranking and
    setting over every sample that lacks it), and the policies' rows."""
    t0 = time.perf_counter()
    refs = list(refs)
    check(store, policies, settings, refs)
    register_policies(store, policies)
    by_ranking: dict[str, Policy] = {}
    for p in policies:
        by_ranking.setdefault(p.ranking_id, p)
    runs = sorted({r.run_id for r in refs})
    statements = ranked = existing = files = 0
    con = duckdb.connect()
    try:
        for ranking_id, policy in by_ranking.items():
            todo: dict[str, list] = {}
            for setting in settings:
                done = (
                    set() if overwrite else set().union(*(ranked_samples(store, ranking_id, setting, r) for r in runs))
                )
                todo[setting] = [r for r in refs if (r.task, r.sample_id) not in done]
                existing += len(refs) - len(todo[setting])
            for sql, params, yields in _plan_statements(policy, todo):
                need = {(r.run_id, r.task, r.sample_id): r for s in yields for r in todo[s]}
                _sources(con, store, list(need.values()))
                rows = _execute(con, sql, params, ranking_id)
                statements += 1
                for setting in yields:
                    wanted = {(r.run_id, r.task, r.sample_id) for r in todo[setting]}
                    part = rows.filter(pc.equal(rows["setting"], setting))
                    keys = zip(*(part[c].to_pylist() for c in ("run_id", "task", "sample_id")), strict=True)
                    part = part.filter(pa.array([k in wanted for k in keys], pa.bool_()))
                    files += _write_rankings(store, part, f"{ranking_id}.{setting}", overwrite)
                    ranked += len(wanted)
    finally:
        con.close()
    return Ranked(len(by_ranking), statements, ranked, existing, files, time.perf_counter() - t0)


def _plan_statements(policy: Policy, todo: dict[str, list]) -> list[tuple[str, dict, list[str]]]:
    """The ranking statements for the settings that still have samples to rank."""
    pending = [s for s, refs in todo.items() if refs]
    return ranking_statements(policy, pending) if pending else []


def _write_rankings(store: Store, rows: pa.Table, prefix: str, overwrite: bool) -> int:
    """One file per (run, task) partition of this ranking and setting (more when it is very large)."""
    if not rows.num_rows:
        return 0
    if overwrite:
        for (model, task, run_id), ids in _by_partition(rows).items():
            files = store.files("rankings", prefix=f"{prefix}.", model=model, task=task, run_id=run_id)
            store.drop_keys(files, ["sample_id"], [(i,) for i in ids])
    per_row = max(1, int(pc.mean(pc.list_value_length(rows["positions"])).as_py() or 1))
    key = ["sample_id", "layer", "kv_head"]
    return len(store.write_batch("rankings", rows, prefix, key, POSITIONS_PER_FILE // per_row))


def _by_partition(rows: pa.Table) -> dict[tuple, set[str]]:
    out: dict[tuple, set[str]] = {}
    cols = [rows[c].to_pylist() for c in ("model", "task", "run_id", "sample_id")]
    for model, task, run_id, sid in zip(*cols, strict=True):
        out.setdefault((model, task, run_id), set()).add(sid)
    return out


@dataclass(frozen=True)
class Applied:
    ranked: int  # (sample, setting) ranked now
    existing: int  # already ranked (skipped)
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
    """Make one policy's keep-sets available in the `keep` views for the chosen samples (default: every
    sample of the latest run): rank what is missing, register the policy."""
    check_setting(setting)
    if refs is None:
        refs = find_samples(store, run_id, tasks, limit)
    done = rank(store, [policy], [setting], refs, overwrite)
    return Applied(done.samples, done.existing, len(refs), policy.policy_id)


def find_samples(store: Store, run_id: str | None = None, tasks: list[str] | None = None, limit: int | None = None):
    """The selection (transform.samples.select) over the store's current files."""
    con = catalog.memory(store)
    try:
        return selection.select(con, run_id, tasks, limit)
    finally:
        con.close()


def keep_sets_of(
    con: duckdb.DuckDBPyConnection, sample, policy_ids: Sequence[str], setting: str
) -> dict[str, np.ndarray]:
    """Kept cache positions per policy for one sample, from the `keep_sets` view of `con`: int64
    [layers, kv_heads, kept], sorted per head. A policy without a keep-set for the sample is an error."""
    check_setting(setting)
    rows = con.execute(
        """
        SELECT policy_id, layer, kv_head, kept_positions
        FROM keep_sets
        WHERE run_id = $run AND task = $task AND sample_id = $sid AND setting = $setting
          AND list_contains($ids::VARCHAR[], policy_id)
        ORDER BY policy_id, layer, kv_head
        """,
        {
            "run": sample.run_id,
            "task": sample.task,
            "sid": sample.sample_id,
            "setting": setting,
            "ids": list(policy_ids),
        },  # fmt: skip
    ).fetchall()
    heads: dict[str, list] = {}
    for pid, _layer, _head, kept in rows:
        heads.setdefault(pid, []).append((_layer, _head, kept))
    out = {}
    for pid in policy_ids:
        if pid not in heads:
            where = f"{sample.task}/{sample.sample_id}, policy {pid}, {setting}"
            raise PolicyError(f"no keep-set for {where}: rank the policy first (transform.keep.rank)")
        got = heads[pid]
        L, H = max(g[0] for g in got) + 1, max(g[1] for g in got) + 1
        out[pid] = np.asarray([g[2] for g in got], dtype=np.int64).reshape(L, H, -1)
    return out


def keep_sets(store: Store, sample, policy: Policy | str, setting: str = "question_aware") -> np.ndarray:
    """One policy's kept positions for one sample, int64 [layers, kv_heads, kept] (see keep_sets_of)."""
    pid = policy if isinstance(policy, str) else policy.policy_id
    con = catalog.memory(store)
    try:
        return keep_sets_of(con, sample, [pid], setting)[pid]
    finally:
        con.close()


def load_stats(store: Store, ref, setting: str = "question_aware") -> Stats:
    """A sample's statistics as the policy sees them in `setting` (the reference's input)."""
    s = settings_mod.get(setting)
    cols = ["layer", "kv_head", "position", "key_norm", "value_norm", s.attn_column]
    t = pq.read_table(store.path("token_stats", ref.sample_id, model=ref.model, task=ref.task, run_id=ref.run_id),
                      columns=cols)  # fmt: skip
    layer, head, pos = (t[c].to_numpy().astype(np.int64) for c in cols[:3])
    L, H, T = layer.max() + 1, head.max() + 1, pos.max() + 1
    n = cache_len(ref, setting)

    def grid(name: str) -> np.ndarray:
        out = np.full((L, H, T), np.nan, dtype=np.float64)
        out[layer, head, pos] = t[name].to_numpy(zero_copy_only=False).astype(np.float64)
        return out[..., :n]

    return Stats(grid("key_norm"), grid("value_norm"), grid(s.attn_column))


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
