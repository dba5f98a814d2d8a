"""The DuckDB catalog: it describes the data beside it, and shows a sample only once its done marker exists."""

import pyarrow as pa
import pytest

from flows.cli import main
from warehouse import catalog
from warehouse.schemas import TABLES
from warehouse.store import Store

KEY = {"run_id": "r1", "model": "m", "task": "qasper"}
SAMPLE_LEVEL = ["tokens", "token_stats", "layer_stats", "kv", "rankings", "quality"]


def rows(table: str, sample_id: str, n: int = 2) -> pa.Table:
    """`n` rows of a table for one sample, every column not in the key left null."""
    names = TABLES[table].schema.names
    base = {**KEY, "sample_id": sample_id, "policy_id": "p1", "position": 0}
    data = [{c: (i if c == "position" else base.get(c)) for c in names} for i in range(n)]
    return pa.Table.from_pylist(data, schema=TABLES[table].schema)


def warehouse(root, done=("s1", "s2"), half=("s3",)) -> Store:
    """Every sample-level table holds rows of `done` and `half` samples; only `done` ones have a samples row."""
    store = Store(root)
    for sid in (*done, *half):
        for name in SAMPLE_LEVEL:
            store.write(name, rows(name, sid), sid)
    for sid in done:
        store.write("samples", rows("samples", sid, n=1), sid)
    return store


def test_kvw_sql_db_builds_a_missing_catalog_over_the_data_beside_it(tmp_path, capsys):
    """It used to build over the default warehouse (KVW_DATA): 0 samples where 2 existed."""
    warehouse(tmp_path / "wh" / "data")
    db = tmp_path / "wh" / "kv.duckdb"
    assert main(["sql", "--csv", "--db", str(db), "SELECT count(*) AS n FROM samples"]) == 0
    assert capsys.readouterr().out.split() == ["n", "2"]
    assert db.exists()


def test_kvw_sql_db_without_catalog_or_data_refuses_and_writes_nothing(tmp_path, capsys):
    db = tmp_path / "empty" / "kv.duckdb"
    db.parent.mkdir()
    assert main(["sql", "--db", str(db), "SELECT count(*) FROM samples"]) == 1
    err = capsys.readouterr().err
    assert "no catalog at" in err and "kvw catalog --data" in err
    assert list(db.parent.iterdir()) == []


def test_kvw_catalog_db_alone_describes_the_data_beside_it(tmp_path, capsys):
    warehouse(tmp_path / "wh" / "data")
    db = tmp_path / "wh" / "kv.duckdb"
    assert main(["catalog", "--db", str(db)]) == 0
    assert main(["sql", "--csv", "--db", str(db), "SELECT count(*) AS n FROM token_stats"]) == 0
    assert capsys.readouterr().out.split()[-2:] == ["n", "4"]
    assert main(["catalog", "--db", str(tmp_path / "nowhere" / "kv.duckdb")]) == 2
    assert "--data" in capsys.readouterr().err


def test_every_sample_level_table_is_gated_by_the_done_marker():
    """A new sample-level table must not escape the gate by being forgotten in a list."""
    sample_level = {n for n, t in TABLES.items() if {"run_id", "model", "task", "sample_id"} <= set(t.columns)}
    assert set(catalog.GATED) == sample_level - {"samples", "skipped"}
    assert set(SAMPLE_LEVEL) <= set(catalog.GATED)


@pytest.mark.parametrize("name", SAMPLE_LEVEL)
def test_views_hide_a_sample_without_its_samples_row(tmp_path, name):
    """A sample cut short (its stats written, its samples row not) stayed visible until a rerun."""
    store = warehouse(tmp_path / "data")
    files = store.connect().execute(f"SELECT count(*) FROM read_parquet('{store.glob(name)}')").fetchone()[0]
    assert files == 6  # the half-written sample's rows are on disk
    db = catalog.build(store, tmp_path / "kv.duckdb")
    for con in (catalog.connect(db), catalog.memory(store)):
        got = con.execute(f"SELECT sample_id, count(*) FROM {name} GROUP BY ALL ORDER BY 1").fetchall()
        assert got == [("s1", 2), ("s2", 2)]
        con.close()
    store.write("samples", rows("samples", "s3", n=1), "s3")  # the rerun writes its marker: now it counts
    con = catalog.connect(db)
    assert con.execute(f"SELECT count(DISTINCT sample_id) FROM {name}").fetchone()[0] == 3
    con.close()
