"""Reports 12 and 13 drawn from a real evaluation (the default model on the small real extraction), not from
literal tables (issue 10 item 11): their numbers are checked against the quality rows the decoder wrote,
which are computed on the live cache, independently of the SQL the pages read."""

import shutil
from collections import Counter

import pytest

from reports import build, eviction_patterns, strategy_comparison
from reports.base import load
from reports.browser import Browser
from transform import evaluate_run as er
from warehouse import catalog
from warehouse.store import Store

POLICIES = ["sink_recent", "snapkv"]
BUDGETS = [0.25, 0.5]


@pytest.fixture(scope="module")
def evaluated(small_warehouse, tmp_path_factory):
    base = tmp_path_factory.mktemp("real-eval")
    shutil.copytree(small_warehouse["store"].root, base / "data")
    store = Store(base / "data")
    er.evaluate(store, POLICIES, BUDGETS, setting="both", run_id=small_warehouse["run_id"], limit=None,
                max_new_tokens=3)  # fmt: skip
    db = catalog.build(store, base / "kv.duckdb")
    con = catalog.connect(db)
    quality = con.execute(
        "SELECT q.task, q.sample_id, q.policy_id, q.setting, q.kept_tokens, q.kl, p.name, p.budget "
        "FROM quality AS q JOIN policies AS p USING (policy_id)"
    ).fetchall()
    return {"db": db, "con": con, "run": small_warehouse["run_id"], "quality": quality, "base": base}


def test_report_12_sizes_are_the_keep_sets_the_decoder_used(evaluated):
    con, run = evaluated["con"], evaluated["run"]
    data = load(con, eviction_patterns.REPORT, {"run_id": run})
    rows = data["eviction_boundaries"].to_pylist()
    assert rows, "report 12 drew nothing from a real evaluation"
    labels = dict(con.execute("SELECT task || '/' || sample_id, sample FROM sample_labels").fetchall())
    kept = {(labels[f"{t}/{s}"], pid, st): k for t, s, pid, st, k, *_ in evaluated["quality"]}
    names = {pid: name for _, _, pid, _, _, _, name, _ in evaluated["quality"]}
    checked = Counter()
    for r in rows:
        key = (r["sample"], r["policy_id"], r["setting"])
        if key not in kept:
            continue
        fed_after = r["n_tokens"] - r["cache_tokens"]  # question_agnostic: the question, fed after eviction
        assert r["kept_tokens"] + fed_after == pytest.approx(kept[key], abs=0.5), key  # SQL keep-set = live cache
        assert r["sink_tokens"] + r["middle_tokens"] + r["recent_tokens"] == pytest.approx(r["kept_tokens"], abs=0.5)
        if names[r["policy_id"]] == "sink_recent":
            assert r["middle_tokens"] == 0, key  # sink + recent keeps no middle, whatever its nominal parameters
        checked[names[r["policy_id"]]] += 1
    assert set(checked) == set(POLICIES), checked


def test_report_13_counts_and_means_are_the_quality_rows(evaluated):
    con, run = evaluated["con"], evaluated["run"]
    data = load(con, strategy_comparison.REPORT, {"run_id": run})
    summary = data["strategy_summary"].to_pylist()
    curves = [r for r in summary if r["kind"] == "curve" and r["measure"] == "kl" and r["scope"] == "(all tasks)"]
    assert curves, sorted({(r["kind"], r["measure"], r["scope"]) for r in summary})
    budgets = {(name, budget) for *_, name, budget in evaluated["quality"]}
    assert {r["budget"] for r in curves} == set(BUDGETS) and len(budgets) == len(POLICIES) * len(BUDGETS)
    name_of = dict(con.execute("SELECT DISTINCT label, policy FROM quality_samples").fetchall())
    for r in curves:
        name = name_of[r["label"]]
        kls = [kl for _, _, _, st, _, kl, n, b in evaluated["quality"]
               if n == name and b == r["budget"] and st == r["setting"] and kl is not None]  # fmt: skip
        if r["setting"] == "question_agnostic":  # no NULLs there: every sample's KL counts
            assert r["n"] == len(kls) == 3, r
            assert r["mean"] == pytest.approx(sum(kls) / len(kls), rel=1e-3, abs=1e-4), r
        assert r["lo"] is None or r["lo"] <= r["mean"] + 1e-9 <= r["hi"] + 2e-9, r


def test_pages_from_a_real_evaluation_draw_without_errors(evaluated):
    out = evaluated["base"] / "out"
    built = build.build_all(evaluated["db"], out, only=["eviction_patterns", "strategy_comparison"])
    assert [b.status for b in built] == ["ok", "ok"] and all(b.size_bytes < 3_000_000 for b in built)
    with Browser() as browser:
        for b in built:
            page = browser.open(b.path)
            try:
                assert page.state == "done" and page.errors == [] and page.requests == [], (b.name, page.errors)
                assert page.marks() > 0, b.name
            finally:
                browser.close_page(page)
