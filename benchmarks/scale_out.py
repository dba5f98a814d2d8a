"""Scale-out, side by side in one run on this machine (issue 8's benchmark).

1. Extraction throughput through a real work pool: a Prefect server on loopback, `kvw deploy`, then the
   same `extract` run (real model, real LongBench samples, `work_pool=` set) served by `kvw worker --cpu 1
   --threads 1` and by `kvw worker --cpu 2 --threads 1` (goal: 2 workers >= 1.7x one). Each side writes
   its own warehouse; both must hold the same samples.
2. The storage half (benchmarks/object_store.py): seconds per sample written to a loopback S3 server vs a
   local folder (goal <= 1.2x), and the catalog build over the S3 layout at 1,000 and 10,000 files.

    python benchmarks/scale_out.py                                     # 8 samples at 1,024 tokens; 1K and 10K files
    python benchmarks/scale_out.py --samples 4 --max-tokens 512 --files 1000   # a quicker look
    python benchmarks/scale_out.py --skip-storage                      # the work-pool half only
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parents[1]
POOL = "kvw-bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM the process group (a `kvw worker` stops its workers), then SIGKILL."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def start_server(home: Path) -> tuple[subprocess.Popen, dict]:
    port = free_port()
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", PREFECT_RUNNER_POLL_FREQUENCY="1",
               PREFECT_WORKER_QUERY_SECONDS="1", PYTHONPATH=str(REPO))  # fmt: skip
    log = open(home / "server.log", "w")  # noqa: SIM115 - the child keeps its own descriptor
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                             str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            cwd=REPO)  # fmt: skip
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
            return proc, env
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                stop(proc)
                tail = (home / "server.log").read_text()[-3000:]
                raise SystemExit(f"Prefect server did not start:\n{tail}") from None
            time.sleep(0.5)


def kvw(env: dict, *args: str, **popen):
    cmd = [sys.executable, "-m", "flows.cli", *args]
    if popen:
        return subprocess.Popen(cmd, env=env, cwd=REPO, start_new_session=True, **popen)
    r = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    if r.returncode:
        raise SystemExit(f"kvw {' '.join(args)} failed:\n{r.stdout[-2000:]}{r.stderr[-3000:]}")
    return r


def run_with_workers(env: dict, base: Path, n_workers: int, a) -> tuple[float, Path]:
    """Start `n_workers` CPU workers of one torch thread, run one pooled extraction; its seconds and its db."""
    out = base / f"workers{n_workers}"
    log = out.with_suffix(".log")
    out.mkdir()
    with open(log, "w") as fh:
        workers = kvw(env, "worker", "--pool", POOL, "--cpu", str(n_workers), "--threads", "1", stdout=fh,
                      stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.time() + 60
        while len(re.findall(r"pid (\d+)", log.read_text())) < n_workers:
            if workers.poll() is not None or time.time() > deadline:
                raise SystemExit(f"workers did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        time.sleep(3)  # the workers' first poll of the pool
        code = (f"from flows.extract_flow import extract\n"
                f"s = extract(tasks={a.tasks!r}, limit={a.samples}, max_tokens={a.max_tokens}, output={str(out)!r}, "
                f"work_pool={POOL!r}, shard_size={a.shard_size}, return_state=True)\n"
                f"print('FINAL', s.type.name, s.message)")  # fmt: skip
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                           timeout=3600)  # fmt: skip
        seconds = time.perf_counter() - t0
        if "FINAL COMPLETED" not in r.stdout:
            raise SystemExit(f"pooled extraction did not complete:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
        return seconds, out / "kv.duckdb"
    finally:
        stop(workers)


def samples_in(db: Path) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT task, sample_id, n_tokens FROM samples ORDER BY ALL").fetchall()
    finally:
        con.close()


def work_pool_half(a) -> None:
    base = Path(tempfile.mkdtemp(prefix="kvw-scale-out-"))
    server, env = start_server(base)
    try:
        env["KVW_DATA"] = str(base / "unused")
        kvw(env, "deploy", "--pool", POOL)
        one, db1 = run_with_workers(env, base, 1, a)
        two, db2 = run_with_workers(env, base, 2, a)
        s1, s2 = samples_in(db1), samples_in(db2)
        if s1 != s2 or not s1:
            raise SystemExit(f"the two runs hold different samples: {s1} vs {s2}")
        n, tokens = len(s1), sum(r[2] for r in s1)
        print(f"\n== work pool: {n} samples ({tokens} tokens; {a.tasks}, <= {a.max_tokens} tokens each), shards of "
              f"{a.shard_size}, CPU workers of 1 torch thread; {os.cpu_count()} cores ==")  # fmt: skip
        print(f"{'workers':>8} {'seconds':>8} {'samples/min':>12} {'tokens/s':>9}")
        for w, s in ((1, one), (2, two)):
            print(f"{w:>8} {s:>8.1f} {60 * n / s:>12.2f} {tokens / s:>9.1f}")
        print(f"speed-up 2 workers vs 1: {one / two:.2f}x (goal >= 1.7x; includes each shard's process start "
              f"and model load, and the parent's catalog build)")  # fmt: skip
    finally:
        stop(server)
        shutil.rmtree(base, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["qasper", "multifieldqa_en"])
    ap.add_argument("--samples", type=int, default=4, help="samples per task")
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--shard-size", type=int, default=2)
    ap.add_argument("--files", type=int, nargs="+", default=[1000, 10000], help="catalog sizes of the S3 half")
    ap.add_argument("--skip-storage", action="store_true")
    ap.add_argument("--skip-pool", action="store_true")
    a = ap.parse_args(argv)
    if not a.skip_pool:
        work_pool_half(a)
    if not a.skip_storage:
        sys.path.insert(0, str(Path(__file__).parent))
        import object_store

        print("\n== object storage (benchmarks/object_store.py) ==", flush=True)
        return object_store.main(["--files", *map(str, a.files)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
