"""The `report/longbench` deployment end to end: a real Prefect server, `python -m flows.serve`, the
`prefect deployment run` CLI. On a warehouse without demo tables the flow runs the model demo first."""

import shutil

import duckdb
import pytest

from reports.registry import REPORTS
from tests.flows.conftest import prefect, run_deployment, serving

pytestmark = [pytest.mark.prefect, pytest.mark.model]


@pytest.fixture(scope="module")
def served(prefect_server, small_warehouse, tmp_path_factory):
    base = tmp_path_factory.mktemp("report-served")
    shutil.copytree(small_warehouse["store"].root, base / "data")  # no demo, keep or quality tables
    env = dict(prefect_server, KVW_DATA=str(base / "data"), KVW_DB=str(base / "kv.duckdb"))
    with serving(env, base, "report/longbench"):
        yield env, base


def test_deployment_runs_the_demo_when_missing_and_builds_every_page(served):
    env, base = served
    out = base / "pages"
    r = run_deployment(env, "report/longbench", f"output={base}", f"out={out}", "demo_new_tokens=3")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    pages = sorted(p.stem for p in out.glob("*.html"))
    assert len(pages) == len(REPORTS) + 1 and "index" in pages  # one run here: one page per report
    con = duckdb.connect(str(base / "kv.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM demo_decode").fetchall() == [(3,)]
    assert 'data-render="nodata"' in (out / "strategy_comparison.html").read_text()  # no quality rows here
    assert 'data-render="nodata"' not in (out / "kv_caching.html").read_text()
    art = prefect(env, "artifact", "inspect", "reports-index", timeout=60)
    assert art.returncode == 0 and (out / "index.html").as_uri() in art.stdout


def test_unknown_report_fails_the_run_before_any_work(served):
    env, base = served
    out = base / "bad-pages"
    r = run_deployment(env, "report/longbench", f"output={base}", f"out={out}", 'only=["kv_cache_layers", "nope"]')
    assert r.returncode == 1 and "Failed" in r.stdout
    assert not out.exists()
