"""`kvw compare` on a literal warehouse (no model): policies chosen by name, label or id; n, mean and the
bootstrap interval printed per scope, setting, label and budget are warehouse.quality_stats'; NULLs printed as
NULL with their reason; bad input named; --plot writes report 13's chart offline."""

from pathlib import Path

import numpy as np
import pytest

from flows.cli import main
from tests.reports.test_strategy_comparison import BUDGETS, write_literal
from warehouse import catalog, quality_stats


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    return str(catalog.build(write_literal(root), root / "kv.duckdb"))


def lines_of(out: str) -> list[list[str]]:
    return [line.split("  ") for line in out.splitlines()[3:]]


def test_compare_prints_n_mean_and_interval(db, capsys):
    assert main(["compare", "knorm", "--db", db, "--setting", "question_agnostic"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("kl_continuation: KL(full ‖ evicted) along the full cache's own greedy answer")
    rows = [[c.strip() for c in line if c.strip()] for line in lines_of(out)]
    assert {r[2] for r in rows} == {"knorm(sink_tokens=0)", "knorm(sink_tokens=4)"}, "variants, never the name alone"
    assert {r[0] for r in rows} == {"(all tasks)", "single-doc QA", "multi-doc QA", "few-shot", "code"}
    assert len(rows) == 5 * 2 * len(BUDGETS)
    con = catalog.connect(db)
    want = quality_stats.summarize(quality_stats.load(con, setting="question_agnostic"), ("label", "budget"),
                                   ("kl_continuation",))  # fmt: skip
    con.close()
    pooled = {(r[2], float(r[3])): r for r in rows if r[0] == "(all tasks)"}
    values = {}  # (label, budget) -> the 8 per-sample values the pooled line summarizes
    con = catalog.connect(db)
    for r in quality_stats.load(con, setting="question_agnostic"):
        values.setdefault((r["label"], r["budget"]), []).append(r["kl_continuation"])
    con.close()
    for w in want:
        if w["label"].startswith("knorm"):
            got = pooled[w["label"], w["budget"]]
            assert got[5] == str(w["n"]) == "8" and float(got[6]) == pytest.approx(w["mean"], abs=5e-5)
            lo, hi = (float(x) for x in got[7].strip("[]").split(", "))
            assert (lo, hi) == (pytest.approx(w["lo"], abs=5e-5), pytest.approx(w["hi"], abs=5e-5))
            # a percentile bootstrap of the mean: inside the values' range, around their mean, not zero-width
            x = np.array(values[w["label"], w["budget"]])
            assert x.min() - 1e-4 <= lo < x.mean() < hi <= x.max() + 1e-4


def test_one_sample_has_no_interval_but_a_dash(db, capsys):
    """n = 1 used to print a zero-width "95% interval" [x, x]: one sample says nothing about the spread."""
    assert main(["compare", "knorm", "--db", db, "--measure", "kl_continuation", "--by", "task"]) == 0
    rows = [[c.strip() for c in line if c.strip()] for line in lines_of(capsys.readouterr().out)]
    ones = [r for r in rows if r[5] == "1"]
    more = [r for r in rows if int(r[5]) >= 2]
    assert ones and more
    assert all(r[7] == "–" and r[6] != "NULL" for r in ones), ones[:2]
    for r in more:
        lo, hi = (float(x) for x in r[7].strip("[]").split(", "))
        assert lo <= float(r[6]) <= hi
    con = catalog.connect(db)
    keys = ("setting", "task", "label", "budget")
    summary = quality_stats.summarize(quality_stats.load(con), keys, ("kl_continuation",))
    con.close()
    lcc = [line for line in quality_stats.markdown(summary, "kl_continuation", keys).splitlines() if "| lcc |" in line]
    assert lcc and all(line.split(" | ")[-2] == "–" for line in lcc)


def test_nulls_are_printed_as_null_with_a_reason(db, capsys):
    assert main(["compare", "sink_recent", "--db", db, "--measure", "kl", "--setting", "question_aware",
                 "--by", "task"]) == 0  # fmt: skip
    rows = [[c.strip() for c in line if c.strip()] for line in lines_of(capsys.readouterr().out)]
    trec = [r for r in rows if r[0] == "trec"]
    assert trec and all(r[5:] == ["0", "NULL", "–", "3 (one-token answer)"] for r in trec)
    pooled = [r for r in rows if r[0] == "(all tasks)"]
    assert all(r[5] == "5" and r[8].startswith("3 (") for r in pooled), "pooled n skips the NULLs"


def test_choose_by_label_or_id_and_bad_input(db, capsys, tmp_path):
    assert main(["compare", "knorm(sink_tokens=4)", "p0-0.1", "--db", db]) == 0
    rows = [[c.strip() for c in line if c.strip()] for line in lines_of(capsys.readouterr().out)]
    assert {(r[2], r[3]) for r in rows} >= {("knorm(sink_tokens=4)", "0.7"), ("sink_recent", "0.1")}
    assert {r[2] for r in rows} == {"knorm(sink_tokens=4)", "sink_recent"}
    assert main(["compare", "h2o", "--db", db]) == 2
    err = capsys.readouterr().err
    assert "no quality rows for ['h2o']; evaluated policies: knorm(sink_tokens=0), knorm(sink_tokens=4)" in err
    page = tmp_path / "cmp.html"
    assert main(["compare", "knorm", "sink_recent", "--db", db, "--plot", str(page), "--measure", "all"]) == 0
    out = capsys.readouterr().out
    assert out.count("bootstrap 95% interval") == len(quality_stats.MEASURES)
    text = page.read_text()
    assert "vegaEmbed" in text and "knorm(sink_tokens=4)" in text and "cdn.jsdelivr" not in text
    assert "sink_recent_uniform" not in text, "only the chosen policies are drawn"


def test_evaluate_summary_reads_the_same_view(db, tmp_path):
    """The flow's summary artifact: per policy and setting, both KLs with their n (NULLs skipped, not zeros)."""
    from types import SimpleNamespace

    from tests.reports.test_strategy_comparison import TASKS, policy_id
    from transform.evaluate_run import summary_markdown
    from warehouse.store import Store

    store = Store(Path(db).parent / "data")
    pols = [SimpleNamespace(policy_id=policy_id(0, 0.1), label=lambda: "sink_recent(budget=0.1)", name="sink_recent")]
    samples = [SimpleNamespace(sample_id=f"{t}-{i}") for t, n in TASKS.items() for i in range(n)]
    plan = SimpleNamespace(run=SimpleNamespace(model="m", run_id="lit-run"), samples=samples, policies=pols,
                           settings=["question_aware", "question_agnostic"], notes=[])  # fmt: skip
    text = summary_markdown(store, plan, [], db, 1.0)
    aware = next(line for line in text.splitlines() if line.startswith("| sink_recent(budget=0.1) | question_aware"))
    cells = [c.strip() for c in aware.split("|")]
    assert cells[3] == "8" and cells[6].endswith("(8)") and cells[7].endswith("(5)"), aware  # trec's 3 are NULL
