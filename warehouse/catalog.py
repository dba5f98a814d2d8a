"""The DuckDB catalog: one view per table over its Parquet glob, plus the SQL views in views/.

The database file holds no data, only view definitions, so it is rebuilt in
milliseconds after every write and can be opened with the plain `duckdb` CLI.
It is built beside its final path and renamed into place, so a reader never
sees half a catalog.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from warehouse import config
from warehouse.schemas import TABLES, Table
from warehouse.store import Store

VIEWS_DIR = Path(__file__).parent / "views"

MACROS = """
-- bucket of a position: 0 .. buckets-1 over a sequence of n tokens
CREATE OR REPLACE MACRO pos_bucket(position, n, buckets) AS
    least(buckets - 1, floor(position * buckets / greatest(n, 1)))::INTEGER;
"""


def _quote(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _empty_file(store: Store, table: Table) -> Path:
    """A zero-row Parquet file with the table's schema, so an empty view still has typed columns."""
    digest = hashlib.sha256(table.schema.to_string().encode()).hexdigest()[:12]  # a new schema, a new file
    path = store.root / "_empty" / f"{table.name}-{digest}.parquet"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        pq.write_table(pa.Table.from_pylist([], schema=table.schema), tmp)
        os.replace(tmp, path)
    return path


def table_sql(store: Store, table: Table) -> str:
    if store.files(table.name):
        return (
            f"SELECT * FROM read_parquet({_quote(store.glob(table.name))}, "
            "hive_partitioning = true, union_by_name = true)"
        )
    return f"SELECT * FROM read_parquet({_quote(_empty_file(store, table))})"


def view_files() -> list[Path]:
    """SQL views, one file each, named after the view; applied in name order."""
    return sorted(VIEWS_DIR.glob("*.sql"))


def create_views(con: duckdb.DuckDBPyConnection, store: Store) -> None:
    """One view per table over the store's files, the macros, then the SQL views of views/."""
    for table in TABLES.values():
        con.execute(f"CREATE OR REPLACE VIEW {table.name} AS {table_sql(store, table)}")
    con.execute(MACROS)
    for sql in view_files():
        con.execute(sql.read_text())


def memory(store: Store) -> duckdb.DuckDBPyConnection:
    """An in-memory catalog over the store's current files (never a stale one): what transforms query."""
    con = duckdb.connect()
    create_views(con, store)
    return con


def build(store: Store | None = None, db: str | os.PathLike | None = None) -> Path:
    """(Re)write the catalog file for everything currently in the store."""
    store = store or Store(config.data_root())
    db = Path(db or config.db_path())
    db.parent.mkdir(parents=True, exist_ok=True)
    tmp = db.with_name(f".{db.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        con = duckdb.connect(str(tmp))
        try:
            create_views(con, store)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, db)
    finally:  # a failed build leaves the previous catalog and no debris
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.wal").unlink(missing_ok=True)
    return db


def connect(db: str | os.PathLike | None = None, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """Open the catalog; builds it first if it does not exist yet."""
    db = Path(db or config.db_path())
    if not db.exists():
        build(db=db)
    return duckdb.connect(str(db), read_only=read_only)
