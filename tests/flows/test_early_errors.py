"""Issue 10 item 7: each bad input gets a `kvw:`/flow error naming the problem, before any model work,
and errors that cannot succeed are not retried."""

import subprocess
import sys
import time

import pytest
import torch
from prefect.states import Failed

from extract import model as models
from flows.cli import main
from tests.conftest import FIXTURE_LONGBENCH, REPO
from warehouse.remote import StoreError


def test_sql_on_a_catalog_locked_by_a_writer_says_so(small_warehouse, tmp_path, capsys):
    """A process holding the catalog read-write (e.g. the `duckdb` CLI) used to give a raw IOException."""
    db = tmp_path / "kv.duckdb"
    db.write_bytes(small_warehouse["db"].read_bytes())
    hold = f"import duckdb, sys; c = duckdb.connect({str(db)!r}); print('ok', flush=True); sys.stdin.read()"
    holder = subprocess.Popen([sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        assert main(["sql", "--db", str(db), "SELECT count(*) FROM samples"]) == 1
    finally:
        holder.communicate("")
    err = capsys.readouterr().err
    assert err.startswith("kvw sql:") and "in use by another process" in err and "Traceback" not in err


def test_sql_csv_into_a_closed_pipe_is_quiet(small_warehouse):
    """`kvw sql --csv ... | head` used to end with a BrokenPipeError traceback."""
    cmd = (f"{sys.executable} -m flows.cli sql --csv --db {small_warehouse['db']} "
           f"'SELECT * FROM range(500000)' | head -n 2")  # fmt: skip
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=REPO)
    assert r.stdout.splitlines() == ["range", "0"]
    assert r.stderr == ""


def test_report_into_an_unwritable_folder_is_refused_first(small_warehouse, tmp_path, capsys):
    """`kvw report --out /proc/forbidden` used to fail with a raw OSError after building the catalog."""
    rc = main(["report", "--db", str(tmp_path / "kv.duckdb"), "--data", str(small_warehouse["store"].root),
               "--out", "/proc/forbidden/x", "--demo", "never", "--only", "kv_cache_statistics"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("kvw report:") and "/proc/forbidden/x" in err and "writ" in err


def test_report_of_an_unknown_run_is_refused(small_warehouse, tmp_path, capsys):
    """`kvw report --run-id nope` used to draw the run with the most samples instead, silently."""
    rc = main(["report", "--db", str(tmp_path / "kv.duckdb"), "--data", str(small_warehouse["store"].root),
               "--out", str(tmp_path / "out"), "--run-id", "nope", "--demo", "never",
               "--only", "kv_cache_statistics"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "nope" in err and small_warehouse["run_id"] in err
    assert not (tmp_path / "out" / "kv_cache_statistics.html").exists()


@pytest.fixture
def no_model_load(monkeypatch):
    """Any model load fails the test: these errors must come first."""

    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the bad parameter was refused")

    monkeypatch.setattr(models, "load_cached", refuse)
    monkeypatch.setattr(models, "load", refuse)


def _extract(tmp_path, **kw):
    from flows.extract_flow import extract

    params = dict(data_dir=str(FIXTURE_LONGBENCH), tasks=["qasper"], limit=1, output=str(tmp_path / "out"))
    return extract.fn(**{**params, **kw})  # the flow body itself: its checks run before any Prefect task


def test_extract_into_an_unwritable_output_is_refused_first(tmp_path, no_model_load):
    """`output=/proc/forbidden` used to fail after the model load and the prefills."""
    with pytest.raises(ValueError, match="/proc/forbidden"):
        _extract(tmp_path, output="/proc/forbidden")


@pytest.mark.parametrize("bad", ["a/b", "..", "x<y", ".hidden", "run name"])
def test_a_run_name_that_cannot_name_a_folder_is_refused_first(tmp_path, no_model_load, bad):
    """`run_name` with `/`, `..` or `<` used to be refused only at the first write, after a prefill and two
    retries, naming `run_id`."""
    with pytest.raises(ValueError, match=r"^run_name .* cannot name a run"):
        _extract(tmp_path, run_name=bad)
    from flows.extract_flow import extract_shard

    with pytest.raises(ValueError, match=r"^run_name "):
        extract_shard.fn(task="qasper", start=0, stop=1, data_dir=str(FIXTURE_LONGBENCH),
                         output=str(tmp_path / "out"), run_name=bad)  # fmt: skip
    assert not list(tmp_path.rglob("*.parquet"))


def test_extract_on_cuda_without_cuda_is_refused_first(tmp_path, no_model_load, monkeypatch):
    """`device=cuda` without CUDA used to be a raw AssertionError, after 3 attempts."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(models.ModelError, match="device 'cuda'.*no usable CUDA"):
        _extract(tmp_path, device="cuda")


def test_extract_with_a_bad_dtype_is_refused_first(tmp_path, no_model_load):
    with pytest.raises(models.ModelError, match="dtype 'float8'"):
        _extract(tmp_path, dtype="float8")


def test_a_model_that_is_nowhere_fails_fast(tmp_path, no_model_load, monkeypatch):
    """`model=does-not-exist` used to take 172 s of retries, then "couldn't reach huggingface.co"."""
    from tests.conftest import free_port

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # a hub that does not answer, anywhere
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t0 = time.perf_counter()
    with pytest.raises(models.ModelError, match="'does-not-exist' is not a local folder.*127.0.0.1 cannot be"):
        _extract(tmp_path, model="does-not-exist")
    assert time.perf_counter() - t0 < 20
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(models.ModelError, match="HF_HUB_OFFLINE is set"):
        _extract(tmp_path, model="org/does-not-exist")


def test_model_errors_are_not_retried():
    """A ModelError (bad id, dtype, device) cannot succeed on a second attempt; an OSError (a flaky disk,
    a hub hiccup) may."""
    from flows import evaluate_flow, extract_flow

    for task in (extract_flow.load_model, evaluate_flow.load_model):
        assert task.retries == 2
        assert task.retry_condition_fn(task, None, Failed(data=models.ModelError("nope"))) is False
        assert task.retry_condition_fn(task, None, Failed(data=OSError("flaky"))) is True
        assert task.retry_condition_fn(task, None, Failed(data=StoreError("s3://b: access denied"))) is False
        assert task.retry_condition_fn(task, None, Failed(data=ValueError("a shape"))) is False
    for task in (extract_flow.extract_sample, evaluate_flow.evaluate_sample):  # deterministic: not retried
        assert task.retry_condition_fn(task, None, Failed(data=models.ArchitectureError("hybrid"))) is False
        assert task.retry_condition_fn(task, None, Failed(data=RuntimeError("size mismatch"))) is False
        assert task.retry_condition_fn(task, None, Failed(data=OSError("disk"))) is True


def test_evaluate_into_an_unwritable_output_is_refused_first(no_model_load):
    from flows.evaluate_flow import evaluate

    with pytest.raises(ValueError, match="/proc/forbidden"):
        evaluate.fn(output="/proc/forbidden")


def test_evaluate_on_cuda_without_cuda_is_refused_first(tmp_path, no_model_load, monkeypatch):
    from flows.evaluate_flow import evaluate

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(models.ModelError, match="no usable CUDA"):
        evaluate.fn(output=str(tmp_path / "out"), device="cuda")


def test_a_folder_that_is_no_model_is_refused_first(tmp_path, no_model_load):
    """An empty folder used to reach the tokenizer and fail with a raw ValueError, retried twice."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(models.ModelError, match="has no config.json"):
        _extract(tmp_path, model=str(tmp_path / "empty"))


def test_a_model_that_fails_to_load_raises_a_model_error(tmp_path):
    """What passes the checks and still fails to load is a ModelError too, so it is not retried."""
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(models.ModelError, match="cannot load model"):
        models.load(str(tmp_path / "broken"), device="cpu")
