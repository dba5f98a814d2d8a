"""The catalog file opens in older DuckDB releases than the one that wrote it (the CLIs users have).

Each old release (scripts/old-duckdb.txt) is fetched by scripts/setup.sh, pinned and without dependencies, into
its own folder of the cache directory (KVW_CACHE), and runs in a subprocess with that folder first on sys.path.
The test never installs: one not fetched (setup ran offline) is skipped, saying so."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.warehouse.test_catalog import warehouse
from warehouse import catalog, config

OLD = [v.strip() for v in (REPO / "scripts" / "old-duckdb.txt").read_text().splitlines() if v.strip()[:1].isdigit()]

READ = """
import json, sys
import duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
views = [v for (v,) in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1").fetchall()]
counts = {v: con.execute(f'SELECT count(*) FROM "{v}"').fetchall()[0][0] for v in views}
print(json.dumps({"version": duckdb.__version__, "counts": counts}))
"""


def old_duckdb(version: str):
    target = config.cache_dir() / "old-duckdb" / version
    if not (target / "duckdb").is_dir():
        pytest.skip(f"duckdb=={version} is not in {target}: scripts/setup.sh fetches it (it needs the network once)")
    return target


@pytest.mark.parametrize("version", OLD)
def test_an_older_duckdb_opens_the_catalog_and_queries_every_view(tmp_path, version):
    """DuckDB 2.0 writes its v2.0.0 format by default: 1.4.4 refused it ("created with a newer version")."""
    store = warehouse(tmp_path / "data")
    db = catalog.build(store, tmp_path / "kv.duckdb")
    env = {"PYTHONPATH": str(old_duckdb(version)), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", READ, str(db)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout)
    assert got["version"] == version  # really the old release, not the venv's
    new = catalog.connect(db)
    views = [v for (v,) in new.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()]
    want = {v: new.execute(f'SELECT count(*) FROM "{v}"').fetchall()[0][0] for v in views}
    new.close()
    assert got["counts"] == want and got["counts"]["token_stats"] == 4 and got["counts"]["samples"] == 2
