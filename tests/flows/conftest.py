"""Plumbing shared by the deployment tests: the real `prefect` CLI and a real `python -m flows.serve`."""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import REPO, stop


def prefect(env: dict, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """The real CLI, as a user types it."""
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


@contextmanager
def serving(env: dict, base: Path, deployment: str):
    """`python -m flows.serve` until the block ends; waits until `deployment` is registered."""
    with open(base / "serve.log", "w") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.serve"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.time() + 120
        while prefect(env, "deployment", "inspect", deployment, timeout=60).returncode != 0:
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"serve did not register {deployment}:\n{(base / 'serve.log').read_text()[-3000:]}")
            time.sleep(1)
        yield
    finally:
        stop(proc)


def run_deployment(env: dict, deployment: str, *params: str) -> subprocess.CompletedProcess:
    """`prefect deployment run NAME -p k=v ... --watch`: exit 0 on Completed, 1 on Failed."""
    args = ["deployment", "run", deployment, "--watch", "--watch-timeout", "600"]
    for p in params:
        args += ["-p", p]
    return prefect(env, *args)
