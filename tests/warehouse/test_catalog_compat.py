"""The catalog file opens in older DuckDB releases than the one that wrote it (the CLIs users have).

Each old release is pip-installed once, pinned and without dependencies, into its own folder of the cache
directory (KVW_CACHE), and runs in a subprocess with that folder first on sys.path."""

import json
import subprocess
import sys

import pytest

from tests.warehouse.test_catalog import warehouse
from warehouse import catalog, config

# 1.3: the oldest that runs every view (1.2 opens the file but reads float16 columns as BLOB); 1.4: the LTS
# line (and its offline httpfs wheel).
OLD = ["1.3.2", "1.4.4"]

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
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--only-binary=:all:", "--target"]
        r = subprocess.run([*pip, str(target), f"duckdb=={version}"], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail(f"could not install duckdb=={version} to test the catalog with it:\n{r.stderr[-2000:]}")
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
