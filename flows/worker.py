"""`kvw worker`: one Prefect process worker per GPU (or per slice of CPU threads), in the foreground.

Each worker is a plain `prefect worker start --type process` whose environment pins it: shard runs it
starts inherit that environment, so a worker started with CUDA_VISIBLE_DEVICES=3 only ever runs shards
on GPU 3, and one started with KVW_TORCH_THREADS=4 runs them on 4 torch threads. One shard at a time per
worker (`--limit 1`): a GPU holds one model. A worker that exits is started again; Ctrl-C or SIGTERM
stops every worker it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass

from warehouse.config import REPO

THREADS_VAR = "KVW_TORCH_THREADS"
GRACE_SECONDS = 15.0
RESTART_DELAY = 2.0


def apply_thread_pin() -> int:
    """Honour KVW_TORCH_THREADS in a shard run (set by `kvw worker --threads`); returns torch's thread count."""
    import torch

    n = os.environ.get(THREADS_VAR)
    if n:
        torch.set_num_threads(int(n))
    return torch.get_num_threads()


@dataclass(frozen=True)
class Slot:
    name: str
    env: dict[str, str]


def slots(gpus: list[str] | None, cpu: int | None, threads: int | None, prefix: str, per_gpu: int = 1) -> list[Slot]:
    """`per_gpu` workers per GPU id (CUDA_VISIBLE_DEVICES), or `cpu` workers; each with `threads` torch threads
    (default: the cores divided among the workers). Several workers per GPU run the CPU half of extraction
    (tokenizing, Parquet) in parallel processes: on an H200, 3 per GPU took an 8B model's extraction from 2.4x
    to 1.7x its bare prefill (README, On a GPU); each holds its own model copy."""
    if per_gpu < 1:
        raise ValueError(f"--per-gpu must be >= 1, got {per_gpu}")
    if gpus:
        gpus = [g for g in gpus for _ in range(per_gpu)]
    n = len(gpus) if gpus else cpu
    if not n or n < 1:
        raise ValueError("give --gpu N, --gpus 0,1,... or --cpu N")
    threads = threads or max(1, (os.cpu_count() or 1) // n)  # the node's cores, shared out: no oversubscription
    if gpus:
        out, seen = [], Counter(gpus)
        for i, g in enumerate(gpus):
            nth = f"-{gpus[:i].count(g)}" if seen[g] > 1 else ""  # a GPU listed twice gets two named workers
            out.append(Slot(f"{prefix}-gpu{g}{nth}", {"CUDA_VISIBLE_DEVICES": g, **_threads(threads)}))
        return out
    return [Slot(f"{prefix}-cpu{i}", {"CUDA_VISIBLE_DEVICES": "", **_threads(threads)}) for i in range(cpu)]


def _threads(n: int) -> dict[str, str]:
    return {THREADS_VAR: str(n), "OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}


def worker_command(pool: str, name: str) -> list[str]:
    return [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process",
            "--name", name, "--limit", "1"]  # fmt: skip


def worker_env(slot: Slot) -> dict[str, str]:
    """The caller's environment, the slot's pins, and the repo on PYTHONPATH (shard flows import `flows.*`)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, **slot.env, "PYTHONPATH": path}


def run_workers(pool: str, chosen: list[Slot]) -> int:
    """Start the workers and keep them up (one that exits is started again) until SIGINT/SIGTERM stops them all."""
    if not os.environ.get("PREFECT_API_URL"):
        print("PREFECT_API_URL is not set: point it at the server (`source scripts/env.sh`)", file=sys.stderr)
        return 2
    procs: list[subprocess.Popen] = []
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        procs = [start(pool, slot) for slot in chosen]
        while not stopping:
            time.sleep(0.5)
            for i, (slot, p) in enumerate(zip(chosen, procs, strict=True)):
                if p.poll() is not None and not stopping:
                    print(f"worker {slot.name} exited ({p.returncode}): starting it again", file=sys.stderr, flush=True)
                    time.sleep(RESTART_DELAY)
                    procs[i] = start(pool, slot)
    finally:
        stop_all(procs)
        for s, handler in old.items():
            signal.signal(s, handler)
    return 0


def start(pool: str, slot: Slot) -> subprocess.Popen:
    """One worker in its own process group (so it and the shard it runs can be stopped together)."""
    proc = subprocess.Popen(worker_command(pool, slot.name), env=worker_env(slot), cwd=REPO, start_new_session=True)
    pins = " ".join(f"{k}={v!r}" for k, v in slot.env.items())
    print(f"worker {slot.name} on pool {pool}: pid {proc.pid}, {pins}", flush=True)
    return proc


def stop_all(procs: list[subprocess.Popen], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM every worker's process group, wait, then SIGKILL what is left of the workers and of the shard
    runs they started (Prefect may start those in a session of their own)."""
    import psutil

    shards = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            shards += psutil.Process(p.pid).children(recursive=True)
        if p.poll() is None:
            _signal_group(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(p, signal.SIGKILL)
            p.wait(5)
    _, alive = psutil.wait_procs(shards, timeout=max(0.1, deadline - time.monotonic()))
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def _signal_group(p: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, sig)
