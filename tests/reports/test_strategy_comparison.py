"""Report 13 on a literal warehouse (no model): every policy variant its own curve over every budget, bands
and n from warehouse.quality_stats, NULLs shown as NULL, the full-cache line, one panel per category; the
page draws in real headless Chromium without errors and stays small."""

import json
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from reports import build, strategy_comparison
from reports.base import load
from reports.browser import Browser
from warehouse import catalog, quality_stats
from warehouse.schemas import TABLES
from warehouse.store import Store

NOW = datetime(2026, 11, 30, tzinfo=UTC)
RUN = {"run_id": "lit-run", "model": "m"}
BUDGETS = (0.1, 0.2, 0.3, 0.5, 0.7)
VARIANTS = [("sink_recent", {}), ("sink_recent_uniform", {"block_n": 32}), ("knorm", {"sink_tokens": 0}),
            ("knorm", {"sink_tokens": 4})]  # fmt: skip
TASKS = {"qasper": 2, "hotpotqa": 2, "trec": 3, "lcc": 1}  # samples per task


def policy_id(v: int, budget: float) -> str:
    return f"p{v}-{budget}"


def write_literal(root, continuation: bool = True) -> Store:
    """Policies x budgets, samples, and quality rows whose KL falls with the budget; trec's reference answers
    are one token (NULL in question_aware); sink_recent and sink_recent_uniform have equal values."""
    store = Store(root / "data")
    rng = np.random.default_rng(7)
    for v, (name, params) in enumerate(VARIANTS):
        for b in BUDGETS:
            row = {"policy_id": policy_id(v, b), "name": name, "params": json.dumps({**params, "budget": b}),
                   "budget": b, "budget_unit": "ratio", "per_head": False, "created_at": NOW}  # fmt: skip
            store.write("policies", pa.Table.from_pylist([row], schema=TABLES["policies"].schema), policy_id(v, b))
    for task, n in TASKS.items():
        rows = []
        for s in range(n):
            sample = f"{task}-{s}"
            store.write("samples", pa.Table.from_pylist([{**RUN, "task": task, "sample_id": sample, "n_tokens": 1000}],
                                                        schema=TABLES["samples"].schema), sample)  # fmt: skip
            for v in range(len(VARIANTS)):
                for b in BUDGETS:
                    for setting in ("question_aware", "question_agnostic"):
                        kl = float((1 - b) * (1 + (v >= 2)) * rng.uniform(0.5, 1.5)) if v != 1 else None
                        rows.append({**RUN, "task": task, "sample_id": sample, "policy_id": policy_id(v, b),
                                     "setting": setting, "budget": b, "metric": "qa_f1", "score": 0.0,
                                     "score_full": 0.0, "answer_nll": 2.0, "answer_nll_full": 1.0, "kl": kl,
                                     "kl_continuation": kl if continuation else None,
                                     "continuation_tokens": 6 if continuation else None,
                                     "answer_tokens": 1 if task == "trec" else 5, "kept_tokens": int(1000 * b),
                                     "n_tokens": 1000, "kv_bytes_kept": int(1000 * b), "kv_bytes_full": 1000,
                                     "evaluated_at": NOW})  # fmt: skip
        for r in rows:  # sink_recent_uniform coincides with sink_recent: the report must still show both
            if r["policy_id"].startswith("p1-"):
                twin = next(x for x in rows if x["sample_id"] == r["sample_id"] and x["setting"] == r["setting"]
                            and x["policy_id"] == policy_id(0, r["budget"]))  # fmt: skip
                r["kl"] = twin["kl"]
                r["kl_continuation"] = twin["kl_continuation"]
        store.write("quality", pa.Table.from_pylist(rows, schema=TABLES["quality"].schema), f"q-{task}")
    return store


@pytest.fixture(scope="module")
def literal(tmp_path_factory):
    root = tmp_path_factory.mktemp("strategy")
    store = write_literal(root)
    db = catalog.build(store, root / "kv.duckdb")
    return {"store": store, "db": db, "root": root}


def summary(literal):
    con = catalog.connect(literal["db"])
    try:
        return load(con, strategy_comparison.REPORT, {"run_id": RUN["run_id"]})["strategy_summary"].to_pylist()
    finally:
        con.close()


def test_every_variant_every_budget_with_bands_and_n(literal):
    rows = summary(literal)
    curve = [r for r in rows if r["kind"] == "curve" and r["measure"] == "kl_continuation"]
    labels = {r["label"] for r in curve}
    assert labels == {"sink_recent", "sink_recent_uniform", "knorm(sink_tokens=0)", "knorm(sink_tokens=4)"}
    scopes = {r["scope"] for r in curve}
    assert scopes == {"(all tasks)", "single-doc QA", "multi-doc QA", "few-shot", "code"}
    for label in labels:
        for scope in scopes:
            got = sorted(r["budget"] for r in curve if (r["label"], r["scope"], r["setting"]) ==
                         (label, scope, "question_agnostic"))  # fmt: skip
            assert got == list(BUDGETS), (label, scope)
    # the numbers are quality_stats' over the same rows (rounded to the page's 4 significant digits)
    con = catalog.connect(literal["db"])
    direct = quality_stats.summarize(quality_stats.load(con, RUN["run_id"], setting="question_agnostic"),
                                     by=("label", "budget"), measures=("kl_continuation",))  # fmt: skip
    con.close()
    page = {(r["label"], r["budget"]): r for r in curve if r["scope"] == "(all tasks)"
            and r["setting"] == "question_agnostic"}  # fmt: skip
    for d in direct:
        p = page[d["label"], d["budget"]]
        assert p["n"] == d["n"] == 8
        assert (p["mean"], p["lo"], p["hi"]) == pytest.approx((d["mean"], d["lo"], d["hi"]), rel=1e-3)
        assert p["lo"] <= p["mean"] <= p["hi"]
    notes = {(r["scope"], r["setting"], r["measure"]): r["note"] for r in rows if r["kind"] == "panel"}
    assert notes["(all tasks)", "question_agnostic", "kl"] == "n = 8 samples"
    assert notes["few-shot", "question_aware", "kl"] == "n = 3 samples · NULL for 3: one-token answer"
    full = {(r["scope"], r["measure"]): r["mean"] for r in rows if r["kind"] == "full"}
    assert full["code", "kl_continuation"] == 0 and full["code", "score"] == 0


def test_one_token_answers_are_null_not_zero(literal):
    rows = summary(literal)
    few = [r for r in rows if r["kind"] == "curve" and r["scope"] == "few-shot" and r["measure"] == "kl"]
    aware = [r for r in few if r["setting"] == "question_aware"]
    assert aware and all(r["mean"] is None and r["n"] == 0 and r["n_null"] == 3 for r in aware)
    assert all(r["null_reason"].startswith("one-token answer") for r in aware)
    assert all(r["mean"] > 0 for r in few if r["setting"] == "question_agnostic")
    # pooled over every task the NULLs are skipped, not averaged in as zeros
    pooled = next(r for r in rows if r["kind"] == "curve" and r["scope"] == "(all tasks)" and r["measure"] == "kl"
                  and r["setting"] == "question_aware" and r["label"] == "knorm(sink_tokens=4)"
                  and r["budget"] == 0.1)  # fmt: skip
    assert (pooled["n"], pooled["n_null"]) == (5, 3)


@pytest.mark.browser
def test_page_draws_in_chromium_and_every_measure_redraws(literal, tmp_path):
    (built,) = build.build_all(literal["db"], tmp_path, only=["strategy_comparison"])
    assert built.status == "ok" and built.size_bytes < 3_000_000
    with Browser() as browser:
        page = browser.open(built.path)
        try:
            assert page.state == "done" and page.errors == [] and page.warnings == [] and page.requests == []
            texts = page.evaluate("Array.from(document.querySelectorAll('#vis svg text')).map((t) => t.textContent)")
            assert any(t.startswith("n = 8 samples") for t in texts) and "few-shot" in texts
            options = page.evaluate("Array.from(document.querySelectorAll('.vega-bindings select option'))"
                                    ".map((o) => o.value)")  # fmt: skip
            assert options == list(quality_stats.MEASURES), "continuation KL first: the default"
            for i in range(len(options)):
                page.evaluate(
                    "(async () => { const s = document.querySelector('.vega-bindings select');"
                    f" s.value = s.options[{i}].value; s.dispatchEvent(new Event('change'));"
                    " await window.kvwView.runAsync(); })()"
                )
                assert page.errors == [] and page.warnings == [] and page.marks() > 0, options[i]
            radios = page.evaluate("document.querySelectorAll('.vega-bindings input[type=radio]').length")
            assert radios == 2
            page.evaluate(
                "(async () => { const r = Array.from(document.querySelectorAll('.vega-bindings input[type=radio]'))"
                ".find((x) => x.value === 'question_aware'); r.click(); await window.kvwView.runAsync(); })()"
            )
            page.evaluate(
                "(async () => { const s = document.querySelector('.vega-bindings select');"
                " s.value = 'kl'; s.dispatchEvent(new Event('change')); await window.kvwView.runAsync(); })()"
            )
            texts = page.evaluate("Array.from(document.querySelectorAll('#vis svg text')).map((t) => t.textContent)")
            assert "NULL" in texts and page.errors == [], "question_aware trec: one-token answers drawn as NULL"
            page.screenshot(tmp_path / "strategy.png")
        finally:
            browser.close_page(page)


@pytest.mark.browser
def test_a_measure_null_everywhere_draws_null_without_warnings(tmp_path):
    """Quality rows written before kl_continuation existed: the default measure is NULL in every panel."""
    store = write_literal(tmp_path, continuation=False)
    db = catalog.build(store, tmp_path / "kv.duckdb")
    (built,) = build.build_all(db, tmp_path / "out", only=["strategy_comparison"])
    assert built.status == "ok"
    with Browser() as browser:
        page = browser.open(built.path)
        try:
            assert page.state == "done" and page.errors == [] and page.warnings == []
            texts = page.evaluate("Array.from(document.querySelectorAll('#vis svg text')).map((t) => t.textContent)")
            assert texts.count("NULL") >= 5 * len(BUDGETS), "every budget of every panel says NULL"
            assert any(t.startswith("n = 8 samples · NULL for 8: not measured") for t in texts)
        finally:
            browser.close_page(page)
