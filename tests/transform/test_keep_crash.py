"""Kill `kvw keep` with SIGKILL between its writes, rerun it: every (sample, ranking, setting) exactly once.

The warehouse is synthetic (benchmarks/synth.py: real schema, layout and Store; 3M token_stats rows over
16 samples in 8 tasks), large enough that h2o's two SQL passes (one per setting) each take a while: the
process is killed as soon as the first pass's files appear, so the second setting is missing. The rerun must
rank exactly what is missing and leave rankings equal to a run that was never interrupted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import duckdb
import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import synth  # noqa: E402

KEEP = ["keep", "h2o", "--budget", "0.1", "--budget", "0.3", "--setting", "question_aware",
        "--setting", "question_agnostic"]  # fmt: skip
KEY = "task, sample_id, ranking_id, setting, layer, kv_head"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "data"
    synth.generate(root, 3_000_000, tasks=8)  # 16 samples of 2,048 tokens
    return root


def kvw(data, db, *args, **popen):
    cmd = [sys.executable, "-m", "flows.cli", *args, "--data", str(data), "--db", str(db)]
    return subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **popen)  # fmt: skip


def rankings(data):
    con = duckdb.connect()
    rel = f"read_parquet('{data}/rankings/**/*.parquet', hive_partitioning = false)"
    dupes = con.execute(f"SELECT count(*) FROM (SELECT {KEY} FROM {rel} GROUP BY ALL HAVING count(*) > 1)").fetchone()
    rows = con.execute(f"SELECT {KEY}, n, positions FROM {rel} ORDER BY {KEY}").fetchall()
    return dupes[0], rows


@pytest.mark.slow  # 20 s: a killed process and its rerun
def test_sigkill_between_writes_then_rerun_ranks_each_sample_once(synthetic, tmp_path):
    clean, broken = tmp_path / "clean", tmp_path / "broken"
    shutil.copytree(synthetic, clean)
    shutil.copytree(synthetic, broken)
    done = kvw(clean, tmp_path / "clean.duckdb", *KEEP)
    assert done.wait(300) == 0, done.stdout.read()

    proc = kvw(broken, tmp_path / "broken.duckdb", *KEEP)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if list((broken / "rankings").rglob("*.parquet")):
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "killed while writing"
    written = list((broken / "rankings").rglob("*.parquet"))
    settings = {p.name.split(".")[1] for p in written}
    assert written and settings == {"question_aware"}, "killed after the first pass's files, before the second's"
    aware = len(
        duckdb.execute("SELECT DISTINCT sample_id FROM read_parquet(?)", [[str(p) for p in written]]).fetchall()
    )

    again = kvw(broken, tmp_path / "broken.duckdb", *KEEP)
    out = again.communicate(timeout=300)[0]
    assert again.returncode == 0, out
    passes = 1 if aware == 16 else 2  # the kill may also have cut the first pass's files short
    assert f"{32 - aware} (sample, setting) ranked in {passes} SQL pass(es)" in out, out
    assert f"{aware} already ranked" in out, out
    assert [p for p in broken.rglob("*") if p.name.startswith(".tmp-")] == [], "no temp files left"
    dupes, got = rankings(broken)
    assert dupes == 0
    assert got == rankings(clean)[1], "the same rankings as a run never interrupted"
    assert len(got) == 16 * 2 * 30 * 3
