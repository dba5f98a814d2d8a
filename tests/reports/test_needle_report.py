"""The needle grid report on a real needle run: the default model extracts a small needle grid from the LongBench
fixture, two real policies are evaluated on it, and the page is drawn in a real headless Chromium."""

from datetime import UTC, datetime

import duckdb
import pytest

from extract import needle
from reports.base import fetch
from transform import metrics
from warehouse import catalog
from warehouse.store import Store

GRID = needle.Grid(kinds=("passkey", "multi"), lengths=(32,), depths=(0, 100))
POLICIES = ["sink_recent", "knorm"]
BUDGETS = [0.5]


@pytest.fixture(scope="module")
def needle_warehouse(smol, tmp_path_factory):
    """4 short needle samples extracted with the default model (no truncation), sink_recent and knorm at 50%
    evaluated (one batched decode per sample besides the full cache's: this fixture is CPU-bound)."""
    from extract.longbench import open_longbench
    from extract.run import make_run_id, plan, process_sample, write_run
    from extract.sample import StatsConfig
    from tests.conftest import FIXTURE_LONGBENCH
    from transform.evaluate_run import evaluate

    base = tmp_path_factory.mktemp("needle-warehouse")
    lb = needle.attach(open_longbench(FIXTURE_LONGBENCH), GRID)
    store, cfg = Store(base / "data"), StatsConfig()
    run_id = make_run_id(smol, 1024, cfg)
    started = datetime.now(UTC)
    for sample in plan(lb, ["needle"], None).samples:
        process_sample(store, smol, lb, sample, run_id, 1024, cfg)
    write_run(store, smol, run_id, {"max_tokens": 1024, "max_tokens_effective": 1024, "data_dir": str(lb.root)},
              started, 0.0)  # fmt: skip
    _, outcomes = evaluate(
        store, POLICIES, BUDGETS, run_id=run_id, tasks=["needle"], limit=None, device="cpu", max_new_tokens=12
    )  # "The pass key is 12345." is 11 tokens
    db = catalog.build(store, base / "kv.duckdb")
    return {"store": store, "db": db, "run_id": run_id, "root": base, "outcomes": outcomes}


def test_needle_samples_are_scored_by_exact_match(needle_warehouse):
    con = duckdb.connect(str(needle_warehouse["db"]), read_only=True)
    rows = con.execute(
        "SELECT q.metric, q.score, q.score_full, q.prediction, q.prediction_full, n.needle, n.needle_text, s.answers "
        "FROM quality q JOIN needles n USING (run_id, task, sample_id) JOIN samples s USING (run_id, task, sample_id)"
    ).fetchall()
    assert len(rows) == len(GRID.specs()) * len(POLICIES) * len(BUDGETS)
    for metric, score, full, pred, pred_full, value, text, answers in rows:
        assert metric == "needle_exact" and answers == [value] and value in text
        assert score == metrics.needle_exact_score(pred, value) * 100 and score in (0.0, 100.0)
        assert full == metrics.needle_exact_score(pred_full, value) * 100
    count, located, shortest, longest = con.execute(
        "SELECT count(*), count(needle_start), min(context_tokens), max(context_tokens) FROM needles"
    ).fetchall()[0]
    assert count == 4 and located == 4 and shortest > 20 and longest < 160  # multi: + 4 needles


def test_grid_sql_matches_the_quality_rows(needle_warehouse):
    """Every cell of every panel against a separate reading: the cell parsed from the sample id, accuracy
    from the stored predictions scored again (the full cache once per sample)."""
    con = duckdb.connect(str(needle_warehouse["db"]), read_only=True)
    got = fetch(con, "needle_grid", {"run_id": needle_warehouse["run_id"]}).to_pylist()
    q = con.execute(
        "SELECT q.sample_id, q.prediction, q.prediction_full, s.answers[1], p.name, q.budget FROM quality q "
        "JOIN samples s USING (run_id, task, sample_id) JOIN policies p USING (policy_id)"
    ).fetchall()
    hits: dict[tuple, list[float]] = {}
    full: dict[str, float] = {}
    for sid, pred, pred_full, value, name, budget in q:
        spec = needle.Spec.parse(sid)
        full[sid] = metrics.needle_exact_score(pred_full, value)
        for kind in (spec.kind, "(all kinds)"):
            panel = f"{name} · {round(100 * budget)}% kept"
            hits.setdefault((panel, kind, spec.length, spec.depth), []).append(metrics.needle_exact_score(pred, value))
    for sid, hit in full.items():
        spec = needle.Spec.parse(sid)
        for kind in (spec.kind, "(all kinds)"):
            hits.setdefault(("full cache", kind, spec.length, spec.depth), []).append(hit)
    assert {(r["panel"], r["kind"], r["length_requested"], r["depth_requested"]) for r in got} == set(hits)
    for r in got:
        cell = hits[(r["panel"], r["kind"], r["length_requested"], r["depth_requested"])]
        assert r["samples"] == len(cell) and r["accuracy"] == pytest.approx(sum(cell) / len(cell))
        assert r["setting"] == "question_aware" and r["needle_cut"] == 0
    assert got[0]["panel"] == "full cache" and got[0]["kind"] == "passkey"  # the reference panel first


def test_page_draws_offline_with_the_model_limit_explained(needle_warehouse, tmp_path):
    from reports.browser import Browser
    from reports.build import build_all

    built = build_all(needle_warehouse["db"], tmp_path, only=["needle_grid"])
    assert [(b.name, b.status) for b in built] == [("needle_grid", "ok")]
    assert built[0].size_bytes < 3_000_000
    with Browser() as browser:
        page = browser.open(built[0].path)
        try:
            assert page.state == "done" and page.errors == [] and page.warnings == [] and page.requests == []
            assert page.marks() >= 2 * 2 * 3  # rect + text per cell, 2 cells, 3 panels
            text = page.evaluate("document.querySelector('#vis svg').textContent")
            assert "the model's limit, not the policy's" in text and "retrieved (exact match)" in text
            assert "full cache" in text and "knorm · 50% kept" in text and "sink_recent · 50% kept" in text
            assert "How to read this" in page.evaluate("document.body.textContent")
            kinds = page.evaluate("Array.from(document.querySelectorAll('.vega-bindings select')[0].options)"
                                  ".map((o) => o.value)")  # fmt: skip
            assert kinds == ["passkey", "multi", "(all kinds)"]
            for i in range(len(kinds)):
                page.evaluate(
                    "(async () => { const s = document.querySelectorAll('.vega-bindings select')[0];"
                    f" s.value = s.options[{i}].value; s.dispatchEvent(new Event('change'));"
                    " await window.kvwView.runAsync(); })()"
                )
                assert page.errors == [] and page.marks() > 0
            png = page.screenshot(tmp_path / "needle_grid.png")
            assert png.stat().st_size > 5_000
        finally:
            browser.close_page(page)
