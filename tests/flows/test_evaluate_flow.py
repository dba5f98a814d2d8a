"""`prefect deployment run evaluate/longbench` for real: a Prefect server on loopback, `python -m flows.serve`,
the CLI, over a copy of a real extraction (small_warehouse). Small on purpose: one sample, 2 policies, 3 tokens."""

import re
import shutil
import subprocess
import sys
import time

import duckdb
import pytest

from tests.conftest import FIXTURE_LONGBENCH, REPO, stop

pytestmark = [pytest.mark.prefect, pytest.mark.model]


def prefect(env, *args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def served(prefect_server, small_warehouse, tmp_path_factory):
    base = tmp_path_factory.mktemp("evaluate-served")
    shutil.copytree(small_warehouse["store"].root, base / "data")
    env = dict(prefect_server, KVW_LONGBENCH=str(FIXTURE_LONGBENCH), KVW_DATA=str(base / "data"),
               KVW_DB=str(base / "kv.duckdb"))  # fmt: skip
    with open(base / "serve.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "flows.serve"], env=env, cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        deadline = time.time() + 120
        while prefect(env, "deployment", "inspect", "evaluate/longbench", timeout=60).returncode != 0:
            if proc.poll() is not None or time.time() > deadline:
                stop(proc)
                pytest.fail(f"serve did not register evaluate/longbench:\n{(base / 'serve.log').read_text()[-3000:]}")
            time.sleep(1)
        yield env, base
        stop(proc)


def run_deployment(env, *params):
    args = ["deployment", "run", "evaluate/longbench", "--watch", "--watch-timeout", "600"]
    for p in params:
        args += ["-p", p]
    return prefect(env, *args)


PARAMS = ("policies=sink_recent,knorm", "budgets=[64]", "tasks=trec", "limit=1", "max_new_tokens=3")


def quality_files(base):
    return {p: p.stat().st_mtime_ns for p in (base / "data" / "quality").rglob("*.parquet")}


def test_deployment_run_writes_quality_and_a_summary(served):
    env, base = served
    r = run_deployment(env, *PARAMS)
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
    r = run_deployment(env, *PARAMS)
    assert r.returncode == 0, r.stdout[-3000:]
    assert quality_files(base) == before and len(before) == 2
    art = prefect(env, "artifact", "inspect", "evaluate-summary", timeout=60)
    assert "already done (skipped) | 2" in art.stdout


def test_unknown_policy_fails_the_run_and_writes_nothing(served):
    env, base = served
    before = sorted(p for p in (base / "data").rglob("*") if p.is_file())
    r = run_deployment(env, "policies=sink_recent,nope", "tasks=trec", "limit=1")
    assert r.returncode == 1 and "Failed" in r.stdout
    assert sorted(p for p in (base / "data").rglob("*") if p.is_file()) == before
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", r.stdout).group(1)
    logs = prefect(env, "flow-run", "logs", run_id, timeout=60)
    assert "unknown policy 'nope'; known policies:" in logs.stdout
