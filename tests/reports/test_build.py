"""Building the pages: every report from real extraction data, the SQL behind 12 and 13 on literal tables,
clear pages for empty tables, one broken report not hiding the others, the `kvw report` command."""

import json
import re
import shutil

import duckdb
import pyarrow as pa
import pytest

from flows.cli import main
from reports import build, html
from reports.base import Report, ReportError, fetch
from reports.registry import REPORTS
from tests.reports.conftest import KEEP_POLICIES, POLICIES

MAX_BYTES = 3_000_000


def test_registry_has_the_15_reports_of_the_briefs():
    names = [r.name for r in REPORTS]
    assert len(names) == len(set(names)) == 15
    for figure in ("kv_cache_layers", "kv_cache_statistics", "kv_value_distribution", "kv_pca_by_position",
                   "head_specialization", "kv_quantization_error", "low_importance_tokens",
                   "token_importance_comparison", "token_magnitude_distributions", "token_magnitudes",
                   "token_key_value_scatter"):  # fmt: skip
        assert figure in names


def test_every_report_builds_offline_and_small(built_reports):
    out, built = built_reports
    assert [b.name for b in built] == [r.name for r in REPORTS]
    assert {b.name: b.status for b in built} == {r.name: "ok" for r in REPORTS}
    for b in built:
        page = b.path.read_text()
        assert b.size_bytes == b.path.stat().st_size < MAX_BYTES, b.name
        assert not re.search(r"""(src|href)=["']?https?:""", page), b.name
        spec = json.loads(re.search(r'id="spec">(.*?)</script>', page, re.S).group(1))
        assert spec["datasets"] and all(rows for rows in spec["datasets"].values()), b.name
    index = (out / "index.html").read_text()
    for r in REPORTS:
        assert f'href="{r.name}.html"' in index and html.escape(r.summary) in index


def test_eviction_pattern_sql_on_literal_keep_sets(report_warehouse):
    con = duckdb.connect(str(report_warehouse["db"]), read_only=True)
    params = {"run_id": report_warehouse["run_id"], "max_samples": 3, "buckets": 128, "max_cells": 400_000}
    bounds = fetch(con, "eviction_boundaries", params).to_pylist()
    pattern = fetch(con, "eviction_pattern", params).to_pylist()
    n = report_warehouse["refs"][0]["n_tokens"]
    sr = [b for b in bounds if b["policy_id"] == KEEP_POLICIES[0]]
    assert len(sr) == 3 * 2 and all(b["sink_end"] == 4 and b["recent_start"] == n - 64 for b in sr)
    assert all(b["kept_share"] == pytest.approx((4 + 64) / n, rel=1e-3) for b in sr)  # 4 digits on pages
    assert {b["policy"] for b in sr} == {"sink_recent sink_tokens: 4, recent_tokens: 64 [litsr0004064]"}
    per_head = [b for b in bounds if b["policy_id"] == KEEP_POLICIES[1]]
    assert all(b["sink_end"] == 4 for b in per_head)  # only the first 4 are kept by every layer and head
    row = next(p for p in pattern if p["policy_id"] == KEEP_POLICIES[0])
    width = n // 128  # positions per bucket (n = 512: 4)
    layer = "".join("9" if b * width < 4 or b * width >= n - 64 else "0" for b in range(128))  # all kept / none
    assert row["buckets"] == 128 and row["layers"] == 30 and row["kept"] == layer * 30  # every layer, in order


def test_strategy_quality_sql_on_literal_quality(report_warehouse):
    """Per-sample rows of quality_samples (report 13 aggregates them with warehouse.quality_stats)."""
    con = duckdb.connect(str(report_warehouse["db"]), read_only=True)
    rows = fetch(con, "strategy_quality", {"run_id": report_warehouse["run_id"]}).to_pylist()
    assert len(rows) == 3 * len(POLICIES) * 2  # samples x policies x settings
    first = [r for r in rows if r["policy_id"] == POLICIES[0][0]]
    aware = [r for r in first if r["setting"] == "question_aware"]
    assert sorted(r["score"] for r in aware) == [10, 20, 30] and {r["score_change"] for r in aware} == {-5}
    # 4 answer tokens; in question_aware the first is the full prefill's under every policy: KL over the other 3
    assert {r["kl"] for r in aware} == {pytest.approx(0.05 * 4 / 3)}
    assert {r["kl"] for r in first if r["setting"] == "question_agnostic"} == {pytest.approx(0.05)}
    assert all(r["kl_continuation"] is None and r["continuation_null_reason"].startswith("not measured") for r in rows)
    assert all(r["memory_saved"] == pytest.approx(0.75, abs=0.01) and r["policy"] == "sink_recent" for r in first)
    labels = {r["label"] for r in rows}  # two sink_recent variants told apart, one knorm variant named alone
    assert len(labels) == 3 and "knorm" in labels and all("recent_tokens=" in x for x in labels - {"knorm"})


def test_empty_tables_get_a_no_data_page_naming_them(small_warehouse, tmp_path):
    only = ["eviction_patterns", "strategy_comparison", "attention_patterns", "kv_caching"]
    built = build.build_all(small_warehouse["db"], tmp_path, only=only)
    assert [b.status for b in built] == ["no data"] * 4
    evict = (tmp_path / "eviction_patterns.html").read_text()
    assert "No data yet" in evict and "<code>rankings</code>" in evict and "kvw keep" in evict
    assert "evaluate/longbench" in (tmp_path / "strategy_comparison.html").read_text()
    assert "<code>demo_decode</code>" in (tmp_path / "kv_caching.html").read_text()
    assert (tmp_path / "index.html").read_text().count("no data") == 4


def test_a_broken_report_is_listed_as_failed_and_the_others_still_build(small_warehouse, tmp_path):
    broken = Report("broken", "B", "a report whose SQL file does not exist", ("no_such_query",), lambda d: None)
    built = build.build_all(small_warehouse["db"], tmp_path, reports=[broken, REPORTS[1]])
    assert built[0].status.startswith("failed: no SQL file") and built[1].status == "ok"
    page = (tmp_path / "broken.html").read_text()
    assert 'data-render="failed"' in page and "ReportError: no SQL file" in page
    assert "failed: no SQL file" in (tmp_path / "index.html").read_text()
    with pytest.raises(ReportError, match="unknown report"):
        build.build_all(small_warehouse["db"], tmp_path, only=["kv_cache_layers", "nope"])


def test_runs_are_chosen_by_sample_count_unless_named(report_warehouse):
    con = duckdb.connect(str(report_warehouse["db"]), read_only=True)
    run = report_warehouse["run_id"]
    assert build.default_run(con) == run
    assert build.choose_run(con, "rankings", "no-such-run") == run  # falls back to a run the table has
    assert build.choose_run(con, "demo_decode", None) == report_warehouse["demo"].run_id
    assert build.choose_run(con, "policies", run) is None  # a table without runs


def test_kvw_report_command(report_warehouse, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(report_warehouse["store"].root, data)
    out = tmp_path / "out"
    rc = main(["report", "--data", str(data), "--db", str(tmp_path / "kv.duckdb"), "--out", str(out),
               "--only", "kv_cache_statistics,kv_caching", "--demo", "never"])  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0 and "kv_cache_statistics" in printed and str(out / "index.html") in printed
    assert sorted(p.name for p in out.glob("*.html")) == ["index.html", "kv_cache_statistics.html", "kv_caching.html"]
    rc = main(["report", "--data", str(data), "--db", str(tmp_path / "kv.duckdb"), "--out", str(out),
               "--only", "kv_caching", "--demo", "never"])  # fmt: skip
    index = (out / "index.html").read_text()
    assert rc == 0 and "kv_cache_statistics.html" in index and "earlier build" in index  # the index keeps it
    assert main(["report", "--data", str(data), "--out", str(out), "--only", "nope"]) == 2
    assert "unknown report(s) ['nope']" in capsys.readouterr().err


def test_pca_projection_matches_numpy_svd():
    import numpy as np

    from reports.kv_pca_by_position import pca_2d, prepare

    x = np.random.default_rng(0).normal(size=(40, 6)) * [6, 3, 1, 1, 1, 1]
    coords, shares = pca_2d(x)
    xc = x - x.mean(0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    assert np.allclose(np.abs(coords), np.abs(xc @ vt[:2].T)) and np.allclose(shares, s[:2] ** 2 / (s**2).sum())
    vec = pa.table({"sample": ["a"] * 40, "layer": [0] * 40, "position": list(range(40)), "token": ["t"] * 40,
                    "k": x.tolist(), "v": (2 * x).tolist()})  # fmt: skip
    out = prepare({"kv_layer_vectors": vec})
    assert out["points"].num_rows == 80 and out["shares"].num_rows == 2
