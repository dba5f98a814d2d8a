"""Work-pool fan-out for real: a Prefect server on loopback, `kvw deploy`, `kvw worker --cpu 2 --threads 1`
(two process workers of one torch thread each), parents that submit one child run per shard, the real model."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import psutil
import pytest

from tests.conftest import FIXTURE_LONGBENCH, REPO, stop
from tests.flows.conftest import prefect
from tests.fswatch import Watch

pytestmark = [pytest.mark.prefect, pytest.mark.model]

POOL = "kvw-test"
MODEL_DIR = "model=SmolLM2-135M-Instruct"
SKIP_COLUMNS = {  # when they ran, how long: everything else must be equal row for row
    "samples": "extracted_at, prefill_seconds, stats_seconds",
    "tokens": "",
    "token_stats": "",
    "layer_stats": "",
    "skipped": "skipped_at",
    "quality": "evaluated_at, decode_seconds, decode_seconds_full, prefill_seconds",
}
KEYS = {
    "samples": "task, sample_id",
    "tokens": "task, sample_id, position",
    "token_stats": "task, sample_id, layer, kv_head, position",
    "layer_stats": "task, sample_id, layer, kv_head",
    "quality": "task, sample_id, policy_id, setting",
}


@pytest.fixture(scope="module")
def pool(prefect_server, tmp_path_factory):
    """The shard deployments on a process pool, and two CPU workers polling it; yields (env, worker pids)."""
    base = tmp_path_factory.mktemp("pool")
    env = dict(prefect_server, PREFECT_WORKER_QUERY_SECONDS="1", KVW_LONGBENCH=str(FIXTURE_LONGBENCH),
               KVW_DATA=str(base / "nowhere"))  # fmt: skip
    deploy = [sys.executable, "-m", "flows.cli", "deploy", "--pool", POOL, "--zombie-seconds", "60"]
    r = subprocess.run(deploy, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "extract-shard/longbench on pool" in r.stdout and "evaluate-shard/longbench on pool" in r.stdout
    log = base / "workers.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "worker", "--pool", POOL, "--cpu", "2",
                                 "--threads", "1"], env=env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    deadline = time.time() + 60
    while len(pids := [int(p) for p in re.findall(r"pid (\d+)", log.read_text())]) < 2:
        assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    yield env, pids, log
    stop(proc, grace=30)  # SIGTERM to `kvw worker`: it must stop the workers it started
    time.sleep(0.5)
    started = [int(p) for p in re.findall(r"pid (\d+)", log.read_text())]  # restarted ones too
    assert not [p for p in started if alive(p)], f"workers outlived `kvw worker`:\n{log.read_text()[-3000:]}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state not in ("Z", "X")


def partial_write(data: Path) -> tuple[set, set]:
    """(finished samples, samples with token_stats written but no `samples` row yet)."""
    done = {p.name for p in (data / "samples").rglob("*.parquet")}
    return done, {p.name for p in (data / "token_stats").rglob("*.parquet")} - done


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def descendants(pid: int) -> list[int]:
    with contextlib.suppress(psutil.NoSuchProcess):
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    return []


def flow_call(env: dict, flow: str, kwargs: str, **popen) -> subprocess.Popen | subprocess.CompletedProcess:
    """Run a parent flow in a fresh process against the test server; prints its final state."""
    code = (f"from flows.{flow}_flow import {flow}\n"
            f"state = {flow}({kwargs}, return_state=True)\nprint('FINAL', state.type.name, state.message)")  # fmt: skip
    args = [sys.executable, "-c", code]
    if popen:
        return subprocess.Popen(args, env=env, cwd=REPO, **popen)
    return subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)


def final(r: subprocess.CompletedProcess) -> str:
    m = re.search(r"^FINAL (.*)$", r.stdout, re.M)
    assert m, r.stdout[-3000:] + r.stderr[-5000:]
    return m.group(1)


def summary(env: dict, key: str) -> str:
    """The markdown of the newest artifact under `key` (the parent's run summary)."""
    r = prefect(env, "artifact", "inspect", key, "--limit", "1", "-o", "json", timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)[0]["data"]


def rows(db: Path, table: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        skip = SKIP_COLUMNS[table]
        cols = f"* EXCLUDE ({skip})" if skip else "*"
        return con.execute(f"SELECT {cols} FROM {table} ORDER BY ALL").fetchall()
    finally:
        con.close()


def test_two_workers_write_the_same_rows_as_one_process(pool, tmp_path):
    env, _, _ = pool
    args = f"data_dir={str(FIXTURE_LONGBENCH)!r}, tasks='qasper,trec', limit=2, max_tokens=256"
    t0 = time.time()
    local = flow_call(dict(env, OMP_NUM_THREADS="1"), "extract", f"{args}, output={str(tmp_path / 'local')!r}")
    t1 = time.time()
    pooled = flow_call(env, "extract", f"{args}, output={str(tmp_path / 'pool')!r}, work_pool={POOL!r}, shard_size=2")
    t2 = time.time()
    print(f"in-process {t1 - t0:.1f}s, pool of 2 workers (2 shards) {t2 - t1:.1f}s")
    assert final(local) == "COMPLETED None" and final(pooled) == "COMPLETED None", pooled.stdout[-3000:]
    for table in ("samples", "tokens", "token_stats", "layer_stats"):
        want, got = rows(tmp_path / "local" / "kv.duckdb", table), rows(tmp_path / "pool" / "kv.duckdb", table)
        assert got == want and len(want) > 0, table
    assert len(rows(tmp_path / "pool" / "kv.duckdb", "samples")) == 4
    con = duckdb.connect(str(tmp_path / "pool" / "kv.duckdb"), read_only=True)
    samples, tokens, params = con.execute("SELECT samples, tokens, parameters FROM runs").fetchone()
    assert (samples, tokens) == (4, 4 * 256) and '"work_pool": "kvw-test"' in params
    art = summary(env, "extract-summary")
    assert f"Shards on pool `{POOL}`" in art and art.count("| completed | 1 | 2 |") == 2, art


def test_a_killed_shard_and_a_killed_worker_are_resubmitted_and_every_key_lands_once(pool, tmp_path):
    """Mid-write, SIGKILL one worker with everything it started (a lost node: its run goes silent, the zombie
    automation of `kvw deploy` marks it Crashed) and the other worker's shard run (its worker reports it)."""
    env, workers, log = pool
    out = tmp_path / "pool"
    data = out / "data"
    args = (f"data_dir={str(FIXTURE_LONGBENCH)!r}, tasks='qasper,trec', limit=2, max_tokens=256,"
            f" output={str(out)!r}, work_pool={POOL!r}, shard_size=2")  # fmt: skip
    watch = Watch(data)  # before any shard writes: each file that lands wakes the loop below
    parent = flow_call(env, "extract", args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       start_new_session=True)  # fmt: skip
    killed, deadline = [], time.time() + 300
    try:
        while not killed and time.time() < deadline and parent.poll() is None:
            watch.wait(1.0)  # a file landed: look now (a sample's partial window is ~5 ms)
            if not all(partial_write(data)):
                continue
            busy = [w for w in workers if descendants(w)]  # workers running a shard now
            lost = busy[0] if busy else workers[0]
            other = next(w for w in workers if w != lost)
            lost_node = [lost, *descendants(lost)]
            targets = [*lost_node, *descendants(other)]
            signal_all(targets, signal.SIGSTOP)  # freeze them, then make sure a sample is still half written
            if not all(partial_write(data)):
                signal_all(targets, signal.SIGCONT)
                continue
            killed = [*lost_node[1:], *descendants(other)]
            signal_all(targets, signal.SIGKILL)
        assert killed, "no shard was caught mid-write"
        stdout, _ = parent.communicate(timeout=600)
    finally:
        watch.close()
        stop(parent)
    assert re.search(r"^FINAL COMPLETED None$", stdout, re.M), stdout[-5000:]
    con = duckdb.connect(str(out / "kv.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM samples").fetchone() == (4,)
    for table, key in KEYS.items():
        if table == "quality":
            continue
        total, distinct = con.execute(f"SELECT count(*), count(DISTINCT ({key})) FROM {table}").fetchone()
        assert total == distinct, f"{table} has duplicate rows"
    assert con.execute("SELECT count(*) FROM token_stats").fetchone() == (4 * 30 * 3 * 256,)
    assert not list(data.rglob(".tmp-*")), "temp files of the killed shards were left behind"
    art = summary(env, "extract-summary")
    # the lost node's shard ran twice; the other worker's, killed too, may have finished its last write first
    assert 1 <= len(re.findall(r"\| completed \| 2 \|", art)) <= len(busy), art
    assert "no heartbeat for 60 s: worker lost" in stdout  # the lost node's shard, crashed by the automation
    assert "exited (-9): starting it again" in log.read_text()  # `kvw worker` brought the lost worker back


def test_a_failing_shard_does_not_sink_the_others_and_the_run_ends_failed(pool, tmp_path):
    """A file where trec's folder should be (every trec write fails, like a full disk), in a pool run and in an
    in-process run side by side: qasper lands, trec is recorded as failed, both runs end Failed with the count."""
    env, _, _ = pool
    args = f"data_dir={str(FIXTURE_LONGBENCH)!r}, tasks='qasper,trec', limit=1, max_tokens=256"
    procs = {}
    for name, extra in (("pool", f", work_pool={POOL!r}, shard_size=1"), ("local", "")):
        blocked = tmp_path / name / "data" / "tokens" / MODEL_DIR / "task=trec"
        blocked.parent.mkdir(parents=True)
        blocked.write_text("a file where a folder should be")
        procs[name] = flow_call(env, "extract", f"{args}, output={str(tmp_path / name)!r}{extra}",
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        r = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        unit = "shards" if name == "pool" else "samples"
        assert final(r).startswith(f"FAILED 1 of 2 {unit} failed: trec"), (name, final(r))
        con = duckdb.connect(str(tmp_path / name / "kv.duckdb"), read_only=True)
        assert con.execute("SELECT task FROM samples").fetchall() == [("qasper",)], name
        reason = con.execute("SELECT reason FROM skipped WHERE task = 'trec'").fetchone()[0]
        assert reason.startswith("extraction failed:") and "NotADirectoryError" in reason, reason
        assert con.execute("SELECT samples, skipped FROM runs").fetchone() == (1, 1), name


@pytest.fixture
def warehouse_copy(small_warehouse, tmp_path):
    """Two copies of the small real extraction: one for the in-process evaluation, one for the pool's."""
    for name in ("local", "pool"):
        shutil.copytree(small_warehouse["store"].root, tmp_path / name / "data")
    return tmp_path


def test_evaluate_on_two_workers_writes_the_same_quality_as_one_process(pool, warehouse_copy):
    env, _, _ = pool
    base = warehouse_copy
    args = ("policies='sink_recent,knorm', budgets=[64], setting='question_aware', tasks='trec,qasper', limit=1, "
            "max_new_tokens=3, "
            f"data_dir={str(FIXTURE_LONGBENCH)!r}")  # fmt: skip
    local = flow_call(dict(env, OMP_NUM_THREADS="1"), "evaluate", f"{args}, output={str(base / 'local')!r}")
    pooled = flow_call(env, "evaluate", f"{args}, output={str(base / 'pool')!r}, work_pool={POOL!r}, shard_size=1")
    assert final(local) == "COMPLETED None" and final(pooled) == "COMPLETED None", pooled.stdout[-3000:]
    want, got = rows(base / "local" / "kv.duckdb", "quality"), rows(base / "pool" / "kv.duckdb", "quality")
    assert got == want and len(want) == 4  # 2 samples x 2 policies
    art = summary(env, "evaluate-summary")
    assert f"Shards on pool `{POOL}`" in art and art.count("| completed | 1 |") == 2, art
    again = flow_call(env, "evaluate", f"{args}, output={str(base / 'pool')!r}, work_pool={POOL!r}, shard_size=1")
    assert final(again) == "COMPLETED None"  # nothing pending: no shard is submitted, nothing rewritten
    assert rows(base / "pool" / "kv.duckdb", "quality") == got
