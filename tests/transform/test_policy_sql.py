"""Property test: every policy's SQL transform keeps exactly what its Python reference keeps.

1,200 random cases (policy, parameters, budget, setting, 1-3 samples of random length and
shape) run through DuckDB: the ranking statement, then the catalog's own `keep` view
(warehouse/views/keep.sql) thresholding it, for the drawn budget and for other budgets that share
the ranking (a budget sweep ranks once). Each sample's keep-set must equal the reference for every
layer, head and position. Statistics are drawn coarse on purpose, so ties are common and the
tie-break is tested too.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from transform.keep import SETTINGS, policy_rows, ranking_statements, register_sources, run_ranking_sql
from transform.policies import PolicyError, Stats, make, names
from warehouse.catalog import VIEWS_DIR

CASES = 1200


def random_params(rng: np.random.Generator, name: str, n: int) -> dict:
    """Parameters for `name` around the length n (some out of range: those cases are redrawn)."""
    small = lambda hi: int(rng.integers(0, max(1, hi)))  # noqa: E731
    budget = [None, int(rng.integers(1, n + 1)), float(rng.choice([0.05, 0.1, 0.25, 0.5, 0.7, 0.99]))][
        rng.integers(0, 3)
    ]
    if name == "sink_recent":
        return dict(budget=budget, sink_tokens=small(n // 2 + 2), recent_tokens=small(n // 2 + 2) + (budget is None))
    if name == "sink_recent_uniform":
        block_n = int(rng.choice([1, 2, 3, 5, 8, 16, 128]))
        p = dict(sink_tokens=small(n // 3 + 2), recent_tokens=small(n // 3 + 2), block_n=block_n)
        mode = rng.integers(0, 3)
        if mode == 0:
            p["uniform_stride"] = int(rng.integers(1, 6))
        elif mode == 1:
            p["middle_budget_tokens"] = small(n)
        elif budget is not None:
            p["budget"] = budget
        return p
    p = dict(budget=budget if budget is not None else float(rng.choice([0.2, 0.5])), per_head=bool(rng.integers(0, 2)))
    p["sink_tokens"] = small(4) if rng.random() < 0.5 else 0
    if name == "snapkv":
        p.update(window=int(rng.integers(0, 12)), kernel_size=int(rng.choice([1, 3, 5, 7, 9])))
    else:
        p["recent_tokens"] = small(6) if rng.random() < 0.5 else 0
    if name == "random":
        p["seed"] = int(rng.integers(0, 2**31))
    return p


def coarse(rng: np.random.Generator, shape, levels: int) -> np.ndarray:
    """Values on a coarse grid (ties!), exact in float16 and float32."""
    return (rng.integers(0, levels, size=shape) / 8).astype(np.float32)


def random_sample(rng: np.random.Generator, i: int, L: int, H: int, n_tokens: int) -> tuple[dict, dict]:
    context_end = int(rng.integers(1, n_tokens + 1))
    shape = (L, H, n_tokens)
    attn = coarse(rng, shape, 40) if rng.random() < 0.5 else rng.random(shape).astype(np.float32)
    attn_ctx = coarse(rng, shape, 40)
    attn_ctx[..., context_end:] = np.nan
    layer, head, pos = (a.reshape(-1) for a in np.meshgrid(range(L), range(H), range(n_tokens), indexing="ij"))
    key = {"run_id": "r", "model": "m", "task": "t", "sample_id": f"s{i}"}
    stats = {
        **{c: [v] * layer.size for c, v in key.items()},
        "layer": layer.astype(np.int16),
        "kv_head": head.astype(np.int16),
        "position": pos.astype(np.int32),
        "key_norm": coarse(rng, shape, 30).reshape(-1),  # float16 in the store; DuckDB reads it as FLOAT
        "value_norm": coarse(rng, shape, 30).reshape(-1),
        "attn_received": attn.reshape(-1),
        "attn_received_context": pa.array(attn_ctx.reshape(-1), mask=np.isnan(attn_ctx.reshape(-1))),
    }
    sample = {**key, "n_tokens": n_tokens, "context_end": context_end}
    return sample, stats


def as_stats(cols: dict, n_tokens: int, L: int, H: int, n: int, setting: str) -> Stats:
    grid = lambda c: np.asarray(cols[c], dtype=np.float64).reshape(L, H, n_tokens)[..., :n]  # noqa: E731
    attn = "attn_received_context" if setting == "question_agnostic" else "attn_received"
    a = cols[attn].to_numpy(zero_copy_only=False) if isinstance(cols[attn], pa.Array) else cols[attn]
    return Stats(grid("key_norm"), grid("value_norm"), np.asarray(a, np.float64).reshape(L, H, n_tokens)[..., :n])


def keep_rows(con, policies, setting: str, samples) -> pa.Table:
    """The catalog's `keep` view over rankings computed for these policies (one ranking per ranking_id)."""
    rankings = {p.ranking_id: run_ranking_sql(con, p, [setting]) for p in policies}
    grid = pa.concat_tables(
        [pa.table(c).select(["run_id", "task", "sample_id", "layer", "kv_head"]) for _, c in samples]
    )
    con.register("rankings", pa.concat_tables(rankings.values()))
    con.register("policies", policy_rows(policies))
    con.register("samples", pa.Table.from_pylist([s for s, _ in samples]))  # no sample_key: as in the store
    con.register("layer_stats", grid.group_by(grid.column_names).aggregate([]))
    con.execute((VIEWS_DIR / "keep.sql").read_text())
    return con.sql("SELECT * FROM keep").to_arrow_table()


def siblings(policy, rng: np.random.Generator, n_min: int) -> list:
    """Other budgets of the same policy that share its ranking (a sweep ranks once)."""
    if policy.threshold != "budget":
        return []
    out = []
    for b in (int(rng.integers(1, n_min + 1)), float(rng.choice([0.1, 0.3, 0.6, 0.9]))):
        try:
            other = make(policy.name, **{**policy.params(), "budget": b})
        except PolicyError:
            continue
        assert other.ranking_id == policy.ranking_id
        out.append(other)
    return out


def draw_case(rng: np.random.Generator):
    """A policy and 1-3 samples it can run on, or None (out-of-range parameters: redraw)."""
    name = str(rng.choice(names()))
    L, H = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    long = name.startswith("sink_recent") and rng.random() < 0.3
    lengths = [int(rng.integers(1, 3000 if long else 160)) for _ in range(int(rng.integers(1, 4)))]
    setting = str(rng.choice(SETTINGS))
    if long:
        L = H = 1
    try:
        policy = make(name, **random_params(rng, name, min(lengths)))
    except PolicyError:
        return None
    samples = [random_sample(rng, i, L, H, n) for i, n in enumerate(lengths)]
    for sample, _ in samples:
        try:
            policy.check(sample["context_end"] if setting == "question_agnostic" else sample["n_tokens"])
        except PolicyError:
            return None
    return policy, setting, L, H, samples


@pytest.mark.slow  # 130 s on the 2-core machine
def test_sql_and_reference_keep_the_same_tokens():
    rng = np.random.default_rng(20261127)
    con = duckdb.connect()
    done, per_policy, shared, evicting = 0, {}, 0, {}
    while done < CASES:
        case = draw_case(rng)
        if case is None:
            continue
        policy, setting, L, H, samples = case
        register_sources(
            con, pa.Table.from_pylist([s for s, _ in samples]), pa.concat_tables([pa.table(c) for _, c in samples])
        )
        cut_column = "context_end" if setting == "question_agnostic" else "n_tokens"
        cut = lambda s, c=cut_column: s[c]  # noqa: E731
        fits = []
        for other in [policy, *siblings(policy, rng, min(cut(s) for s, _ in samples))]:
            try:
                for s, _ in samples:
                    other.check(cut(s))
                fits.append(other)
            except PolicyError:
                continue
        fits = list({p.policy_id: p for p in fits}.values())
        rows = keep_rows(con, fits, setting, samples)
        shared += len(fits) - 1
        for p in fits:
            for sample, cols in samples:
                n_tokens, n = sample["n_tokens"], cut(sample)
                expected = p.keep_mask(as_stats(cols, n_tokens, L, H, n, setting))
                if expected.any() and not expected.all():
                    evicting[p.name] = evicting.get(p.name, 0) + 1
                one = rows.filter(
                    pa.compute.and_(
                        pa.compute.and_(
                            pa.compute.equal(rows["sample_id"], sample["sample_id"]),
                            pa.compute.equal(rows["policy_id"], p.policy_id),
                        ),
                        pa.compute.equal(rows["setting"], setting),
                    )
                )
                assert one.num_rows == L * H * n_tokens, "one keep row per (layer, head, position)"
                got = np.zeros((L, H, n_tokens), dtype=bool)
                got[one["layer"].to_numpy(), one["kv_head"].to_numpy(), one["position"].to_numpy()] = one[
                    "kept"
                ].to_numpy(zero_copy_only=False)
                diff = np.argwhere(got[..., :n] != expected)
                assert not diff.size, (
                    f"case {done}: {p.label()} {setting} n={n} L={L} H={H}: "
                    f"SQL and reference differ at (layer, head, position) {diff[:5].tolist()}"
                )
                assert got[..., n:].all(), "positions fed after eviction are recorded as kept"
        per_policy[policy.name] = per_policy.get(policy.name, 0) + 1
        done += 1
    assert set(per_policy) == set(names()) and min(per_policy.values()) >= 100, per_policy
    assert shared >= 500, "budgets sharing one ranking were checked too"
    # a keep-all or keep-nothing case compares little: most cases must keep some tokens and evict others
    assert set(evicting) == set(names()) and min(evicting.values()) >= 100, evicting


@pytest.mark.parametrize("setting", SETTINGS)
def test_the_sql_binds_parameters_and_never_pastes_them(setting):
    """The SQL text does not change with parameter values (they are bound); a bad setting is refused."""
    variants = {
        "sink_recent": [dict(sink_tokens=4), dict(budget=100, sink_tokens=8)],
        "sink_recent_uniform": [dict(uniform_stride=2), dict(budget=2000, block_n=64)],
        "snapkv": [dict(budget=64), dict(budget=0.5, window=8, kernel_size=3, sink_tokens=4)],
        "random": [dict(budget=3), dict(budget=0.5, seed=987654)],
    }
    for name in names():
        a, b = variants.get(name, [dict(budget=64), dict(budget=0.5, sink_tokens=1, recent_tokens=2)])
        assert make(name, **a).ranking_sql() == make(name, **b).ranking_sql(), name
    p = make("random", budget=3, seed=987654)
    assert all("987654" not in st.sql for st in ranking_statements(p, SETTINGS))
    rng = np.random.default_rng(0)
    sample, cols = random_sample(rng, 0, 1, 1, 10)
    sample["context_end"] = 10
    con = duckdb.connect()
    register_sources(con, pa.Table.from_pylist([sample]), pa.table(cols))
    rows = keep_rows(con, [p], setting, [(sample, cols)])
    rows = rows.filter(pa.compute.equal(rows["setting"], setting))
    assert rows["kept"].to_numpy(zero_copy_only=False).sum() == 3
    with pytest.raises(PolicyError, match="unknown setting"):
        run_ranking_sql(con, p, ["question_aware'; DROP TABLE cand; --"])


def test_one_ranking_serves_every_budget_and_sink():
    """A score policy's ranking leaves out the budget and the forced positions; a fixed set does not."""
    a, b = make("snapkv", budget=0.1), make("snapkv", budget=512, sink_tokens=4)
    assert a.ranking_id == b.ranking_id and a.policy_id != b.policy_id
    assert make("snapkv", budget=0.1, kernel_size=5).ranking_id != a.ranking_id
    assert make("h2o", budget=0.1, recent_tokens=0).ranking_id == make("h2o", budget=0.5).ranking_id
    assert make("sink_recent", budget=0.1).ranking_id == make("sink_recent", budget=0.5, recent_tokens=3).ranking_id
    assert make("sink_recent").ranking_id != make("sink_recent", recent_tokens=3).ranking_id  # fixed sets
    u1, u2 = make("sink_recent_uniform", budget=0.5), make("sink_recent_uniform", budget=0.6)
    assert u1.threshold == "all" and u1.ranking_id != u2.ranking_id
