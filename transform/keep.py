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
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transform import samples as selection
from transform import settings as settings_mod
from transform.policies import Policy, PolicyError, Stats
from transform.policies.base import PositionPolicy, read_sql
from transform.settings import SETTINGS, cache_len, check_setting  # noqa: F401 (re-exported)
from warehouse import catalog, schemas
from warehouse.store import Store

POSITIONS_PER_FILE = 64_000_000  # ~100 MB of rankings per file: sized for object stores and query planners
WRITE_ORDER = ("model", "task", "run_id", "sample_id", "layer", "kv_head")  # partitions, then the file's row order


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
        if (
            store.exists("policies", pid, policy_id=pid)
            and "ranking_id" in store.read_schema(store.path("policies", pid, policy_id=pid)).names
        ):
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


@dataclass(frozen=True)
class Statement:
    """One SQL pass: ranks every sample of `src_samples` / `src_stats` for `setting`. `restricts`: other
    settings whose rankings are this one restricted to their (shorter) cache, written as rows that point at
    it (`positions_from`) instead of a second sort and a second copy of every list."""

    sql: str
    params: dict
    setting: str
    restricts: tuple[str, ...] = ()


def ranking_statements(policy: Policy, settings: Sequence[str]) -> list[Statement]:
    """The SQL passes that rank a policy in these settings: one per setting, or one for all of them when the
    score does not depend on the setting (the whole prompt is ranked; every setting's cache is a prefix)."""
    wanted = [settings_mod.get(s) for s in settings]
    params = {"budget": policy.budget, **policy.sql_params()}
    body = policy.ranking_sql()
    if policy.setting_free:
        base = settings_mod.QUESTION_AWARE
        sql = f"WITH {_candidates(base.cut_column, 'NULL')}\nSELECT * FROM (\n{body}\n)"
        rest = tuple(s.name for s in wanted if s.name != base.name)
        return [Statement(sql, _bind(sql, params), base.name, rest)]
    out = []
    for s in wanted:
        sql = f"WITH {_candidates(s.cut_column, 't.' + s.attn_column)}\nSELECT * FROM (\n{body}\n)"
        out.append(Statement(sql, _bind(sql, params), s.name))
    return out


def run_ranking_sql(con: duckdb.DuckDBPyConnection, policy: Policy, settings: Sequence[str]) -> pa.Table:
    """Rank every sample of `con`'s `src_samples` / `src_stats` relations -> rows of `rankings`."""
    for s in settings:
        check_setting(s)
    samples = con.sql("SELECT run_id, task, sample_id, n_tokens, context_end FROM src_samples").fetchall()
    cuts = {tuple(r[:3]): (r[3], r[4]) for r in samples}
    parts = []
    for st in ranking_statements(policy, settings):
        rows = _execute(con, st, policy.ranking_id)
        parts += [rows] + [_restricted(rows, s, cuts) for s in st.restricts]
    return pa.concat_tables(parts)


def _execute(con: duckdb.DuckDBPyConnection, st: Statement, ranking_id: str) -> pa.Table:
    """Rows in file order (partitions, sample, layer, head): sorting in DuckDB costs nothing measurable,
    sorting the large position lists in Arrow afterwards costs a copy."""
    rows = con.sql(f"SELECT * FROM (\n{st.sql}\n) ORDER BY {', '.join(WRITE_ORDER)}", params=st.params)
    rows = rows.to_arrow_table()
    n = rows.num_rows
    rows = rows.append_column("ranking_id", pa.repeat(pa.scalar(ranking_id), n))
    rows = rows.append_column("setting", pa.repeat(pa.scalar(st.setting), n))
    rows = rows.append_column("positions_from", pa.nulls(n, pa.string()))
    return rows.select(schemas.RANKINGS.columns).cast(schemas.RANKINGS.schema)


def _restricted(rows: pa.Table, setting: str, cuts: dict[tuple, tuple[int, int]]) -> pa.Table:
    """Rows of `setting` that read `rows`' positions restricted to that setting's cache: no lists of their own."""
    s = settings_mod.get(setting)
    keys = zip(*(rows[c].to_pylist() for c in ("run_id", "task", "sample_id")), strict=True)
    n = [s.cache_len(*cuts[k]) for k in keys]
    base = rows["setting"][0].as_py() if rows.num_rows else None
    out = rows.set_column(rows.schema.get_field_index("n"), "n", pa.array(n, pa.int32()))
    out = out.set_column(
        out.schema.get_field_index("positions"), "positions", pa.nulls(rows.num_rows, pa.list_(pa.int32()))
    )
    out = out.set_column(out.schema.get_field_index("setting"), "setting", pa.repeat(pa.scalar(setting), rows.num_rows))
    return out.set_column(
        out.schema.get_field_index("positions_from"),
        "positions_from",
        pa.repeat(pa.scalar(base, pa.string()), rows.num_rows),
    )


def _sources(con: duckdb.DuckDBPyConnection, store: Store, refs: Sequence) -> None:
    """Relations src_samples and src_stats over exactly these samples' files (no glob over the store), with
    `sample_key` = the sample's place in the list (DuckDB's file_index: both lists are in the same order)."""
    parts = lambda r: {"model": r.model, "task": r.task, "run_id": r.run_id}  # noqa: E731
    samples = [str(store.path("samples", r.sample_id, **parts(r))) for r in refs]
    stats = [str(store.path("token_stats", r.sample_id, **parts(r))) for r in refs]
    con.read_parquet(samples, union_by_name=True).project("*, file_index AS sample_key").create_view(
        "src_samples", replace=True
    )
    rel = con.read_parquet(stats, union_by_name=True)
    if "attn_received_context" not in rel.columns:  # files extracted before the column existed
        rel = rel.project("*, NULL::FLOAT AS attn_received_context")
    rel.project("*, file_index AS sample_key").create_view("src_stats", replace=True)


def register_sources(con: duckdb.DuckDBPyConnection, samples: pa.Table, stats: pa.Table) -> None:
    """src_samples and src_stats from in-memory tables (tests, notebooks), keyed as `_sources` keys files."""
    triples = lambda t: zip(*(t[c].to_pylist() for c in ("run_id", "task", "sample_id")), strict=True)  # noqa: E731
    keys = {k: i for i, k in enumerate(triples(samples))}
    con.register("src_samples", samples.append_column("sample_key", pa.array([keys[k] for k in triples(samples)])))
    con.register("src_stats", stats.append_column("sample_key", pa.array([keys[k] for k in triples(stats)])))


def stats_columns(store: Store, refs: Sequence) -> set[str]:
    """The token_stats columns every one of these samples has (older extractions may lack newer ones)."""
    have: set[str] | None = None
    for r in refs:
        path = store.path("token_stats", r.sample_id, model=r.model, task=r.task, run_id=r.run_id)
        names = set(store.read_schema(path).names)
        have = names if have is None else have & names
    return have or set()


def missing_columns(have: set[str], policy: Policy, settings: Sequence[str]) -> list[str]:
    """Statistics the policy reads that are not among `have` (see stats_columns)."""
    if isinstance(policy, PositionPolicy):
        return []
    return sorted({settings_mod.get(s).stat_column(x) for s in settings for x in policy.needs} - have)


def check(store: Store, policies: Sequence[Policy], settings: Sequence[str], refs: Sequence) -> None:
    """Raise PolicyError naming every (sample, policy, setting) that cannot run; nothing is written."""
    problems = []
    for setting in settings:
        check_setting(setting)
    have = stats_columns(store, refs) if any(not isinstance(p, PositionPolicy) for p in policies) and refs else None
    for policy in policies:
        for setting in settings:
            for ref in refs:
                try:
                    policy.check(cache_len(ref, setting))
                except PolicyError as err:
                    problems.append(f"{ref.task}/{ref.sample_id} ({setting}): {err}")
        if have is not None and (missing := missing_columns(have, policy, settings)):
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
    store.clean_tmp("rankings")  # what a killed writer left; never a live writer's
    register_policies(store, policies)
    by_ranking: dict[str, Policy] = {}
    for p in policies:
        by_ranking.setdefault(p.ranking_id, p)
    runs = sorted({r.run_id for r in refs})
    base = settings_mod.QUESTION_AWARE.name  # what a setting-free ranking sorts; the others point at it
    statements = ranked = existing = files = 0
    con = store.connect()
    try:
        for ranking_id, policy in by_ranking.items():
            todo: dict[str, list] = {}
            needed = [base, *settings] if policy.setting_free else list(settings)
            for setting in dict.fromkeys(needed):
                done = (
                    set() if overwrite else set().union(*(ranked_samples(store, ranking_id, setting, r) for r in runs))
                )
                todo[setting] = [r for r in refs if (r.task, r.sample_id) not in done]
                existing += len(refs) - len(todo[setting])
            for st in _plan_statements(policy, todo):
                yields = [st.setting, *st.restricts]
                need = {(r.run_id, r.task, r.sample_id): r for s in yields for r in todo[s]}
                _sources(con, store, list(need.values()))
                rows = _execute(con, st, ranking_id)
                statements += 1
                cuts = {k: (r.n_tokens, r.context_end) for k, r in need.items()}
                for setting in yields:
                    wanted = {(r.run_id, r.task, r.sample_id) for r in todo[setting]}
                    part = rows if setting == st.setting else _restricted(rows, setting, cuts)
                    part = _only(part, wanted)
                    files += _write_rankings(store, part, f"{ranking_id}.{setting}", overwrite)
                    ranked += len(wanted)
    finally:
        con.close()
    return Ranked(len(by_ranking), statements, ranked, existing, files, time.perf_counter() - t0)


def _plan_statements(policy: Policy, todo: dict[str, list]) -> list[Statement]:
    """The ranking statements that still have samples to rank in one of the settings they yield (a restricted
    setting's samples are sorted with its base; only what is missing is written)."""
    out = ranking_statements(policy, list(todo))
    return [st for st in out if any(todo.get(s) for s in (st.setting, *st.restricts))]


def _only(rows: pa.Table, wanted: set[tuple]) -> pa.Table:
    """The rows of the wanted samples (all of them, usually: then no copy)."""
    triples = zip(*(rows[c].to_pylist() for c in ("run_id", "task", "sample_id")), strict=True)
    keep = [t in wanted for t in triples]
    return rows if all(keep) else rows.filter(pa.array(keep, pa.bool_()))


def _write_rankings(store: Store, rows: pa.Table, prefix: str, overwrite: bool) -> int:
    """One file per (run, task) partition of this ranking and setting (more when it is very large)."""
    if not rows.num_rows:
        return 0
    if overwrite:
        store.drop_rewritten("rankings", rows, ["sample_id"], prefix=f"{prefix}.")
    per_row = max(1, int(pc.mean(pc.list_value_length(rows["positions"])).as_py() or 1))
    key = ["sample_id", "layer", "kv_head"]
    return len(store.write_batch("rankings", rows, prefix, key, POSITIONS_PER_FILE // per_row, presorted=True))


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
        out[pid] = np.sort(np.asarray([g[2] for g in got], dtype=np.int64).reshape(L, H, -1), axis=-1)
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
    t = store.read("token_stats", ref.sample_id, columns=cols, model=ref.model, task=ref.task, run_id=ref.run_id)
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
