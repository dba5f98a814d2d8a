"""The shared HTML writer: offline pages, data that cannot become markup, atomic writes."""

import json
import re
from pathlib import Path

import altair as alt
import pyarrow as pa
import pytest

from reports import html
from reports.base import ReportError, compact, compact_floats, fetch, used_params

HOSTILE = "</script><img src=x onerror=alert(1)>&amp;"


def spec_block(page: str) -> str:
    return re.search(r'<script type="application/json" id="spec">(.*?)</script>', page, re.S).group(1)


def test_json_for_html_cannot_close_its_script_element():
    text = html.json_for_html({"t": HOSTILE})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"t": HOSTILE}


def test_chart_page_is_offline_and_keeps_data_as_data():
    chart = alt.Chart(pa.table({"token": [HOSTILE], "v": [1.0]})).mark_bar().encode(y="token:N", x="v:Q")
    page = html.chart_page(chart, "a <b>title</b>", "what & why", "meta <i>")
    assert "vegaEmbed" in page and len(page) > 500_000  # the bundle is inline
    assert not re.search(r"""(src|href)=["']?https?:""", page)  # nothing loaded from a network
    assert "<b>title</b>" not in page and "a &lt;b&gt;title&lt;/b&gt;" in page
    assert HOSTILE not in page  # only the escaped form is on the page...
    assert json.loads(spec_block(page))["datasets"].popitem()[1][0]["token"] == HOSTILE  # ...and it decodes back
    assert page.count("</script>") == page.count("<script")


def test_no_data_and_failed_pages_say_what_to_do():
    page = html.no_data_page("12. <x>", "s", ["keep", "policies"], "run `kvw keep` <now>")
    assert 'data-render="nodata"' in page and "<code>keep</code>" in page and "run `kvw keep` &lt;now&gt;" in page
    page = html.failed_page("t", "s", "ValueError: <boom>")
    assert 'data-render="failed"' in page and "&lt;boom&gt;" in page


def test_index_lists_every_entry_escaped():
    entries = [html.IndexEntry("a.html", "A <1>", "shows <a>", "ok", 1_200_000, 1.5),
               html.IndexEntry("b.html", "B", "shows b", "no data", 900, 0.0)]  # fmt: skip
    page = html.index_page(entries, "run x")
    assert page.count("<tr><td><a href=") == 2 and "A &lt;1&gt;" in page and "1.20 MB" in page


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = html.write(tmp_path / "sub" / "p.html", "x")
    html.write(path, "y")
    assert path.read_text() == "y" and [p.name for p in path.parent.iterdir()] == ["p.html"]


def test_failed_write_keeps_the_old_page_and_leaves_no_temp(tmp_path, monkeypatch):
    """The rename fails after the whole temp page is written: the old page stays, the temp goes."""
    import os

    path = html.write(tmp_path / "p.html", "old")
    real_replace, seen = os.replace, []

    def boom(src, dst):
        seen.append(Path(src).read_text())  # the temp page exists and holds the new text
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        html.write(path, "new")
    monkeypatch.setattr(os, "replace", real_replace)
    assert seen == ["new"], "the failure came after the temp page was written"
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["p.html"]


def test_compact_keeps_four_significant_digits_and_nulls():
    assert compact_floats([0.123456789, 12345.678, 1.23456e-7, float("nan")]) == [0.1235, 12350.0, 1.235e-07, None]
    t = compact(pa.table({"f": pa.array([1 / 3], pa.float32()), "d": pa.array(["a"]).dictionary_encode()}))
    assert t.column("f").to_pylist() == [0.3333] and t.schema.field("d").type == pa.string()
    from decimal import Decimal

    dec = compact(pa.table({"x": pa.array([Decimal("2.123456")], pa.decimal128(12, 6))}))
    assert dec.column("x").to_pylist() == [2.123] and dec.schema.field("x").type == pa.float64()  # JSON-able


def test_used_params_ignores_comments():
    assert used_params("-- uses $nope\nSELECT $a, $b_2 FROM t WHERE x = $a") == {"a", "b_2"}


def test_fetch_names_a_missing_parameter_and_a_missing_file():
    import duckdb

    con = duckdb.connect()
    with pytest.raises(ReportError, match=r"kv_heatmap.sql needs parameter\(s\) \['max_samples', 'positions'"):
        fetch(con, "kv_heatmap", {"run_id": "x"})
    with pytest.raises(ReportError, match="no SQL file"):
        fetch(con, "nope", {})


def test_a_single_choice_is_shown_as_text_not_as_a_control():
    from reports import charts

    one = charts.dropdown("sample", ["qasper"], "sample").param.to_dict()
    assert one["value"] == "qasper" and one["bind"] == {"input": "hidden", "name": "sample: qasper"}
    two = charts.dropdown("sample", ["a", "b"], "sample", value="b").param.to_dict()
    assert two["value"] == "b" and two["bind"]["input"] == "select" and two["bind"]["options"] == ["a", "b"]
    labelled = charts.dropdown("run", ["r1"], "run", labels=["r1 · SmolLM2"]).param.to_dict()
    assert labelled["value"] == "r1" and labelled["bind"]["name"] == "run: r1 · SmolLM2"
    assert charts.radio("grouping", ["category"]).param.to_dict()["bind"]["input"] == "hidden"
    with pytest.raises(ValueError, match="2 labels for 1 choices"):
        charts.dropdown("run", ["r1"], labels=["a", "b"])


def test_one_palette_and_one_key_value_encoding():
    from reports import charts
    from warehouse.vocabulary import CATEGORIES, SEGMENTS

    assert charts.CATEGORY_COLORS.to_dict()["domain"] == list(CATEGORIES)
    assert len(set(charts.CATEGORY_COLORS.to_dict()["range"])) == len(CATEGORIES)  # no two categories alike
    assert charts.SEGMENT_COLORS.to_dict()["domain"] == list(SEGMENTS)
    line = {k: v.to_dict() for k, v in charts.kv_line().items()}
    assert line["color"]["legend"]["title"] == line["strokeDash"]["legend"]["title"] == charts.KV_TITLE  # one legend
    assert line["color"]["scale"]["domain"] == line["strokeDash"]["scale"]["domain"] == ["key", "value"]
    assert line["strokeDash"]["scale"]["range"][0] != line["strokeDash"]["scale"]["range"][1]
    assert charts.kv_mark_color("value") == line["color"]["scale"]["range"][1]
    with pytest.raises(ValueError, match="tensor must be one of"):
        charts.kv_mark_color("query")
    heat = charts.heat_color("x", "attention weight").to_dict()
    assert heat["legend"]["title"] == "attention weight" and heat["field"] == "x" and heat["type"] == "quantitative"


def test_extract_uses_the_warehouse_vocabulary():
    from extract import tokens
    from extract.prompts import SEGMENTS
    from warehouse import vocabulary

    assert tokens.CATEGORIES is vocabulary.CATEGORIES and SEGMENTS == vocabulary.SEGMENTS
    assert {tokens.categorize(t) for t in ("the", " 2019", "hello", ",", " ")} <= set(vocabulary.CATEGORIES)


def test_chart_page_carries_how_to_read_and_a_run_selector():
    chart = alt.Chart(pa.table({"v": [1.0]})).mark_point().encode(x="v:Q")
    about = html.About(("Read <this>.",), (("window", "the last W queries & more"),))
    runs = [html.RunLink("r1 · m", "p.html", True), html.RunLink("r2 · <m>", "p--r2.html")]
    page = html.chart_page(chart, "t", "s", "", about, runs)
    assert '<details class="about" id="about" open><summary>How to read this</summary>' in page
    assert "<p>Read &lt;this&gt;.</p>" in page and "<dt>window</dt><dd>the last W queries &amp; more</dd>" in page
    assert '<option value="p.html" selected>r1 · m</option><option value="p--r2.html">r2 · &lt;m&gt;</option>' in page
    single = html.chart_page(chart, "t", "s", "", about, runs[:1])
    assert "run-select" not in single  # one run: no selector


def test_index_provenance_tables_are_escaped():
    facts = [html.Facts("Runs", "note <n>", ("run_id", "samples", "truncated"), (("r<1>", 1234, True),)),
             html.Facts("Evaluations", "", ("run_id",), (), "no evaluation yet")]  # fmt: skip
    page = html.index_page([], "m", facts)
    assert "<h2>Runs</h2>" in page and "<td>r&lt;1&gt;</td>" in page and "1,234" in page and "<td>yes</td>" in page
    assert "no evaluation yet" in page and "note &lt;n&gt;" in page
