"""`kvw extract` / `kvw evaluate` run the flows in the calling process, as a user types them: no deployment,
no `kvw serve`, no worker; with no Prefect server answering at PREFECT_API_URL, on a temporary one."""

import os
import subprocess
import sys

import duckdb
import pytest

from flows.cli import main
from tests.architectures import save
from tests.conftest import FIXTURE_LONGBENCH, REPO, free_port


def test_a_misspelt_parameter_is_refused_before_anything_runs(capsys):
    assert main(["extract", "-p", "limt=2"]) == 2
    err = capsys.readouterr().err
    assert "extract has no parameter 'limt'" in err and "limit" in err
    assert main(["evaluate", "-p", "budgets"]) == 2
    assert "name=value" in capsys.readouterr().err


def test_a_work_pool_needs_a_server_that_answers(capsys, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{free_port()}/api")
    assert main(["evaluate", "-p", "work_pool=gpus"]) == 2
    assert "work_pool needs the Prefect server" in capsys.readouterr().err


def kvw(env: dict, *args: str) -> subprocess.CompletedProcess:
    # a temporary server starting on a loaded 2-core machine can take longer than Prefect's default 20 s
    env = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180", **env}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


@pytest.mark.slow
def test_extract_then_evaluate_with_no_server_and_no_deployment(smol, tmp_path):
    """A quick look used to need a server, `kvw serve` and `prefect deployment run --watch`."""
    folder = save("llama", tmp_path / "model", smol.tokenizer)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PYTHONPATH=str(REPO), DO_NOT_TRACK="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false")  # fmt: skip
    dead = {**env, "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}  # env.sh's URL, no server started
    r = kvw(dead, "extract", "-p", f"model={folder}", "-p", f"data_dir={FIXTURE_LONGBENCH}", "-p", "tasks=trec",
            "-p", "max_tokens=256", "-p", f"output={out}", "-p", "device=cpu", "-p", "dtype=float32")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "no Prefect server at http://127.0.0.1:" in r.stderr and "running with a temporary one" in r.stderr
    got = dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line)
    assert got["samples"] == "1" and got["data"] == str(out / "data"), r.stdout
    r = kvw(env, "evaluate", "-p", "policies=[\"knorm\"]", "-p", "budgets=[0.5]", "-p", "setting=question_aware",
            "-p", f"run_id={got['run_id']}", "-p", f"output={out}", "-p", "max_new_tokens=4",
            "-p", "device=cpu")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "PREFECT_API_URL unset" in r.stderr
    assert f"run_id: {got['run_id']}" in r.stdout and "evaluated: 1" in r.stdout, r.stdout
    con = duckdb.connect(str(out / "kv.duckdb"), read_only=True)
    assert con.execute("SELECT count(*), count(kl_continuation) FROM quality_samples").fetchone() == (1, 1)
    con.close()
    assert (tmp_path / "prefect" / "prefect.db").exists(), "the runs are kept where a later server shows them"


@pytest.mark.slow
def test_a_failed_run_exits_1_with_its_message_and_no_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PYTHONPATH=str(REPO), DO_NOT_TRACK="1")
    r = kvw(env, "evaluate", "-p", f"output={tmp_path / 'empty'}", "-p", "device=cpu")
    assert r.returncode == 1 and "kvw evaluate: Failed:" in r.stderr, r.stderr[-3000:]
    assert "no extraction run" in r.stderr and "Traceback" not in r.stderr, "one line per error, no traceback"
    r = kvw({**env, "KVW_DEBUG": "1"}, "evaluate", "-p", f"output={tmp_path / 'empty'}", "-p", "device=cpu")
    assert r.returncode == 1 and "Traceback" in r.stderr, "KVW_DEBUG=1 keeps Prefect's traceback"


@pytest.mark.prefect
def test_a_server_that_answers_records_the_run(prefect_server, tmp_path):
    """With a server at PREFECT_API_URL the in-process run is recorded there (its UI shows it), no temporary one."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    r = kvw(dict(prefect_server), "evaluate", "-p", f"output={tmp_path / 'empty'}", "-p", "device=cpu")
    assert r.returncode == 1 and "temporary" not in r.stderr, r.stderr[-3000:]
    url = prefect_server["PREFECT_API_URL"]
    with temporary_settings(updates={PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        from prefect.client.schemas.sorting import FlowRunSort

        # the session's server holds hundreds of earlier runs (the fan-out test's 230 shards): newest first
        latest = client.read_flow_runs(sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=50)
        runs = [fr for fr in latest if fr.parameters.get("output") == str(tmp_path / "empty")]
    assert len(runs) == 1 and runs[0].state.is_failed() and runs[0].name.startswith("evaluate-")
