"""The `report/longbench` deployment end to end: a real Prefect server, `python -m flows.serve`, the
`prefect deployment run` CLI. On a warehouse without demo tables the flow runs the model demo first."""

import shutil
import subprocess
import sys
import time

import duckdb
import pytest

from tests.conftest import REPO, stop

pytestmark = [pytest.mark.prefect, pytest.mark.model]


def prefect(env, *args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def served(prefect_server, small_warehouse, tmp_path_factory):
    base = tmp_path_factory.mktemp("report-served")
    shutil.copytree(small_warehouse["store"].root, base / "data")  # no demo, keep or quality tables
    env = dict(prefect_server, KVW_DATA=str(base / "data"), KVW_DB=str(base / "kv.duckdb"))
    with open(base / "serve.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.serve"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    deadline = time.time() + 120
    while prefect(env, "deployment", "inspect", "report/longbench", timeout=60).returncode != 0:
        if proc.poll() is not None or time.time() > deadline:
            stop(proc)
            pytest.fail(f"serve did not register report/longbench:\n{(base / 'serve.log').read_text()[-3000:]}")
        time.sleep(1)
    yield env, base
    stop(proc)


def run(env, *params):
    args = ["deployment", "run", "report/longbench", "--watch", "--watch-timeout", "600"]
    for p in params:
        args += ["-p", p]
    return prefect(env, *args)


def test_deployment_runs_the_demo_when_missing_and_builds_every_page(served):
    env, base = served
    out = base / "pages"
    r = run(env, f"output={base}", f"out={out}", "demo_new_tokens=3")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    pages = sorted(p.stem for p in out.glob("*.html"))
    assert len(pages) == 16 and "index" in pages
    con = duckdb.connect(str(base / "kv.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM demo_decode").fetchall() == [(3,)]
    assert 'data-render="nodata"' in (out / "strategy_comparison.html").read_text()  # no quality rows here
    assert 'data-render="nodata"' not in (out / "kv_caching.html").read_text()
    art = prefect(env, "artifact", "inspect", "reports-index", timeout=60)
    assert art.returncode == 0 and (out / "index.html").as_uri() in art.stdout


def test_unknown_report_fails_the_run_before_any_work(served):
    env, base = served
    out = base / "bad-pages"
    r = run(env, f"output={base}", f"out={out}", 'only=["kv_cache_layers", "nope"]')
    assert r.returncode == 1 and "Failed" in r.stdout
    assert not out.exists()
