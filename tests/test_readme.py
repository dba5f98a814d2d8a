"""The README stays true: each SQL block runs on a warehouse where it has rows, and returns what the tables
hold (checked against the fixture's literal values or a separate computation); every table and column it
promises exists."""

import re
import shutil

import duckdb
import numpy as np
import pytest

from tests.conftest import REPO
from tests.reports.conftest import POLICIES, report_warehouse  # noqa: F401  (report_warehouse is a fixture)
from warehouse.schemas import TABLES

README = (REPO / "README.md").read_text()
SQL_BLOCKS = re.findall(r"```sql\n(.*?)```", README, re.S)
SNAPKV = dict(budget=0.5)


def title(block: str) -> str:
    return block.splitlines()[0].removeprefix("-- ")


@pytest.fixture(scope="module")
def readme_wh(report_warehouse, tmp_path_factory):  # noqa: F811
    """report_warehouse plus what its literal tables lack: a real snapkv keep-set and one skipped record."""
    from extract.longbench import Skip
    from extract.run import record_skip
    from transform.keep import apply_policy
    from transform.policies import make
    from warehouse import catalog
    from warehouse.store import Store

    base = tmp_path_factory.mktemp("readme-warehouse")
    shutil.copytree(report_warehouse["store"].root, base / "data")
    store = Store(base / "data")
    run_id = report_warehouse["run_id"]
    assert apply_policy(store, make("snapkv", **SNAPKV), run_id=run_id).ranked == 3
    record_skip(store, run_id, report_warehouse["refs"][0]["model"], Skip("trec", "?", "trec.jsonl:9", "malformed"))
    con = duckdb.connect(str(catalog.build(store, base / "kv.duckdb")), read_only=True)
    yield {"con": con, "store": store, "refs": report_warehouse["refs"], "run_id": run_id}
    con.close()


def literal_j(policy: str, budget: float) -> int:
    """Index of a literal policy in tests/reports/conftest.py: its quality rows are made from it."""
    return next(j for j, p in enumerate(POLICIES) if (p[1], p[3]) == (policy, budget))


def check_key_norm_by_decile(wh, rows):
    layers = wh["con"].execute("SELECT count(DISTINCT layer) FROM token_stats").fetchone()[0]
    assert len(rows) == layers * 10 and {r[1] for r in rows} == set(range(10))
    pos, n, norm = (
        wh["con"]
        .execute(
            "SELECT position, n_tokens, key_norm FROM token_stats JOIN samples USING (run_id, task, sample_id)"
            " WHERE layer = 3"
        )
        .fetchnumpy()
        .values()
    )
    decile = np.minimum(9, pos * 10 // n)
    for layer, d, got in rows:
        if layer == 3:
            assert got == pytest.approx(norm[decile == d].astype(np.float64).mean(), abs=0.006), d


def check_lowest_magnitude(wh, rows):
    assert len(rows) == 10
    sums = [r[3] + r[4] for r in rows]
    (lowest,) = (
        wh["con"].execute("SELECT min(key_norm + value_norm) FROM token_summary WHERE task = 'qasper'").fetchone()
    )  # one qasper sample in the fixture
    assert sums[0] == pytest.approx(lowest, abs=0.01)


def check_by_category(wh, rows):
    (tokens,) = wh["con"].execute("SELECT count(*) FROM token_summary").fetchone()
    assert sum(r[1] for r in rows) == tokens and len({r[0] for r in rows}) == len(rows)
    assert [r[4] for r in rows] == sorted((r[4] for r in rows), reverse=True)


def check_int4(wh, rows):
    assert len(rows) == 5 and [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)
    assert all(0 < r[1] < 1 and 0 < r[2] < 1 and 0 <= r[3] <= 1 for r in rows)


def check_skipped(wh, rows):
    assert rows == [("trec", "trec.jsonl:9", "malformed")]


def check_demo(wh, rows):
    assert [r[0] for r in rows] == list(range(6))  # DemoConfig(new_tokens=6)
    assert [r[1] - rows[0][1] for r in rows] == list(range(6)), "the cache grows one token a step"


def check_keep_summary(wh, rows):
    n = np.array([r["n_tokens"] for r in wh["refs"]])
    by = {(r[0], r[1], r[2]): r for r in rows}
    literal = {(p, s) for p in ("knorm", "sink_recent") for s in ("question_aware", "question_agnostic")}
    assert {(p, s) for p, _, s in by} == literal | {("snapkv", "question_aware")}
    assert by["sink_recent", 68.0, "question_aware"][5] == pytest.approx((68 / n).mean(), abs=0.0006)
    assert by["snapkv", 0.5, "question_aware"][5] == pytest.approx((np.floor(0.5 * n + 0.5) / n).mean(), abs=0.0006)
    assert all(0 < r[3] <= 1 and 0 < r[4] <= 1 for r in rows)


def check_evicted_tokens(wh, rows):
    from transform.keep import find_samples, load_stats
    from transform.policies import make

    ref = min(find_samples(wh["store"], wh["run_id"]), key=lambda r: r.sample_id)
    kept = make("snapkv", **SNAPKV).keep_mask(load_stats(wh["store"], ref))[0, 0]
    assert [r[0] for r in rows] == np.flatnonzero(~kept)[:20].tolist(), "the Python reference evicts the same"


def check_keep_mass(wh, rows):
    (layers,) = wh["con"].execute("SELECT count(DISTINCT layer) FROM token_stats").fetchone()
    assert len(rows) == 3 * layers, "knorm 0.25, sink_recent 68 (literal) and snapkv 0.5, each per layer"
    assert all(0 < r[3] <= 1 for r in rows)


def literal_kl(j: int, setting: str) -> float:
    """The literal rows' KL (0.05 (j + 1) over 4 answer tokens) as quality_samples reads it: in question_aware
    the first token is the full prefill's under every policy, so the mean is over the other 3."""
    return round(0.05 * (j + 1) * (4 / 3 if setting == "question_aware" else 1), 4)


def check_quality_scores(wh, rows):
    i_of = {r["task"]: i for i, r in enumerate(wh["refs"])}
    assert len(rows) == len(i_of) * 2 * len(POLICIES)
    for task, setting, policy, budget, score, full, kl, _ in rows:
        j = literal_j(policy, budget)
        assert (score, full, kl) == (10 * (i_of[task] + 1) + j, 10 * (i_of[task] + 1) + 5, literal_kl(j, setting))


def check_quality_best(wh, rows):
    assert len(rows) == 2 * len(POLICIES), "one literal policy per budget, both settings"
    for _, budget, policy, _, score, full in rows:
        assert (score, full) == (20 + literal_j(policy, budget), 25), "mean of 10(i+1)+j over 3 tasks"


def check_quality_memory(wh, rows):
    assert len(rows) == 2 * len(POLICIES)
    for policy, budget, setting, _, saved, drop, kl in rows:
        j = literal_j(policy, budget)
        assert drop == 5 - j and kl == literal_kl(j, setting)
        assert saved == pytest.approx(0.75 if j % 2 == 0 else 0.5, abs=0.01)


def check_changed_answers(wh, rows):
    assert len(rows) == 20 and {(r[3], r[4]) for r in rows} == {("an <b>answer</b>", "the answer")}


CHECKS = {
    "mean key norm by layer and position decile": check_key_norm_by_decile,
    "the lowest-magnitude tokens of one sample, with their text": check_lowest_magnitude,
    "magnitude and attention by token category": check_by_category,
    "which layers quantize worst to int4, and where the cache is sparse": check_int4,
    "what was skipped, and why": check_skipped,
    "the cache's payoff, token by token: time with and without it, and how far the logits drift": check_demo,
    "which policy keeps the most attention at each budget (model-free proxy)": check_keep_summary,
    "the tokens one policy evicts in one sample, with their text": check_evicted_tokens,
    "per-layer attention mass kept, policy by policy": check_keep_mass,
    "score vs budget per policy and task": check_quality_scores,
    "the best policy at each budget": check_quality_best,
    "memory saved, and what it costs": check_quality_memory,
    "answers that changed under eviction, beside the full-cache answer": check_changed_answers,
}


def test_readme_has_sql_examples():
    assert len(SQL_BLOCKS) >= 5


def test_every_readme_sql_block_has_a_check():
    """A new README query gets a check here, or it could pass on empty tables."""
    assert sorted(title(b) for b in SQL_BLOCKS) == sorted(CHECKS)


@pytest.mark.parametrize("sql", SQL_BLOCKS, ids=[title(b)[:60] for b in SQL_BLOCKS])
def test_readme_sql_returns_what_the_tables_hold(sql, readme_wh):
    rows = readme_wh["con"].execute(sql).fetchall()
    assert rows, "every README query has rows to show on this warehouse"
    CHECKS[title(sql)](readme_wh, rows)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_table_and_column_is_documented(name):
    assert f"`{name}`" in README, f"README does not document table {name}"
    missing = [c for c in TABLES[name].columns if c not in README]
    assert not missing, f"README does not mention {name} columns {missing}"


def test_readme_commands_exist():
    for script in re.findall(r"scripts/[\w-]+\.sh", README):
        assert (REPO / script).exists(), script
    assert "scripts/test.sh" in (REPO / ".ci" / "run").read_text()
