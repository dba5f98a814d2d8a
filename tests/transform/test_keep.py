"""Keep-sets in the warehouse, on a real extraction (default model, 3 LongBench samples at 512 tokens):
rankings written by one SQL pass per ranking and setting, budgets thresholded by the catalog's views."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from flows.cli import main as kvw
from transform.keep import SETTINGS, apply_policy, find_samples, keep_sets, load_stats, rank
from transform.policies import PolicyError, make, names
from warehouse import catalog
from warehouse.store import Store

pytestmark = pytest.mark.model


@pytest.fixture
def warehouse(small_warehouse, tmp_path):
    """A writable copy of the session's real extraction."""
    shutil.copytree(small_warehouse["store"].root, tmp_path / "data")
    return Store(tmp_path / "data"), tmp_path / "kv.duckdb", small_warehouse["run_id"]


def instances() -> list:
    return [
        make("sink_recent", sink_tokens=4, recent_tokens=60),
        make("sink_recent", budget=0.3, sink_tokens=4),
        make("sink_recent_uniform", sink_tokens=32, recent_tokens=64, uniform_stride=2, block_n=16),
        make("sink_recent_uniform", budget=0.5, sink_tokens=32, recent_tokens=64, block_n=32),
        make("knorm", budget=100),
        make("knorm", budget=0.25, per_head=False, sink_tokens=4),
        make("vnorm", budget=0.4),
        make("h2o", budget=0.25),
        make("snapkv", budget=96),
        make("snapkv", budget=0.5, kernel_size=5, per_head=False),
        make("random", budget=0.25, seed=7),
    ]


def test_sql_keep_sets_in_the_warehouse_equal_the_reference_on_real_samples(warehouse):
    store, _, run_id = warehouse
    refs = find_samples(store, run_id)
    assert [r.task for r in refs] == ["multifieldqa_zh", "qasper", "trec"]
    policies = instances()
    assert {p.name for p in policies} == set(names())
    done = rank(store, policies, SETTINGS, refs)
    rankings = {p.ranking_id: p for p in policies}
    setting_free = sum(p.setting_free for p in rankings.values())
    assert done.rankings == len(rankings) and done.samples == len(rankings) * 2 * 3
    assert done.statements == 2 * len(rankings) - setting_free, "one pass per ranking and setting, one if setting-free"
    assert len(store.files("rankings")) == len(rankings) * 2 * 3, "one file per (task, ranking, setting)"
    for setting in SETTINGS:
        for policy in policies:
            for ref in refs:
                got = keep_sets(store, ref, policy, setting)
                want = policy.keep_token_idx(load_stats(store, ref, setting))
                assert got.shape == want.shape and (got == want).all(), (policy.label(), setting, ref.task)
    # a new budget of a ranked policy is a threshold: nothing is ranked again
    more = [
        make("snapkv", budget=0.3, sink_tokens=2),
        make("knorm", budget=48),
        make("sink_recent", budget=77, sink_tokens=4),
    ]
    again = rank(store, more, SETTINGS, refs)
    assert (again.statements, again.samples, again.existing) == (0, 0, 3 * 2 * 3)
    for policy in more:
        for ref in refs:
            got = keep_sets(store, ref, policy, "question_agnostic")
            assert (got == policy.keep_token_idx(load_stats(store, ref, "question_agnostic"))).all(), policy.label()


def test_apply_writes_one_row_per_position_and_registers_the_policy(warehouse):
    store, db, run_id = warehouse
    policy = make("snapkv", budget=0.25)
    done = apply_policy(store, policy, "question_agnostic", run_id=run_id)
    assert (done.ranked, done.existing, done.samples) == (3, 0, 3)
    catalog.build(store, db)
    con = catalog.connect(db)
    rows = con.execute(
        """
        SELECT k.task, count(*), count(DISTINCT (k.layer, k.kv_head)), any_value(s.n_tokens), any_value(s.context_end),
               count(*) FILTER (WHERE k.kept AND k.position < s.context_end) / count(DISTINCT (k.layer, k.kv_head)),
               bool_and(k.kept) FILTER (WHERE k.position >= s.context_end)
        FROM keep AS k JOIN samples AS s USING (run_id, task, sample_id)
        WHERE k.policy_id = ? AND k.setting = 'question_agnostic'
        GROUP BY k.task ORDER BY k.task
        """,
        [policy.policy_id],
    ).fetchall()
    assert len(rows) == 3
    for task, n_rows, heads, n_tokens, context_end, kept_per_head, tail_kept in rows:
        assert heads == 30 * 3 and n_rows == heads * n_tokens, task
        assert kept_per_head == max(1, int(np.floor(0.25 * context_end + 0.5))), task
        assert tail_kept in (True, None), "the question, fed after eviction, is in the final cache"
    (name, params, budget, unit, per_head, ranking_id, threshold, first, last) = con.execute(
        "SELECT name, params, budget, budget_unit, per_head, ranking_id, threshold, forced_first, forced_last "
        "FROM policies WHERE policy_id = ?",
        [policy.policy_id],
    ).fetchone()
    assert (name, budget, unit, per_head) == ("snapkv", 0.25, "ratio", True)
    assert (ranking_id, threshold, first, last) == (policy.ranking_id, "budget", 0, 32)
    assert json.loads(params) == policy.params()
    mass = con.execute(
        "SELECT min(attn_mass_kept), max(attn_mass_kept), avg(kept_share) FROM keep_mass WHERE policy = 'snapkv'"
    ).fetchone()
    assert 0 < mass[0] <= mass[1] <= 1 and 0.25 < mass[2] < 1
    n_rows = con.execute("SELECT count(*) FROM rankings").fetchone()[0]
    con.close()
    assert n_rows == 3 * 30 * 3

    again = apply_policy(store, policy, "question_agnostic", run_id=run_id)
    assert (again.ranked, again.existing) == (0, 3)
    files = store.files("rankings")
    assert apply_policy(store, policy, "question_agnostic", run_id=run_id, overwrite=True).ranked == 3
    assert store.files("rankings") == files and len(store.files("policies")) == 1
    con = catalog.connect(catalog.build(store, db))
    assert con.execute("SELECT count(*) FROM rankings").fetchone()[0] == n_rows, "overwrite never duplicates"
    con.close()


def test_attention_policies_keep_more_attention_than_random(warehouse):
    store, db, run_id = warehouse
    for p in (make("h2o", budget=0.25), make("snapkv", budget=0.25), make("random", budget=0.25)):
        apply_policy(store, p, run_id=run_id)
    catalog.build(store, db)
    con = catalog.connect(db)
    mass = dict(con.execute("SELECT policy, avg(attn_mass_kept) FROM keep_summary GROUP BY policy").fetchall())
    con.close()
    assert mass["h2o"] > mass["random"] + 0.2 and mass["snapkv"] > mass["random"] + 0.2, mass


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(policy=make("knorm", budget=600)), "budget of 600 tokens is larger than the sequence"),
        (dict(policy=make("knorm", budget=64), tasks=["qasper", "narrativeqa"]), r"\['narrativeqa'\] have not been"),
        (dict(policy=make("knorm", budget=64), setting="after_question"), "unknown setting 'after_question'"),
        (dict(policy=make("knorm", budget=64), run_id="nosuchrun"), "no extracted samples for run nosuchrun"),
        (dict(policy=make("sink_recent_uniform", budget=0.5, sink_tokens=256, recent_tokens=200)), "below sink"),
    ],
)
def test_bad_input_is_named_and_writes_nothing(warehouse, kwargs, message):
    store, _, run_id = warehouse
    kwargs.setdefault("run_id", run_id)
    with pytest.raises(PolicyError, match=message):
        apply_policy(store, **kwargs)
    assert store.files("rankings") == [] and store.files("policies") == []


def test_keep_sets_of_a_policy_never_applied_is_an_error(warehouse):
    store, _, run_id = warehouse
    ref = find_samples(store, run_id)[0]
    with pytest.raises(PolicyError, match="no keep-set for .* rank the policy first"):
        keep_sets(store, ref, make("knorm", budget=8))


def test_cli_keep_and_policies(warehouse, capsys):
    store, db, run_id = warehouse
    assert kvw(["policies"]) == 0
    assert "snapkv  (per KV head)" in capsys.readouterr().out
    args = ["--data", str(store.root), "--db", str(db), "--run-id", run_id]
    assert kvw(["keep", "knorm", "--budget", "32", "--budget", "0.5", "--param", "per_head=false", *args]) == 0
    out = capsys.readouterr().out
    assert "knorm(per_head=False, budget=32) " in out and "3 (sample, setting) ranked in 1 SQL pass(es)" in out
    con = catalog.connect(db)
    assert con.execute("SELECT count(DISTINCT policy_id), count(*) FROM keep_summary").fetchone() == (2, 6)
    con.close()
    assert kvw(["keep", "knorm", "--budget", "0", *args]) == 2
    assert "budget must be > 0" in capsys.readouterr().err
    assert kvw(["keep", "lru", "--budget", "8", *args]) == 2
    assert "unknown policy 'lru'" in capsys.readouterr().err
    assert kvw(["keep", "knorm", "--budget", "8", "--param", "window=3", *args]) == 2
    assert "unknown parameter(s) ['window']" in capsys.readouterr().err
