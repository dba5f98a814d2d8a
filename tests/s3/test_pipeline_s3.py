"""The whole pipeline on a loopback S3 server equals the same pipeline in a local folder: extraction (the real
default model), catalog, `kvw sql`, evaluation and a report."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from tests.conftest import FIXTURE_LONGBENCH, REPO
from warehouse import catalog, remote
from warehouse.store import Store

pytestmark = pytest.mark.model

MAX_TOKENS = 256
# columns that differ between two runs of the same data: when, how long, and where
VOLATILE = re.compile(r"_at$|seconds|^parameters$|^versions$")
TABLES = ("samples", "tokens", "token_stats", "layer_stats", "runs", "rankings", "quality")


def pipeline(root, smol, tmp_path, name):
    """Extract 2 trec samples, write the run row, build the catalog, evaluate 2 policies; returns (store, db,
    seconds spent extracting and writing per sample)."""
    from extract.longbench import open_longbench
    from extract.run import make_run_id, plan, process_sample, write_run
    from extract.sample import StatsConfig
    from transform import evaluate_run as er

    lb = open_longbench(FIXTURE_LONGBENCH)
    cfg = StatsConfig()
    store = Store(root)
    run_id = make_run_id(smol, MAX_TOKENS, cfg)
    started = datetime.now(UTC)
    samples = plan(lb, ["trec"], 2).samples
    t0 = time.perf_counter()
    outcomes = [process_sample(store, smol, lb, s, run_id, MAX_TOKENS, cfg) for s in samples]
    per_sample = (time.perf_counter() - t0) / len(samples)
    assert [o.status for o in outcomes] == ["extracted", "extracted"]
    params = {"max_tokens": MAX_TOKENS, "max_tokens_effective": MAX_TOKENS, "data_dir": str(FIXTURE_LONGBENCH)}
    write_run(store, smol, run_id, params, started, 0.0)
    again = [process_sample(store, smol, lb, s, run_id, MAX_TOKENS, cfg) for s in samples]
    assert [o.status for o in again] == ["existing", "existing"]  # the samples rows mark them done
    er.evaluate(store, ["sink_recent", {"name": "knorm", "sink_tokens": 4}], [0.25], "question_aware",
                run_id=run_id, tasks=["trec"], limit=2, data_dir=str(FIXTURE_LONGBENCH), max_new_tokens=3)  # fmt: skip
    db = catalog.build(store, tmp_path / name / "kv.duckdb")
    return store, db, per_sample


def rows(db, table):
    con = catalog.connect(db)
    try:
        rel = con.sql(f"SELECT * FROM {table}")
        keep = [c for c in rel.columns if not VOLATILE.search(c)]
        return sorted(map(repr, con.sql(f"SELECT {', '.join(keep)} FROM {table}").fetchall()))
    finally:
        con.close()


def kvw(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_s3_run_equals_the_local_run(bucket, smol, tmp_path):
    from reports import build

    local, local_db, local_s = pipeline(tmp_path / "local" / "data", smol, tmp_path, "local")
    s3, s3_db, s3_s = pipeline(f"{bucket}/wh/data", smol, tmp_path, "s3")
    print(f"\nseconds per sample (extract + write): local {local_s:.2f}, loopback S3 {s3_s:.2f}")

    for table in TABLES:
        want = rows(local_db, table)
        assert want, f"{table}: the local run wrote nothing"
        assert rows(s3_db, table) == want, table

    # the same layout, object for object (no temp objects on S3; local temp files are gone too), but for the
    # catalog's empty-table files (Hive-shaped on S3: see catalog.table_sql)
    local_files = sorted(str(p.relative_to(local.root)) for p in local.root.rglob("*") if p.is_file())
    prefix = remote.key(s3.root) + "/"
    s3_files = sorted(k.removeprefix(prefix) for k in s3.fs.find(prefix))
    local_files, s3_files = ([f for f in fs if not f.startswith("_empty/")] for fs in (local_files, s3_files))
    assert s3_files == local_files and not [f for f in s3_files if ".tmp-" in f]

    q = "SELECT layer, round(avg(key_norm), 4) AS k FROM token_stats GROUP BY layer ORDER BY layer"
    by_catalog = kvw("sql", "--db", str(s3_db), "--csv", q)
    assert by_catalog == kvw("sql", "--db", str(local_db), "--csv", q)
    assert by_catalog == kvw("sql", "--data", f"{bucket}/wh/data", "--csv", q)
    assert len(by_catalog.split()) == 1 + 30  # header + the model's 30 layers

    only = ["head_specialization", "eviction_patterns", "strategy_comparison"]
    pages = {}
    for name, db in (("local", local_db), ("s3", s3_db)):
        built = build.build_all(db, tmp_path / name / "reports", only=only)
        assert [b.status for b in built] == ["ok"] * 3, built
        pages[name] = [re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d", "", b.path.read_text()) for b in built]
    assert pages["s3"] == pages["local"]
