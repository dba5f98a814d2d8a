"""The evaluation on a real extraction (small_warehouse: the default model, 3 samples at 512 tokens):
keep-sets from transform.keep, one prefill per (sample, setting), quality rows, resume, bad input, views."""

import shutil

import duckdb
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from tests.conftest import FIXTURE_LONGBENCH
from transform import decode, masked
from transform import evaluate_run as er
from transform.evaluate import EvaluationError
from transform.policies import PolicyError
from warehouse import catalog
from warehouse.store import Store

pytestmark = pytest.mark.model

POLICIES = ["sink_recent", {"name": "knorm", "sink_tokens": 4}]


def copy_store(small_warehouse, dest):
    shutil.copytree(small_warehouse["store"].root, dest)
    return Store(dest)


def files(store):
    return sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())


def run(store, policies=POLICIES, budgets=(0.25,), setting="both", **kw):
    kw = {"tasks": ["trec"], "limit": 1, "data_dir": str(FIXTURE_LONGBENCH), "max_new_tokens": 4, **kw}
    return er.evaluate(store, policies, list(budgets), setting, **kw)


@pytest.fixture(scope="module")
def evaluated(small_warehouse, tmp_path_factory):
    """One evaluation (2 policies x 2 settings on trec), counting prefills and batches decoded."""
    store = copy_store(small_warehouse, tmp_path_factory.mktemp("eval") / "data")
    calls, batches = [], []
    real, real_batch = decode.prefill, masked.resume
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(decode, "prefill", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
        mp.setattr(masked, "resume", lambda *a, **k: batches.append(len(a[2])) or real_batch(*a, **k))
        plan, outcomes = run(store)
    db = catalog.build(store, store.root.parent / "kv.duckdb")
    return {"store": store, "plan": plan, "outcomes": outcomes, "prefills": calls, "batches": batches, "db": db}


def quality(store):
    return [
        r for p in sorted((store.root / "quality").rglob("*.parquet")) for r in pq.ParquetFile(p).read().to_pylist()
    ]


def test_one_prefill_per_setting_serves_every_policy(evaluated):
    assert evaluated["prefills"] == ["question_aware", "question_agnostic"]
    # per setting: the full cache alone, then both policies as one masked batch over the shared cache
    assert evaluated["batches"] == [1, 2, 1, 2]
    assert [(o.task, o.evaluated, o.existing) for o in evaluated["outcomes"]] == [("trec", 4, 0)]


def test_quality_rows(evaluated, small_warehouse):
    rows = quality(evaluated["store"])
    assert len(rows) == 4 and {(r["setting"]) for r in rows} == {"question_aware", "question_agnostic"}
    n = rows[0]["n_tokens"]
    assert n == 512
    for r in rows:
        assert r["metric"] == "classification" and 0 <= r["score"] <= 100 and 0 <= r["score_full"] <= 100
        assert r["kv_bytes_full"] == 2 * 30 * 3 * n * 64 * 4  # K and V, float32
        assert r["kv_bytes_kept"] == 2 * 30 * 3 * r["kept_tokens"] * 64 * 4
        assert 1 <= r["new_tokens"] <= 4 and r["answer_tokens"] >= 1 and r["kl"] >= 0
        assert 1 <= r["continuation_tokens"] <= 4 and r["kl_continuation"] >= 0
        assert r["budget"] == 0.25 and r["decode_seconds"] > 0 and r["prefill_seconds"] > 0
    aware = [r for r in rows if r["setting"] == "question_aware"]
    assert {r["kept_tokens"] for r in aware} == {128}  # 0.25 x 512
    agnostic = [r for r in rows if r["setting"] == "question_agnostic"]
    con = duckdb.connect(str(small_warehouse["db"]), read_only=True)
    ctx_end = con.execute("SELECT context_end FROM samples WHERE task = 'trec'").fetchone()[0]
    # the question is fed after eviction: kept = 25% of the context + every question token
    assert {r["kept_tokens"] for r in agnostic} == {round(0.25 * ctx_end) + n - ctx_end}
    full = {(r["setting"], r["prediction_full"], r["answer_nll_full"]) for r in rows}
    assert len(full) == 2  # one full-cache reference per setting, shared by the policies


def test_quality_scores_are_longbench_scores_of_the_stored_predictions(evaluated, small_warehouse, tmp_path):
    """score and score_full are metrics.score of the row's own predictions against the sample's answers; a
    16-token multifieldqa_zh answer scores above 0, so a scale or wrong-answer bug shows."""
    from transform import metrics

    store = copy_store(small_warehouse, tmp_path / "data")
    run(store, ["sink_recent"], budgets=(), tasks=["multifieldqa_zh"], setting="question_aware", max_new_tokens=16)
    con = duckdb.connect(str(small_warehouse["db"]), read_only=True)
    rows = con.execute("SELECT task, sample_id, answers, all_classes FROM samples").fetchall()
    truth = {(t, s): (a, c) for t, s, a, c in rows}
    scored = quality(evaluated["store"]) + quality(store)
    for r in scored:
        answers, classes = truth[r["task"], r["sample_id"]]
        assert answers and r["prediction"] is not None
        assert r["score"] == metrics.score(r["task"], r["prediction"], answers, classes), r["prediction"]
        assert r["score_full"] == metrics.score(r["task"], r["prediction_full"], answers, classes)
    assert max(r["score"] for r in scored) > 0


def test_rerun_skips_finished_rows(evaluated):
    store = evaluated["store"]
    before = {p: p.stat().st_mtime_ns for p in (store.root / "quality").rglob("*.parquet")}
    plan, outcomes = run(store)
    assert plan.pending == 0 and [(o.evaluated, o.existing) for o in outcomes] == [(0, 4)]
    assert {p: p.stat().st_mtime_ns for p in (store.root / "quality").rglob("*.parquet")} == before


def test_views_answer_the_common_questions(evaluated):
    con = duckdb.connect(str(evaluated["db"]), read_only=True)
    got = con.execute("SELECT task, policy, budget, samples FROM quality_scores ORDER BY policy, setting").fetchall()
    assert got == [("trec", "knorm", 0.25, 1)] * 2 + [("trec", "sink_recent", 0.25, 1)] * 2
    best = con.execute("SELECT setting, count(*) FROM quality_best WHERE rank = 1 GROUP BY 1 ORDER BY 1").fetchall()
    assert best == [("question_agnostic", 1), ("question_aware", 1)]
    mem = con.execute("SELECT min(saved_share), max(saved_share) FROM quality_memory").fetchone()
    assert 0.5 < mem[0] <= mem[1] < 1


def test_compare_command(evaluated, capsys, tmp_path):
    """kvw compare on real quality rows: the continuation KL (defined for every sample) by default."""
    db = str(evaluated["db"])
    assert main(["compare", "knorm", "sink_recent", "--db", db, "--setting", "question_aware"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("kl_continuation: ") and out[1].split()[:4] == ["scope", "setting", "policy", "budget"]
    rows = [[c.strip() for c in line.split("  ") if c.strip()] for line in out[3:]]
    # trec: every task pooled, then its category; one line per policy at its one budget; n = the one sample
    assert sorted((r[0], r[2], r[3], r[5]) for r in rows) == [
        ("(all tasks)", "knorm", "0.25", "1"), ("(all tasks)", "sink_recent", "0.25", "1"),
        ("few-shot", "knorm", "0.25", "1"), ("few-shot", "sink_recent", "0.25", "1"),
    ]  # fmt: skip
    assert all(r[6] == "NULL" or float(r[6]) >= 0 for r in rows)  # NULL: a one-token greedy answer
    page = tmp_path / "cmp.html"
    assert main(["compare", "knorm", "sink_recent", "--db", db, "--plot", str(page)]) == 0
    text = page.read_text()
    assert "vegaEmbed" in text and "sink_recent" in text and "cdn.jsdelivr" not in text
    assert main(["compare", "h2o", "--db", db]) == 2
    assert "no quality rows for ['h2o']; evaluated policies: knorm, sink_recent" in capsys.readouterr().err


def test_keep_all_policy_reproduces_the_full_cache(small_warehouse, tmp_path):
    """sink_recent's defaults (256 + 512) keep a 512-token prompt whole: identical to the full cache."""
    store = copy_store(small_warehouse, tmp_path / "data")
    _, outcomes = run(store, ["sink_recent"], budgets=(), tasks=["qasper"], setting="question_aware")
    (r,) = quality(store)
    assert outcomes[0].evaluated == 1 and r["kept_tokens"] == r["n_tokens"]
    assert r["prediction"] == r["prediction_full"] and r["kl"] == 0.0 and r["answer_nll"] == r["answer_nll_full"]
    assert r["kl_continuation"] == 0.0 and r["continuation_tokens"] == r["new_tokens"]


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"policies": ["nope"]}, PolicyError, "unknown policy 'nope'; known policies: .*knorm"),
        ({"policies": [{"name": "knorm", "foo": 1}]}, PolicyError, r"unknown parameter\(s\) \['foo'\]"),
        ({"budgets": (0,)}, PolicyError, "budget must be > 0"),
        ({"budgets": (-8,)}, PolicyError, "budget must be > 0"),
        ({"budgets": (600,)}, EvaluationError, "budget of 600 tokens is larger than the sequence"),
        ({"tasks": ["lcc"]}, EvaluationError, r"task\(s\) \['lcc'\] have not been extracted in run .*trec"),
        ({"setting": "sideways"}, decode.SettingError, "unknown setting 'sideways'"),
        ({"max_new_tokens": 0}, EvaluationError, "max_new_tokens must be >= 1"),
        ({"run_id": "nope"}, EvaluationError, "unknown run_id 'nope'"),
    ],
)
def test_bad_input_is_named_and_writes_nothing(small_warehouse, tmp_path, kw, error, match):
    store = copy_store(small_warehouse, tmp_path / "data")
    before = files(store)
    with pytest.raises(error, match=match):
        run(store, **kw)
    assert files(store) == before


def test_prompt_that_no_longer_matches_the_tokens_table(small_warehouse, tmp_path):
    store = copy_store(small_warehouse, tmp_path / "data")
    path = next(p for p in (store.root / "tokens").rglob("*.parquet") if "task=trec" in str(p))
    t = pq.read_table(path)
    ids = t["token_id"].to_pylist()
    ids[100] = (ids[100] + 1) % 1000
    pq.write_table(
        t.set_column(t.schema.get_field_index("token_id"), "token_id", pc.cast(ids, t["token_id"].type)), path
    )
    before = files(store)
    with pytest.raises(EvaluationError, match="differs from run .* tokens table .* from position 100"):
        run(store)
    assert files(store) == before
