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
from tests.reports.conftest import KEEP_POLICIES, POLICIES, SECOND_RUN_TOKENS

MAX_BYTES = 3_000_000


def test_registry_has_the_reports_of_the_briefs():
    names = [r.name for r in REPORTS]
    assert len(names) == len(set(names)) >= 16 and "cross_run" in names
    for figure in ("kv_cache_layers", "kv_cache_statistics", "kv_value_distribution", "kv_pca_by_position",
                   "head_specialization", "kv_quantization_error", "low_importance_tokens",
                   "token_importance_comparison", "token_magnitude_distributions", "token_magnitudes",
                   "token_key_value_scatter"):  # fmt: skip
        assert figure in names


def test_every_report_builds_offline_and_small(built_reports):
    out, built = built_reports
    assert [b.name for b in built] == [r.name for r in REPORTS]
    one_run = {r.name for r in REPORTS if r.min_runs > 1}  # cross_run: this warehouse has one extraction run
    one_run.add("needle_grid")  # no needle samples here either: tests/reports/test_needle_report.py draws it
    assert {b.name: b.status for b in built} == {r.name: "no data" if r.name in one_run else "ok" for r in REPORTS}
    assert "needs 2 runs in samples; the warehouse holds 1" in (out / "cross_run.html").read_text()
    for b in (b for b in built if b.name not in one_run):
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
    assert aware and all(r["kl"] == pytest.approx(0.05 * 4 / 3, rel=1e-3) for r in aware)  # 4 digits on pages
    assert all(r["kl"] == pytest.approx(0.05) for r in first if r["setting"] == "question_agnostic")
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


def _run_options(page: str) -> list[tuple[str, str]]:
    """(file, label) of each option of the page's run selector."""
    nav = re.search(r'<select id="run-select"[^>]*>(.*?)</select>', page, re.S)
    return re.findall(r'<option value="([^"]+)"[^>]*>([^<]*)</option>', nav.group(1)) if nav else []


def test_every_page_of_a_two_run_warehouse_offers_both_runs(built_two_runs, two_run_warehouse):
    """Each report whose data holds both runs is built once per run; each of its pages links the other."""
    out, built = built_two_runs
    first, second = two_run_warehouse["run_id"], two_run_warehouse["second_run"]
    con = duckdb.connect(str(two_run_warehouse["db"]), read_only=True)
    by_name = {b.name: b for b in built}
    offered = 0
    for r in REPORTS:
        b = by_name[r.name]
        table = r.needs[0]
        held = build.page_runs(con, table, None) if r.per_run else [None]
        pages = [b, *b.others]
        assert len(pages) == len(held) and [p.run_id for p in pages][1:] == held[1:], r.name
        for p in pages:
            options = _run_options(p.path.read_text())
            if len(held) > 1:
                assert [f for f, _ in options] == [q.path.name for q in pages], r.name
                assert any(first in lab for _, lab in options) and any(second in lab for _, lab in options), r.name
                offered += 1
            else:
                assert options == [], r.name  # one run: no dead selector
    # samples- and quality-based pages offer both runs; rankings (run 1 only) and the demo run do not
    assert offered >= 2 * 10
    assert not by_name["eviction_patterns"].others and len(by_name["strategy_comparison"].others) == 1
    assert by_name["kv_cache_layers"].others[0].status == "no data"  # the second run stored no raw K/V
    assert "<code>kv</code> have no rows for this run" in by_name["kv_cache_layers"].others[0].path.read_text()
    assert by_name["token_magnitudes"].others[0].status == "ok"
    assert by_name["token_magnitudes"].others[0].path.name.startswith("token_magnitudes--")
    assert (
        by_name["token_magnitudes"].path.name == "token_magnitudes.html" and by_name["token_magnitudes"].run_id == first
    )
    # each run's page draws its own run: the meta line names it
    assert f"run {second}" in by_name["token_magnitudes"].others[0].path.read_text()
    assert f"run {first}" in by_name["token_magnitudes"].path.read_text()
    con.close()


def test_cross_run_draws_both_runs_side_by_side(built_two_runs, two_run_warehouse):
    out, built = built_two_runs
    b = next(b for b in built if b.name == "cross_run")
    assert b.status == "ok" and not b.others
    page = b.path.read_text()
    spec = json.loads(re.search(r'id="spec">(.*?)</script>', page, re.S).group(1))
    rows = [row for data in spec["datasets"].values() for row in data]
    runs = {r["run_id"]: r for r in rows if "label" in r}
    first, second = two_run_warehouse["run_id"], two_run_warehouse["second_run"]
    assert runs[first]["rank"] == 1 and runs[second]["rank"] == 2  # 3 samples before 2
    assert runs[first]["has_quality"] and runs[second]["has_quality"]
    magnitudes = [r for r in rows if "norm" in r and "lowest_head" in r]
    assert {(r["run_id"], r["tensor"]) for r in magnitudes} == {
        (x, t) for x in (first, second) for t in ("key", "value")
    }
    assert len({r["layer"] for r in magnitudes}) == 30
    # the mean key norm of layer 0 of each run, against DuckDB over the run's token_stats
    con = duckdb.connect(str(two_run_warehouse["db"]), read_only=True)
    for run in (first, second):
        (want,) = con.execute(
            "SELECT avg(k) FROM (SELECT avg(key_norm) AS k FROM token_stats WHERE run_id = ? AND layer = 0 "
            "GROUP BY kv_head)", [run]).fetchone()  # fmt: skip
        got = next(r["norm"] for r in magnitudes if r["run_id"] == run and r["layer"] == 0 and r["tensor"] == "key")
        assert got == pytest.approx(want, rel=1e-3)
    kl = [r for r in rows if "kept_share" in r and "kl" in r]
    assert {r["run_id"] for r in kl} == {first, second}
    sr = next(
        r for r in kl if r["run_id"] == second and r["budget"] == POLICIES[0][3] and r["setting"] == "question_agnostic"
    )
    assert sr["kl"] == pytest.approx(0.05) and sr["samples"] == 2  # question_aware's is rescaled (quality_samples)
    labels = con.execute("SELECT DISTINCT label FROM quality_samples WHERE run_id = ?", [second]).fetchall()
    assert {r["policy"] for r in kl if r["run_id"] == second} == {x for (x,) in labels}  # labels, never bare names
    # exactly two runs: both shown as text, no selector to operate
    params = {p["name"]: p for p in spec["params"]}
    assert params["run_a"]["value"] == first and params["run_b"]["value"] == second
    assert params["run_a"]["bind"]["input"] == "hidden" and "left run: " + first in params["run_a"]["bind"]["name"]


def test_index_says_what_the_pages_were_built_on(built_two_runs, two_run_warehouse):
    out, built = built_two_runs
    index = (out / "index.html").read_text()
    section = index[index.index('<section id="provenance">') :]
    first, second = two_run_warehouse["run_id"], two_run_warehouse["second_run"]
    con = duckdb.connect(str(two_run_warehouse["db"]), read_only=True)
    for run in (first, second):
        n, trunc, lo, hi = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE truncated), min(n_tokens), max(n_tokens) FROM samples "
            "WHERE run_id = ?", [run]).fetchone()  # fmt: skip
        row = re.search(rf"<tr><td>{run}</td>(.*?)</tr>", section).group(1)  # the runs table comes first
        cols = ("model", "dtype", "device", "attn_impl", "max_tokens", "window", "samples", "tasks", "truncated",
                "min_tokens", "median_tokens", "longest", "finished")  # fmt: skip
        got = dict(zip(cols, [c.replace(",", "") for c in re.findall(r"<td[^>]*>([^<]*)</td>", row)], strict=True))
        assert "SmolLM2" in got["model"] and got["max_tokens"] == str(512 if run == first else SECOND_RUN_TOKENS)
        assert (got["samples"], got["truncated"], got["min_tokens"], got["longest"]) == tuple(
            map(str, (n, trunc, lo, hi))
        )
    assert "Samples per task" in section and "<td>qasper</td>" in section
    assert "Evaluations (quality rows)" in section and "<td>sink_recent</td>" in section and "<td>knorm</td>" in section
    assert "question_agnostic, question_aware" in section
    assert "Demo runs" in section and two_run_warehouse["demo"].run_id in section
    # the pages of the other run are linked from the index
    tm = next(b for b in built if b.name == "token_magnitudes")
    assert f'href="{tm.others[0].path.name}"' in index
    con.close()


def test_every_page_says_how_to_read_it(built_reports):
    from reports.glossary import about

    out, built = built_reports
    for b in built:
        r = next(r for r in REPORTS if r.name == b.name)
        text = about(r)
        assert text.paragraphs, f"{r.name}: its module needs a docstring saying how to read the page"
        if b.status == "ok":
            page = b.path.read_text()
            assert '<details class="about"' in page and html.escape(text.paragraphs[-1]) in page, r.name
    page = (out / "kv_cache_statistics.html").read_text()
    assert "sparsity threshold" in page and "truncation" in page
    assert "quantization grouping" in (out / "kv_quantization_error.html").read_text()
    assert "observation window" in (out / "token_magnitudes.html").read_text()


def test_glossary_numbers_match_the_extraction_defaults():
    from extract import stats
    from extract.sample import StatsConfig
    from reports.glossary import GLOSSARY

    text = {term: d for term, _, d in GLOSSARY}
    assert f"{stats.SPARSITY_REL:.0%} of that head's RMS" in text["sparsity threshold"]
    assert f"{StatsConfig().window} by default" in text["attention received, observation window"]
    assert "±127" in text["quantization grouping"] and "±7" in text["quantization grouping"]


def _specs(node):
    """Every unit spec (a dict with a mark) inside a Vega-Lite spec."""
    if isinstance(node, dict):
        if "mark" in node:
            yield node
        for v in node.values():
            yield from _specs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _specs(v)


def test_every_heatmap_has_a_colour_legend_and_no_selector_is_dead(built_reports):
    """A rect whose colour encodes a number says what the colour means; no <select> offers a single option."""
    out, built = built_reports
    heatmaps = 0
    for b in (b for b in built if b.status == "ok"):
        spec = json.loads(re.search(r'id="spec">(.*?)</script>', b.path.read_text(), re.S).group(1))
        legends: dict[str, bool] = {}  # a colour field -> does some heatmap of the page draw its legend?
        for unit in _specs(spec):
            mark = unit["mark"]["type"] if isinstance(unit["mark"], dict) else unit["mark"]
            color = unit.get("encoding", {}).get("color", {})
            if mark == "rect" and color.get("type") == "quantitative":
                heatmaps += 1
                assert color.get("title"), (b.name, color.get("field"))
                legends[color["field"]] = legends.get(color["field"], False) or color.get("legend", {}) is not None
        # panels sharing one scale may draw its legend once (report 12: the first panel)
        assert all(legends.values()), (b.name, legends)
        for param in (p for u in [spec, *_specs(spec)] for p in u.get("params", [])):
            bind = param.get("bind") or {}
            if isinstance(bind, dict) and bind.get("input") in ("select", "radio"):  # "legend": a clickable legend
                assert len(bind["options"]) > 1, (b.name, param["name"])
    assert heatmaps >= 8
