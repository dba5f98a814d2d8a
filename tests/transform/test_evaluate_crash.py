"""Kill an evaluation with SIGKILL midway, rerun it: every (sample, policy, setting) row exactly once, and the
same rows as an evaluation that was never interrupted (issue 10 item 11)."""

import os
import shutil
import signal
import subprocess
import sys
import time

import duckdb
import pytest

from tests.conftest import REPO
from warehouse import catalog
from warehouse.store import Store

pytestmark = pytest.mark.model

RUN = """
from transform.evaluate_run import evaluate
from warehouse.store import Store
evaluate(Store({data!r}), ["sink_recent", "knorm"], [0.5], setting="question_aware", run_id={run!r}, limit=None,
         max_new_tokens=4)
"""
KEY = "task, sample_id, policy_id, setting"


def _rows(data):
    con = catalog.memory(Store(data))
    try:
        return con.execute(f"SELECT {KEY}, prediction, kept_tokens FROM quality ORDER BY {KEY}").fetchall()
    finally:
        con.close()


def test_sigkill_mid_evaluation_then_rerun_matches_an_uninterrupted_one(small_warehouse, tmp_path):
    run = small_warehouse["run_id"]
    for name in ("killed", "clean"):
        shutil.copytree(small_warehouse["store"].root, tmp_path / name)
    killed = tmp_path / "killed"
    code = RUN.format(data=str(killed), run=run)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        if list((killed / "quality").rglob("*.parquet")):  # one task's rows flushed, the next task in progress
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the evaluation ended before it could be killed: {proc.stderr.read()[-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    partial = _rows(killed)
    assert 0 < len(partial) < 3 * 2, "killed midway: some rows written, not all"

    for data in (killed, tmp_path / "clean"):
        r = subprocess.run([sys.executable, "-c", RUN.format(data=str(data), run=run)], env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=900)  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
    resumed, clean = _rows(killed), _rows(tmp_path / "clean")
    assert len(clean) == 3 * 2  # 3 samples x 2 policies
    assert resumed == clean  # each key once, and the same answers as a run never interrupted
    assert set(partial) <= set(resumed), "rows written before the kill are kept, not redone differently"
    con = duckdb.connect()
    n, distinct = con.execute(
        f"SELECT count(*), count(DISTINCT ({KEY})) FROM read_parquet(?)", [str(killed / "quality" / "**" / "*.parquet")]
    ).fetchone()
    assert n == distinct == 6
    assert not list(killed.rglob(".tmp-*")), "temp files of the killed writer were left behind"
