"""`kvw sql` is a read-only door: every way a statement could write (files, other databases, extensions,
settings) is refused with a one-line `kvw sql:` error, nothing is written, and reads still work."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from warehouse import catalog
from warehouse.schemas import SKIPPED
from warehouse.store import Store


def _rows(n: int) -> pa.Table:
    rows = [
        {"run_id": "r1", "model": "m", "task": "qasper", "sample_id": f"s{i}", "source": f"qasper.jsonl:{i}",
         "reason": "bad", "skipped_at": datetime(2026, 1, 1, tzinfo=UTC)}
        for i in range(n)
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=SKIPPED.schema)


@pytest.fixture
def wh(tmp_path):
    """A private warehouse (3 `skipped` rows, no model needed) with its catalog; tests may try to damage it."""
    store = Store(tmp_path / "data")
    store.write("skipped", _rows(3), "s0")
    db = catalog.build(store, tmp_path / "kv.duckdb")
    return {"root": tmp_path, "data": tmp_path / "data", "db": db}


def _snapshot(root) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and mtime: 'nothing was written' made checkable."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            st = os.stat(os.path.join(dirpath, f))
            out[os.path.relpath(os.path.join(dirpath, f), root)] = (st.st_size, st.st_mtime_ns)
    return out


def _where(wh, how):
    return ["--db", str(wh["db"])] if how == "db" else ["--data", str(wh["data"])]


def _count(wh, how, capsys) -> str:
    assert main(["sql", "--csv", *_where(wh, how), "SELECT count(*) AS n FROM skipped"]) == 0
    return capsys.readouterr().out.split()[-1]


REFUSED = {
    # statement -> what the error must name
    "COPY skipped TO '{data}/skipped/model=m/task=qasper/run_id=r1/x.parquet'": "COPY",
    "COPY (SELECT 1 AS a) TO '{root}/out.csv'": "COPY",
    "ATTACH '{root}/other.duckdb' AS o (READ_ONLY false)": "ATTACH",
    "ATTACH '{root}/other.duckdb' AS o; CREATE TABLE o.t AS SELECT 1 AS a": "ATTACH",
    "EXPORT DATABASE '{root}/export'": "EXPORT",
    "INSTALL httpfs": "INSTALL",
    "LOAD httpfs": "LOAD",
    "CREATE TABLE t AS SELECT 1 AS a": "CREATE",
    "CREATE TEMP TABLE t AS SELECT 1 AS a": "CREATE",
    "CREATE VIEW samples2 AS SELECT 1 AS a": "CREATE",
    "INSERT INTO skipped SELECT * FROM skipped": "INSERT",
    "UPDATE skipped SET reason = 'x'": "UPDATE",
    "DELETE FROM skipped": "DELETE",
    "DROP VIEW skipped": "DROP",
    "SET enable_external_access = true": "enable_external_access",
    "SET allowed_directories = ['/']": "allowed_directories",
    "SET lock_configuration = false": "lock_configuration",
    "SET autoinstall_known_extensions = true": "autoinstall_known_extensions",
    # writes hidden inside statements whose outer kind looks harmless
    "EXPLAIN ANALYZE COPY (SELECT 1 AS a) TO '{root}/out.csv'": "COPY",
    "COPY (PIVOT skipped ON task USING count(*)) TO '{root}/out.csv'": "PIVOT",
    "SELECT 1; COPY (SELECT 1 AS a) TO '{root}/out.csv'": "COPY",
}


@pytest.mark.parametrize("how", ["db", "data"])
@pytest.mark.parametrize("statement", list(REFUSED))
def test_writes_are_refused_and_nothing_is_written(wh, how, statement, capsys):
    before = _snapshot(wh["root"])
    sql = statement.format(data=wh["data"], root=wh["root"])
    rc = main(["sql", *_where(wh, how), sql])
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert len(err.splitlines()) == 1 and err.startswith("kvw sql: ") and REFUSED[statement] in err, err
    assert _snapshot(wh["root"]) == before  # no new file, none changed (the catalog included)
    assert _count(wh, how, capsys) == "3"


@pytest.mark.parametrize("how", ["db", "data"])
def test_reads_still_work(wh, how, tmp_path, capsys):
    """Local files, the views, the schema commands, EXPLAIN of a query and the harmless settings."""
    pq.write_table(pa.table({"a": [1, 2, 5]}), tmp_path / "mine.parquet")
    for sql, expect in [
        (f"SELECT sum(a) AS s FROM read_parquet('{tmp_path}/mine.parquet')", "8"),
        ("SELECT count(*) AS n FROM skipped", "3"),
        ("SET threads = 1; SELECT current_setting('threads') AS t", "1"),
        ("DESCRIBE skipped", "reason"),
        ("SHOW TABLES", "token_stats"),
        ("SUMMARIZE skipped", "sample_id"),
        ("EXPLAIN SELECT count(*) FROM skipped", "physical_plan"),
        ("EXPLAIN ANALYZE SELECT count(*) FROM skipped", "analyzed_plan"),
        ("WITH t AS (SELECT 2 AS a) SELECT a * 21 AS x FROM t", "42"),
    ]:
        assert main(["sql", "--csv", "--max-rows", "100", *_where(wh, how), sql]) == 0, sql
        assert expect in capsys.readouterr().out, sql
