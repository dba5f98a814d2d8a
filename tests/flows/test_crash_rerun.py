"""Kill an extraction with SIGKILL in the middle of a sample, rerun it: every row exactly once."""

import os
import signal
import subprocess
import sys
import time

import duckdb
import pytest

from tests.conftest import FIXTURE_LONGBENCH, REPO
from tests.fswatch import Watch

pytestmark = pytest.mark.prefect

RUN = """
from flows.extract_flow import extract
extract(data_dir={data!r}, tasks=["qasper", "multifieldqa_zh", "trec", "lcc", "samsum"], limit=2, max_tokens=256)
"""
KEYS = {
    "samples": "task, sample_id",
    "tokens": "task, sample_id, position",
    "token_stats": "task, sample_id, layer, kv_head, position",
    "layer_stats": "task, sample_id, layer, kv_head",
}


def progress(data):
    """(finished samples, samples with some tables written but no `samples` row yet)."""
    done = {p.name for p in (data / "samples").rglob("*.parquet")}
    started = {p.name for p in (data / "token_stats").rglob("*.parquet")}
    return done, started - done


def test_sigkill_mid_run_then_rerun_leaves_every_row_once(prefect_server, tmp_path):
    env = dict(prefect_server, KVW_DATA=str(tmp_path / "data"), KVW_DB=str(tmp_path / "kv.duckdb"))
    data = tmp_path / "data"
    code = RUN.format(data=str(FIXTURE_LONGBENCH))
    with Watch(data) as watch:  # before the writer starts: its first file wakes us
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            cwd=REPO,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        killed_partial = False
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline:
            watch.wait(1.0)  # a file landed: look now (the partial window, token_stats without samples, is ~5 ms)
            if all(progress(data)):  # a sample finished and the next is half written: freeze it, look again
                os.killpg(proc.pid, signal.SIGSTOP)
                if all(progress(data)):
                    killed_partial = True
                    break
                os.killpg(proc.pid, signal.SIGCONT)  # it finished that sample in between: the next one
        assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    n_done_before = len(list((data / "samples").rglob("*.parquet")))
    assert 1 <= n_done_before < 9 and killed_partial

    rerun = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    con = duckdb.connect(str(tmp_path / "kv.duckdb"), read_only=True)
    n = con.execute("SELECT count(*) FROM samples").fetchone()[0]
    assert n == 9  # 2 per task, samsum has 1
    for table, key in KEYS.items():
        total, distinct = con.execute(f"SELECT count(*), count(DISTINCT ({key})) FROM {table}").fetchone()
        assert total == distinct, f"{table} has duplicate rows"
    assert con.execute("SELECT count(*) FROM token_stats").fetchone()[0] == 9 * 30 * 3 * 256
    assert con.execute("SELECT count(*) FROM tokens").fetchone()[0] == 9 * 256
    assert not list(data.rglob(".tmp-*")), "temp files of the killed writer were left behind"
    run = con.execute("SELECT samples, invocations FROM runs").fetchone()
    assert run == (9, 1)  # the killed invocation never reached its run record
