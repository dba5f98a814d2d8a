"""The Store on a real S3-protocol server: the same layout, reads and writes as in a local folder; bad buckets,
credentials and prefixes are named, never half-listed."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

import boto3
import pyarrow as pa
import pytest

from tests.conftest import REPO
from warehouse import catalog, remote
from warehouse.schemas import SKIPPED
from warehouse.store import Store, StoreError


def skip_rows(tasks=("qasper",), sids=("s1",), reason="bad", run_id="r1"):
    rows = [
        {
            "run_id": run_id,
            "model": "m",
            "task": t,
            "sample_id": s,
            "source": f"{t}.jsonl:{s}",
            "reason": reason,
            "skipped_at": datetime(2026, 1, 1, tzinfo=UTC),
        }
        for t in tasks
        for s in sids
    ]
    return pa.Table.from_pylist(rows, schema=SKIPPED.schema)


def objects(bucket: str) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket.removeprefix("s3://")).get("Contents", []))


def test_round_trip(bucket):
    store = Store(f"{bucket}/wh/data/")
    assert store.remote and store.root == f"{bucket}/wh/data"
    path = store.write("skipped", skip_rows(sids=("s1", "s2")), "s1")
    assert path == f"{bucket}/wh/data/skipped/model=m/task=qasper/run_id=r1/s1.parquet"
    assert objects(bucket) == ["wh/data/skipped/model=m/task=qasper/run_id=r1/s1.parquet"]  # no temp object, ever
    assert store.exists("skipped", "s1", model="m", task="qasper", run_id="r1")
    assert not store.exists("skipped", "s9", model="m", task="qasper", run_id="r1")
    assert store.read("skipped", "s1", model="m", task="qasper", run_id="r1").num_rows == 2

    # many partitions at once, files named by their keys: rewriting the same rows lands on the same names
    batch = skip_rows(tasks=("trec", "qasper"), sids=("a", "b", "c"), run_id="r2")
    written = store.write_batch("skipped", batch, "batch", ["sample_id", "source"], rows_per_file=2)
    assert sorted(written) == sorted(store.write_batch("skipped", batch, "batch", ["sample_id", "source"], 2))
    assert len(written) == 4  # per task: (a, b) then (c)
    assert store.files("skipped", run_id="r2") == sorted(written)
    assert store.files("skipped", task="trec", prefix="batch.") == sorted(w for w in written if "task=trec" in w)
    assert store.keys(store.files("skipped", run_id="r2"), ["task", "sample_id"]) == {
        (t, s) for t in ("trec", "qasper") for s in "abc"
    }

    assert store.drop_keys(store.files("skipped", run_id="r2"), ["task", "sample_id"], [("trec", "a"), ("trec", "c")])
    assert store.keys(store.files("skipped", run_id="r2"), ["task", "sample_id"]) == {
        ("trec", "b"),
        *(("qasper", s) for s in "abc"),
    }
    assert len(store.files("skipped", task="trec", run_id="r2")) == 1  # the file left empty is deleted

    lf = store.scan("skipped", run_id="r2")  # polars reads the same URLs with the same variables
    assert sorted(lf.select("task", "sample_id").collect().rows()) == [("qasper", s) for s in "abc"] + [("trec", "b")]
    assert store.remove("skipped", "s1", model="m", task="qasper", run_id="r1")
    assert not store.remove("skipped", "s1", model="m", task="qasper", run_id="r1")
    assert store.clean_tmp() == 0


@pytest.mark.slow  # 14 s: a second Python process
def test_catalog_over_s3_opens_in_a_new_process(bucket, tmp_path):
    store = Store(f"{bucket}/data")
    for task in ("qasper", "trec"):
        store.write("skipped", skip_rows(tasks=(task,), sids=("s1", "s2")), "s1")
    db = catalog.build(store, tmp_path / "kv.duckdb")
    con = catalog.connect(db)
    try:
        assert con.execute("SELECT task, count(*) FROM skipped GROUP BY task ORDER BY task").fetchall() == [
            ("qasper", 2),
            ("trec", 2),
        ]
        assert con.execute("SELECT count(*) FROM samples").fetchone() == (0,)  # empty tables keep typed columns
    finally:
        con.close()
    assert any(k.startswith("data/_empty/samples/") for k in objects(bucket))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    q = "SELECT task, count(*) AS n FROM skipped GROUP BY task ORDER BY task"
    by_db = subprocess.run(
        [sys.executable, "-m", "flows.cli", "sql", "--db", str(db), "--csv", q], env=env, capture_output=True, text=True
    )
    assert by_db.returncode == 0, by_db.stderr
    assert by_db.stdout.split() == ["task,n", "qasper,2", "trec,2"]
    by_url = subprocess.run(
        [sys.executable, "-m", "flows.cli", "sql", "--data", f"{bucket}/data", "--csv", q],
        env=env,
        capture_output=True,
        text=True,
    )
    assert by_url.returncode == 0, by_url.stderr
    assert by_url.stdout == by_db.stdout


def test_missing_bucket_is_named(aws_env):
    store = Store("s3://kvw-no-such-bucket/wh/data")
    for op in (store.clean_tmp, lambda: store.files("samples"), lambda: store.write("skipped", skip_rows(), "s1")):
        with pytest.raises(StoreError, match=r"s3://kvw-no-such-bucket: the bucket does not exist"):
            op()
    with pytest.raises(StoreError, match="kvw-no-such-bucket"):
        catalog.build(store, aws_env["AWS_CONFIG_FILE"] + ".duckdb")
    assert not os.path.exists(aws_env["AWS_CONFIG_FILE"] + ".duckdb")


def test_wrong_credentials_are_named(bucket, s3_auth, monkeypatch):
    key_id, secret = s3_auth
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    Store(f"{bucket}/data").write("skipped", skip_rows(), "s1")  # the right key works
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
    store = Store(f"{bucket}/data")
    with pytest.raises(StoreError, match=rf"{bucket}/data: access denied .*AWS_ACCESS_KEY_ID"):
        store.exists("skipped", "s1", model="m", task="qasper", run_id="r1")
    with pytest.raises(StoreError, match=rf"{bucket}/data: access denied"):
        store.files("skipped")


def test_foreign_objects_under_a_table_are_named_not_read(bucket):
    store = Store(f"{bucket}/data")
    store.write("skipped", skip_rows(), "s1")
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    name = bucket.removeprefix("s3://")
    s3.put_object(Bucket=name, Key="data/notes.txt", Body=b"beside the tables: ignored")
    assert store.files("skipped") and catalog.memory(store).execute("SELECT count(*) FROM skipped").fetchone() == (1,)

    s3.put_object(Bucket=name, Key="data/samples/model=m/task=qasper/run_id=r1/s1.parquet", Body=b"")  # an empty PUT
    with pytest.raises(
        StoreError, match=r"samples/ holds 1 object\(s\) that are not warehouse files, e\.g\. .*s1\.parquet"
    ):
        store.files("samples", model="m")
    with pytest.raises(StoreError, match="not warehouse files"):
        catalog.memory(store)
    # never taken as a done sample: the rerun redoes the sample and its PUT replaces the object whole
    assert not store.exists("samples", "s1", model="m", task="qasper", run_id="r1")
    s3.put_object(Bucket=name, Key="data/samples/model=m/task=qasper/run_id=r1/s1.parquet", Body=b"x" * 40)
    assert not store.exists("samples", "s1", model="m", task="qasper", run_id="r1")  # no footer: not Parquet either

    s3.delete_object(Bucket=name, Key="data/samples/model=m/task=qasper/run_id=r1/s1.parquet")
    s3.put_object(Bucket=name, Key="data/skipped/export.csv", Body=b"a,b\n1,2\n")
    with pytest.raises(StoreError, match=rf"{bucket}/data/skipped/export\.csv"):
        store.files("skipped")  # a pruned listing (model=m/...) does not reach it; the whole table does


def test_other_object_stores_need_their_package():
    if _installed("gcsfs"):
        pytest.skip("gcsfs is installed here")
    with pytest.raises(StoreError, match=r"gs://bucket/data: gs:// needs an fsspec filesystem: install gcsfs"):
        Store("gs://bucket/data")
    assert remote.is_url("abfs://container/x") and not remote.is_url("file:///tmp/x") and not remote.is_url("/tmp/x")


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@pytest.mark.slow  # 10 s
def test_remote_views_have_the_declared_schema_and_name_a_file_that_lacks_a_column(bucket, tmp_path):
    import duckdb
    import pyarrow.parquet as pq

    store = Store(f"{bucket}/data")
    store.write("skipped", skip_rows(), "s1")
    db = catalog.build(store, tmp_path / "kv.duckdb")
    con = catalog.connect(db)
    assert [r[0] for r in con.execute("DESCRIBE skipped").fetchall()] == SKIPPED.schema.names
    assert con.execute("SELECT count(*) FROM skipped WHERE task = 'qasper'").fetchone() == (1,)
    con.close()
    old = skip_rows(tasks=("trec",)).drop_columns(["reason"])  # as if written before `reason` existed
    key = f"{bucket.removeprefix('s3://')}/data/skipped/model=m/task=trec/run_id=r1/s1.parquet"
    with store.fs.open(key, "wb") as f:
        pq.write_table(old, f)
    con = catalog.connect(catalog.build(store, tmp_path / "kv.duckdb"))
    with pytest.raises(duckdb.Error, match=r"task=trec/run_id=r1/s1\.parquet.*reason|reason.*task=trec/run_id=r1/s1"):
        con.execute("SELECT * FROM skipped").fetchall()
    con.close()


def test_an_object_store_output_keeps_its_catalog_local(monkeypatch, tmp_path):
    from warehouse import config

    monkeypatch.setenv("KVW_DB", str(tmp_path / "kv.duckdb"))
    assert config.locations("s3://bucket/team/kvw/") == ("s3://bucket/team/kvw/data", tmp_path / "kv.duckdb")
    assert config.locations(str(tmp_path / "wh")) == (tmp_path / "wh" / "data", tmp_path / "wh" / "kv.duckdb")
    monkeypatch.setenv("KVW_DATA", "gs://bucket/kvw/data/")
    assert config.data_root() == "gs://bucket/kvw/data"


def test_httpfs_on_request_fails_clearly_where_it_cannot_be_had(monkeypatch):
    import duckdb

    monkeypatch.setenv("KVW_DUCKDB_S3", "httpfs")
    con = duckdb.connect()
    try:
        con.execute("LOAD httpfs")
        pytest.skip("httpfs is available here")
    except duckdb.Error:
        pass
    with pytest.raises(StoreError, match="KVW_DUCKDB_S3=httpfs, but DuckDB's httpfs extension cannot be installed"):
        remote.register(con, ["s3"])
