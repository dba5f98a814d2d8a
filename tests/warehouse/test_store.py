"""The Parquet store: derived paths, schema enforcement, atomic and idempotent writes."""

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from warehouse import catalog
from warehouse.schemas import SKIPPED, TABLES
from warehouse.store import SchemaError, Store


def skip_rows(task="qasper", sid="s1", reason="bad", n=1):
    rows = [
        {
            "run_id": "r1",
            "model": "m",
            "task": task,
            "sample_id": sid,
            "source": f"{task}.jsonl:{i}",
            "reason": reason,
            "skipped_at": datetime.now(UTC),
        }
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=SKIPPED.schema)


def test_path_is_derived_from_the_data(tmp_path):
    store = Store(tmp_path)
    path = store.write("skipped", skip_rows(), "s1")
    assert path == tmp_path / "skipped" / "model=m" / "task=qasper" / "run_id=r1" / "s1.parquet"
    assert store.read("skipped", "s1", model="m", task="qasper", run_id="r1").num_rows == 1


def test_rewrite_replaces_instead_of_duplicating(tmp_path):
    store = Store(tmp_path)
    store.write("skipped", skip_rows(reason="first", n=3), "s1")
    store.write("skipped", skip_rows(reason="second", n=2), "s1")
    rows = duckdb.execute("SELECT reason FROM read_parquet(?)", [store.glob("skipped")]).fetchall()
    assert rows == [("second",), ("second",)]


def test_schema_mismatch_is_named_and_writes_nothing(tmp_path):
    store = Store(tmp_path)
    bad = skip_rows().drop_columns(["reason"]).append_column("oops", pa.array([1]))
    with pytest.raises(SchemaError, match=r"skipped: missing columns \['reason'\], unexpected columns \['oops'\]"):
        store.write("skipped", bad, "s1")
    rows = skip_rows()
    wrong_type = rows.set_column(rows.schema.get_field_index("reason"), "reason", pa.array([b"\xff"], pa.binary()))
    with pytest.raises(SchemaError, match="cannot cast"):
        store.write("skipped", wrong_type, "s1")
    assert not store.files("skipped") and not list(tmp_path.rglob("*"))[1:]


def test_one_file_holds_one_partition(tmp_path):
    mixed = pa.concat_tables([skip_rows(task="a"), skip_rows(task="b")])
    with pytest.raises(SchemaError, match=r"one file holds one task"):
        Store(tmp_path).write("skipped", mixed, "s1")


@pytest.mark.parametrize("value", ["", "a/b", "..", ".hidden", "x y"])
def test_unsafe_partition_values_are_refused(tmp_path, value):
    with pytest.raises(ValueError, match="partition value"):
        Store(tmp_path).path("skipped", "n", model=value, task="t", run_id="r")


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    """The rename fails after the temp file is fully written: the old file stays, the temp goes."""
    import os

    store = Store(tmp_path)
    store.write("skipped", skip_rows(reason="kept"), "s1")
    real_replace, seen = os.replace, []

    def boom(src, dst):
        seen.append(Path(src).stat().st_size)  # the temp file exists and holds the new data
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        store.write("skipped", skip_rows(reason="lost"), "s1")
    monkeypatch.setattr(os, "replace", real_replace)
    assert seen and seen[0] > 0, "the failure came after the temp file was written"
    assert store.read("skipped", "s1", model="m", task="qasper", run_id="r1")["reason"].to_pylist() == ["kept"]
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["s1.parquet"]


def test_clean_tmp_removes_what_a_killed_writer_left(tmp_path):
    store = Store(tmp_path)
    path = store.write("skipped", skip_rows(), "s1")
    (path.parent / ".tmp-s2.parquet.123abc").write_bytes(b"half a file")
    assert store.clean_tmp() == 1
    assert [p.name for p in path.parent.iterdir()] == ["s1.parquet"]


def test_catalog_has_a_typed_view_per_table_even_when_empty(tmp_path):
    store = Store(tmp_path / "data")
    db = catalog.build(store, tmp_path / "kv.duckdb")
    con = duckdb.connect(str(db), read_only=True)
    for name, table in TABLES.items():
        cols = [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()]
        assert cols == table.columns, name
        assert con.execute(f"SELECT count(*) FROM {name}").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM token_summary").fetchone() == (0,)
    assert con.execute("SELECT pos_bucket(999, 1000, 10), pos_bucket(0, 1000, 10)").fetchone() == (9, 0)


def test_catalog_sees_new_files_without_a_rebuild_once_a_table_exists(tmp_path):
    store = Store(tmp_path / "data")
    store.write("skipped", skip_rows(sid="a"), "a")
    db = catalog.build(store, tmp_path / "kv.duckdb")
    store.write("skipped", skip_rows(task="trec", sid="b"), "b")
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM skipped").fetchone() == (2,)


def test_catalog_is_read_only_for_readers(tmp_path):
    db = catalog.build(Store(tmp_path / "data"), tmp_path / "kv.duckdb")
    con = catalog.connect(db)
    with pytest.raises(duckdb.Error, match="read-only"):
        con.execute("CREATE TABLE x (a INT)")


def test_a_failed_catalog_build_keeps_the_old_catalog(tmp_path, monkeypatch):
    store = Store(tmp_path / "data")
    db = catalog.build(store, tmp_path / "kv.duckdb")
    before = db.read_bytes()
    bad = tmp_path / "views"
    bad.mkdir()
    (bad / "broken.sql").write_text("CREATE VIEW broken AS SELECT nope FROM nowhere;")
    monkeypatch.setattr(catalog, "VIEWS_DIR", bad)
    with pytest.raises(duckdb.Error):
        catalog.build(store, db)
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "kv.duckdb", "views"]


def test_empty_views_follow_schema_changes(tmp_path, monkeypatch):
    """An empty table's placeholder file is per schema: adding a column shows up without cleanup."""
    import dataclasses

    from warehouse import schemas

    store = Store(tmp_path / "data")
    catalog.build(store, tmp_path / "kv.duckdb")
    grown = dataclasses.replace(SKIPPED, schema=SKIPPED.schema.append(pa.field("extra", pa.int32())))
    monkeypatch.setitem(schemas.TABLES, "skipped", grown)
    con = duckdb.connect(str(catalog.build(store, tmp_path / "kv.duckdb")), read_only=True)
    assert "extra" in [r[0] for r in con.execute("DESCRIBE skipped").fetchall()]


def test_reports_offer_at_most_24_samples_round_robin_over_tasks(tmp_path):
    """sample_labels.shown: the first sample of every task first, so a full LongBench run keeps pages small."""
    from warehouse.schemas import SAMPLES

    store = Store(tmp_path / "data")
    for task, n in (("qasper", 20), ("trec", 10), ("lcc", 1)):
        for i in range(n):
            row = {c: None for c in SAMPLES.columns}
            row.update(run_id="r1", model="m", task=task, sample_id=f"{task}{i:02d}", n_tokens=100)
            store.write("samples", pa.Table.from_pylist([row], schema=SAMPLES.schema), row["sample_id"])
    con = duckdb.connect(str(catalog.build(store, tmp_path / "kv.duckdb")), read_only=True)
    shown = con.execute("SELECT task, count(*) FROM sample_labels WHERE shown GROUP BY task ORDER BY task").fetchall()
    assert shown == [("lcc", 1), ("qasper", 13), ("trec", 10)]  # rounds: 3, then 2 x 9, then qasper x 3
    firsts = con.execute("SELECT bool_and(shown) FROM sample_labels WHERE sample_id IN ('qasper00', 'trec00', 'lcc00')")
    assert firsts.fetchone() == (True,)


def test_clean_tmp_spares_a_live_writer(tmp_path):
    """A temp file whose writer is still running is being written: only dead writers' files go."""
    import subprocess
    import sys

    store = Store(tmp_path)
    path = store.write("skipped", skip_rows(), "s1")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        (path.parent / f".tmp-s2.parquet.{live.pid}-{'a' * 32}").write_bytes(b"being written")
        (path.parent / f".tmp-s3.parquet.{dead.pid}-{'b' * 32}").write_bytes(b"left by a killed writer")
        assert store.clean_tmp("skipped") == 1
        assert sorted(p.name for p in path.parent.iterdir()) == [f".tmp-s2.parquet.{live.pid}-{'a' * 32}", "s1.parquet"]
    finally:
        live.kill()
        live.wait()


def test_write_batch_names_files_after_their_keys_and_drop_keys_never_duplicates(tmp_path):
    """One file per partition per write, named from its keys; rewriting keys first drops them elsewhere."""
    store = Store(tmp_path)
    rows = pa.concat_tables([skip_rows(task="a", sid="x"), skip_rows(task="a", sid="y"), skip_rows(task="b", sid="z")])
    first = store.write_batch("skipped", rows, "batch", ["sample_id"], rows_per_file=100)
    assert len(first) == 2 and {p.parent.parent.name for p in first} == {"task=a", "task=b"}
    again = store.write_batch("skipped", rows, "batch", ["sample_id"], rows_per_file=100)
    assert again == first, "the same rows land under the same names: a rerun overwrites, never duplicates"
    split = store.write_batch("skipped", rows, "small", ["sample_id"], rows_per_file=1)
    assert len(split) == 3, "files split between samples, never inside one"
    files = store.files("skipped", task="a")
    assert store.keys(files, ["sample_id"]) == {("x",), ("y",)}
    assert store.drop_keys(files, ["sample_id"], [("x",)]) == 2  # from 'batch' and from 'small'
    assert store.keys(store.files("skipped", task="a"), ["sample_id"]) == {("y",)}
    assert len(store.files("skipped", task="a", prefix="small.")) == 1, "a file left empty is removed"
    with pytest.raises(ValueError, match="not partitions"):
        store.files("skipped", sample_id="x")


def test_clean_tmp_spares_another_machines_writer_until_its_lease_ends(tmp_path):
    """A folder shared by several machines (NFS): a pid from another host says nothing here, so its temp file
    is left alone until it is older than the lease; this machine's dead writers are still cleaned at once."""
    import os
    import subprocess
    import sys
    import time

    from warehouse.store import HOST

    store = Store(tmp_path)
    path = store.write("skipped", skip_rows(), "s1")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    other = path.parent / f".tmp-s2.parquet.@other-node.{dead.pid}-{'a' * 32}"  # same pid, dead here: irrelevant
    old_other = path.parent / f".tmp-s3.parquet.@other-node.{dead.pid}-{'b' * 32}"
    mine = path.parent / f".tmp-s4.parquet.@{HOST}.{dead.pid}-{'c' * 32}"
    for f in (other, old_other, mine):
        f.write_bytes(b"partial")
    hours_ago = time.time() - 7 * 3600
    os.utime(old_other, (hours_ago, hours_ago))
    assert store.clean_tmp("skipped") == 2
    assert sorted(p.name for p in path.parent.iterdir()) == [other.name, "s1.parquet"]
    assert store.clean_tmp("skipped", lease=0) == 1 and not other.exists()


def test_a_write_names_its_machine_and_process_in_the_temp_file(tmp_path, monkeypatch):
    """The temp name is what clean_tmp reads: catch it mid-write and check it says this host and pid."""
    import os

    import pyarrow.parquet as pq

    from warehouse.store import HOST

    seen = []
    real = pq.write_table

    def spy(table, where, *a, **kw):
        seen.append(os.path.basename(str(where)))
        return real(table, where, *a, **kw)

    monkeypatch.setattr(pq, "write_table", spy)
    Store(tmp_path).write("skipped", skip_rows(), "s1")
    assert any(n.startswith(".tmp-s1.parquet.@") and f".@{HOST}.{os.getpid()}-" in n for n in seen), seen
