"""`prefect deployment run evaluate/longbench` for real: a Prefect server on loopback, `python -m flows.serve`,
the CLI, over a copy of a real extraction (small_warehouse). Small on purpose: one sample, 2 policies, 3 tokens."""

import re
import shutil

import duckdb
import pytest

from tests.conftest import FIXTURE_LONGBENCH
from tests.flows.conftest import prefect, run_deployment, serving

pytestmark = [pytest.mark.prefect, pytest.mark.model]


@pytest.fixture(scope="module")
def served(prefect_server, small_warehouse, tmp_path_factory):
    base = tmp_path_factory.mktemp("evaluate-served")
    shutil.copytree(small_warehouse["store"].root, base / "data")
    env = dict(prefect_server, KVW_LONGBENCH=str(FIXTURE_LONGBENCH), KVW_DATA=str(base / "data"),
               KVW_DB=str(base / "kv.duckdb"))  # fmt: skip
    with serving(env, base, "evaluate/longbench"):
        yield env, base


PARAMS = ("policies=sink_recent,knorm", "budgets=[64]", "setting=question_aware", "tasks=trec", "limit=1",
          "max_new_tokens=3")  # the default sweep (5 budgets x both settings) is larger than a test needs


def quality_files(base):
    return {p: p.stat().st_mtime_ns for p in (base / "data" / "quality").rglob("*.parquet")}


def test_deployment_run_writes_quality_and_a_summary(served):
    env, base = served
    r = run_deployment(env, "evaluate/longbench", *PARAMS)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    con = duckdb.connect(str(base / "kv.duckdb"), read_only=True)
    rows = con.execute("SELECT policy, budget, kept_tokens, samples FROM quality_scores ORDER BY policy").fetchall()
    assert rows == [("knorm", 64.0, 64.0, 1), ("sink_recent", 64.0, 64.0, 1)]
    assert con.execute("SELECT count(*) FROM keep WHERE kept").fetchone() == (2 * 30 * 3 * 64,)
    art = prefect(env, "artifact", "inspect", "evaluate-summary", timeout=60)
    assert art.returncode == 0 and "(sample, policy, setting) evaluated now | 2" in art.stdout
    assert "kvw compare knorm sink_recent" in art.stdout


def test_rerun_skips_what_is_done(served):
    env, base = served
    before = quality_files(base)
    r = run_deployment(env, "evaluate/longbench", *PARAMS)
    assert r.returncode == 0, r.stdout[-3000:]
    assert quality_files(base) == before and len(before) == 1  # one file per (run, task) per write, not per row
    art = prefect(env, "artifact", "inspect", "evaluate-summary", timeout=60)
    assert "already done (skipped) | 2" in art.stdout


def test_unknown_policy_fails_the_run_and_writes_nothing(served):
    env, base = served
    before = sorted(p for p in (base / "data").rglob("*") if p.is_file())
    r = run_deployment(env, "evaluate/longbench", "policies=sink_recent,nope", "tasks=trec", "limit=1")
    assert r.returncode == 1 and "Failed" in r.stdout
    assert sorted(p for p in (base / "data").rglob("*") if p.is_file()) == before
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", r.stdout).group(1)
    logs = prefect(env, "flow-run", "logs", run_id, timeout=60)
    assert "unknown policy 'nope'; known policies:" in logs.stdout
