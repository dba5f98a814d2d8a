"""The real thing: a Prefect server on loopback, `python -m flows.serve`, and the `prefect deployment run` CLI."""

import json
import re

import duckdb
import pytest

from tests.conftest import FIXTURE_LONGBENCH
from tests.flows.conftest import prefect, run_deployment, serving

pytestmark = pytest.mark.prefect


@pytest.fixture(scope="module")
def served(prefect_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("served")
    env = dict(prefect_server, KVW_LONGBENCH=str(FIXTURE_LONGBENCH), KVW_DATA=str(base / "data"),
               KVW_DB=str(base / "kv.duckdb"))  # fmt: skip
    with serving(env, base, "extract/longbench"):
        yield env, base


def test_deployment_run_writes_queryable_parquet(served):
    env, base = served
    # two samples in flight (extract.sample.DEVICE_LOCK serialises the prefills): the rows are what one at a time
    # writes (tests/extract/test_extract_real.py), the counts below what a run must show
    r = run_deployment(env, "extract/longbench", "tasks=qasper,trec", "limit=1", "max_tokens=256", "concurrency=2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    con = duckdb.connect(str(base / "kv.duckdb"), read_only=True)
    assert con.execute("SELECT task, n_tokens FROM samples ORDER BY task").fetchall() == [
        ("qasper", 256),
        ("trec", 256),
    ]
    assert con.execute("SELECT count(*) FROM token_stats").fetchone() == (2 * 30 * 3 * 256,)
    run = con.execute("SELECT samples, tokens, invocations, parameters FROM runs").fetchone()
    assert run[:3] == (2, 512, 1)
    assert json.loads(run[3])["tasks"] == "qasper,trec"
    assert sorted(p.name for p in (base / "data" / "samples").rglob("*.parquet")) == sorted(
        f"{sid}.parquet" for (sid,) in con.execute("SELECT sample_id FROM samples").fetchall()
    )
    art = prefect(env, "artifact", "inspect", "extract-summary", timeout=60)
    assert art.returncode == 0 and "samples extracted now" in art.stdout


def test_rerun_resumes_without_duplicates(served):
    env, base = served
    r = run_deployment(env, "extract/longbench", "tasks=qasper,trec,lcc", "limit=1", "max_tokens=256")
    assert r.returncode == 0, r.stdout[-3000:]
    con = duckdb.connect(str(base / "kv.duckdb"), read_only=True)
    assert con.execute("SELECT count(*), count(DISTINCT sample_id) FROM samples").fetchone() == (3, 3)
    assert con.execute("SELECT samples, invocations FROM runs").fetchone() == (3, 2)


def test_unknown_task_fails_the_run_and_writes_nothing(served):
    env, base = served
    before = sorted(p for p in (base / "data").rglob("*") if p.is_file())
    r = run_deployment(env, "extract/longbench", "tasks=qasper,nope", "max_tokens=256")
    assert r.returncode == 1
    assert sorted(p for p in (base / "data").rglob("*") if p.is_file()) == before
    assert "Failed" in r.stdout
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", r.stdout).group(1)
    logs = prefect(env, "flow-run", "logs", run_id, timeout=60)
    assert "unknown task(s) ['nope']" in logs.stdout and "known tasks: lcc, multifieldqa_zh" in logs.stdout
