"""The DuckDB catalog: one view per table over its Parquet glob, plus the SQL views in views/.

The database file holds no data, only view definitions, so it is rebuilt in
milliseconds after every write and can be opened with the plain `duckdb` CLI.
It is built beside its final path and renamed into place, so a reader never
sees half a catalog. The catalog is always a local file; the Parquet files it
views may be on an object store (s3://...): every connection opened here
registers the filesystems its views name (warehouse/remote.py), so a catalog
over S3 opens in any process that has the credentials.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from warehouse import config, remote
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


def table_sql(store: Store, table: Table) -> str:
    """The view of one table. Locally DuckDB unions the files' schemas by name (older files may lack a newer
    column). On an object store that would read every file's footer at every bind (each SQL view that names
    the table binds it again): 100 s for 1,000 files on a loopback server. There the declared schema comes
    from one empty file read first, the other files must have it (a file that lacks a column is named when
    queried), and a bind reads one footer whatever the number of files."""
    if not store.files(table.name):
        return f"SELECT * FROM read_parquet({_quote(store.empty_file(table))})"
    if store.remote:
        files = f"[{_quote(store.empty_file(table))}, {_quote(store.glob(table.name))}]"
        return f"SELECT * FROM read_parquet({files}, hive_partitioning = true, union_by_name = false)"
    return (
        f"SELECT * FROM read_parquet({_quote(store.glob(table.name))}, hive_partitioning = true, union_by_name = true)"
    )


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
    con = store.connect()
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
        con = store.connect(str(tmp))
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
    """Open the catalog (built first if it does not exist yet), able to read the object stores its views name."""
    db = Path(db or config.db_path())
    if not db.exists():
        build(db=db)
    con = duckdb.connect(str(db), read_only=read_only)
    try:
        views = con.execute("SELECT sql FROM duckdb_views() WHERE NOT internal").fetchall()
        remote.register(con, remote.protocols_in(v for (v,) in views))
    except BaseException:
        con.close()
        raise
    return con
