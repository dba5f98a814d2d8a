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

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb

from warehouse import config, remote
from warehouse.schemas import TABLES, Table
from warehouse.store import Store, StoreError

log = logging.getLogger(__name__)
VIEWS_DIR = Path(__file__).parent / "views"

MACROS = """
-- bucket of a position: 0 .. buckets-1 over a sequence of n tokens
CREATE OR REPLACE MACRO pos_bucket(position, n, buckets) AS
    least(buckets - 1, floor(position * buckets / greatest(n, 1)))::INTEGER;
"""


def _quote(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def table_sql(store: Store, table: Table, filename: bool = False) -> str:
    """The view of one table. Locally DuckDB unions the files' schemas by name, the declared schema's empty
    file first: a column added since older files were written reads NULL there, even when every file predates
    it. On an object store that union would read every file's footer at every bind (each SQL view that names
    the table binds it again): 100 s for 1,000 files on a loopback server. There the declared schema comes
    from the empty file alone, the other files must have it (a file that lacks a column is named when
    queried), and a bind reads one footer whatever the number of files. `filename` adds each row's file."""
    if not store.files(table.name):
        return f"SELECT * FROM read_parquet({_quote(store.empty_file(table))})"
    extra = ", filename = true" if filename else ""
    if store.remote:
        files = f"[{_quote(store.empty_file(table))}, {_quote(store.glob(table.name))}]"
        return f"SELECT * FROM read_parquet({files}, hive_partitioning = true, union_by_name = false{extra})"
    files = f"[{_quote(store.empty_file(table))}, {_quote(store.glob(table.name))}]"  # declared columns first
    return f"SELECT * FROM read_parquet({files}, hive_partitioning = true, union_by_name = true{extra})"


# Sample-level tables show a sample's rows only once its `samples` row (written last: the done marker)
# exists, so a sample cut short by a crash or a full disk stays invisible until its rerun completes it.
# `skipped` is exempt: it records samples that will never have one.
DONE_MARKER = "samples"
GATED = tuple(
    t.name
    for t in TABLES.values()
    if t.name not in (DONE_MARKER, "skipped") and {"run_id", "model", "task", "sample_id"} <= set(t.columns)
)
# Extraction writes these one file per sample, named after it beside the marker's (extract/run.py), so the
# gate compares file names with a listing of the markers: 20% on a full scan of 30M token_stats rows, where
# a per-row join on the four key columns took 6x. Batch-written tables (rankings, quality) join on the key.
PER_SAMPLE_FILES = ("tokens", "token_stats", "layer_stats", "kv")


def _prefix(store: Store, table: str) -> str:
    glob = store.glob(table)
    assert glob.endswith("**/*.parquet"), glob
    return glob.removesuffix("**/*.parquet")


def gated_sql(store: Store, table: Table) -> str:
    """The view of a sample-level table: only rows whose sample has its done marker."""
    if not store.files(table.name):
        return table_sql(store, table)
    if table.name in PER_SAMPLE_FILES:
        marker, mine = _prefix(store, DONE_MARKER), _prefix(store, table.name)
        done = f"SELECT {_quote(mine)} || substr(file, {len(marker) + 1}) FROM glob({_quote(store.glob(DONE_MARKER))})"
        return f"SELECT * EXCLUDE (filename) FROM ({table_sql(store, table, filename=True)}) WHERE filename IN ({done})"
    return (
        f"SELECT * FROM ({table_sql(store, table)}) AS t WHERE EXISTS (SELECT 1 FROM {DONE_MARKER} AS d"
        " WHERE d.run_id = t.run_id AND d.model = t.model AND d.task = t.task AND d.sample_id = t.sample_id)"
    )


def view_files() -> list[Path]:
    """SQL views, one file each, named after the view; applied in name order."""
    return sorted(VIEWS_DIR.glob("*.sql"))


def create_views(con: duckdb.DuckDBPyConnection, store: Store) -> None:
    """One view per table over the store's files (sample-level ones gated by the done marker), the macros, then
    the SQL views of views/."""
    for table in sorted(TABLES.values(), key=lambda t: t.name in GATED):  # the done marker before its users
        sql = gated_sql(store, table) if table.name in GATED else table_sql(store, table)
        con.execute(f"CREATE OR REPLACE VIEW {table.name} AS {sql}")
    con.execute(MACROS)
    for sql in view_files():
        con.execute(sql.read_text())


_CREATE = re.compile(r"^CREATE OR REPLACE (VIEW|MACRO) (\w+)", re.M)


def view_docs() -> dict[str, tuple[str, str]]:
    """Each view and macro of views/: (kind, the first sentence of the comment above it), in file order. The
    comment is the documentation a user reads, so it is taken from the SQL rather than repeated here."""
    docs = {}
    for path in view_files():
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            m = _CREATE.match(line)
            if not m:
                continue
            j = i
            while j > 0 and lines[j - 1].startswith("--"):
                j -= 1
            block = " ".join(x.removeprefix("--").strip() for x in lines[j:i])
            first = re.split(r"(?<=[.])\s", block, maxsplit=1)[0]  # its first sentence: the grain, usually
            docs[m.group(2)] = (m.group(1).lower(), re.sub(rf"^{m.group(2)}(\([^)]*\))?:\s*", "", first))
    return docs


@dataclass(frozen=True)
class Described:
    """A view or macro as a user meets it: its name (a macro's with its parameters), what one row (or the
    result) is, and a view's columns (name, type)."""

    name: str
    doc: str
    columns: list[tuple[str, str]]


def describe_views() -> tuple[list[Described], list[Described]]:
    """The SQL views of views/ and the macros, bound over an empty store: what a query can name before any data
    exists (`kvw tables`). The table views are left out: their schemas are TABLES."""
    import tempfile

    docs = view_docs()
    docs.setdefault("pos_bucket", ("macro", "bucket of a position: 0 .. buckets-1 over a sequence of n tokens"))
    with tempfile.TemporaryDirectory(prefix="kvw-views-") as tmp:
        con = memory(Store(tmp))
        try:
            cols = con.execute(
                "SELECT table_name, column_name, data_type FROM duckdb_columns() WHERE NOT internal "
                "ORDER BY table_name, column_index"
            ).fetchall()
            macros = con.execute(
                "SELECT function_name, parameters FROM duckdb_functions() WHERE function_type = 'macro' "
                "AND NOT internal"
            ).fetchall()
        finally:
            con.close()
    by_view: dict[str, list[tuple[str, str]]] = {}
    for view, col, typ in cols:
        by_view.setdefault(view, []).append((col, typ))
    views = [Described(name, doc, by_view[name]) for name, (kind, doc) in docs.items() if kind == "view"]
    found = [Described(f"{name}({', '.join(params)})", docs.get(name, ("", ""))[1], []) for name, params in macros]
    return views, found


def memory(store: Store) -> duckdb.DuckDBPyConnection:
    """An in-memory catalog over the store's current files (never a stale one): what transforms query."""
    con = store.connect()
    create_views(con, store)
    return con


# The catalog file's storage format, so the DuckDB CLIs users have open it: DuckDB 2.0 writes its own v2.0.0
# by default, which every 1.x refuses ("created with a newer version"). v1.2.0 files open in 1.2 and later;
# the views themselves need 1.3 (1.2 reads float16 Parquet columns as BLOB, and has no 3-way list_concat).
STORAGE_VERSION = "v1.2.0"


def build(store: Store | None = None, db: str | os.PathLike | None = None) -> Path:
    """(Re)write the catalog file for everything currently in the store."""
    store = store or Store(config.data_root())
    db = Path(db or config.db_path())
    db.parent.mkdir(parents=True, exist_ok=True)
    tmp = db.with_name(f".{db.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        con = store.connect()
        try:
            con.execute(f"ATTACH {_quote(tmp)} AS kvw_catalog (STORAGE_VERSION {_quote(STORAGE_VERSION)})")
            con.execute("USE kvw_catalog")
            create_views(con, store)
            con.execute(f"CREATE OR REPLACE VIEW {ROOT_VIEW} AS SELECT {_quote(store.root)} AS data_root")
            con.execute("CHECKPOINT kvw_catalog")
        finally:
            con.close()
        os.replace(tmp, db)
    finally:  # a failed build leaves the previous catalog and no debris
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.wal").unlink(missing_ok=True)
    return db


ROOT_VIEW = "kvw_catalog"  # one row: the Parquet root the catalog's views read (what `connect` checks)


def recorded_root(con: duckdb.DuckDBPyConnection) -> str | None:
    """The data root a catalog was built over (None for a catalog built before it was recorded)."""
    try:
        return con.execute(f"SELECT data_root FROM {ROOT_VIEW}").fetchone()[0]
    except duckdb.Error:
        return None


class CatalogError(StoreError):
    """No catalog file, and no data it could describe: refused rather than built over another warehouse."""


def connect(db: str | os.PathLike | None = None, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """Open the catalog, able to read the object stores its views name. A missing catalog is built over the
    data beside it (config.catalog_data), never over the default warehouse: that answered 0 rows where the
    folder held samples."""
    db = Path(db or config.db_path())
    data = config.catalog_data(db)
    if not db.exists():
        if data is None:
            raise CatalogError(
                f"no catalog at {db} and no Parquet folder beside it ({db.parent / 'data'}); "
                f"build one with `kvw catalog --data DATA --db {db}`"
            )
        build(Store(data), db=db)
    con = _open(db, read_only)
    recorded = recorded_root(con)
    local = data is not None and recorded is not None and not remote.is_url(recorded) and not remote.is_url(data)
    if local and recorded != str(Store(data).root):
        # a warehouse copied with its catalog: the views still name the original's files, which would answer
        con.close()
        try:
            build(Store(data), db=db)
        except OSError as err:
            raise CatalogError(
                f"the catalog {db} reads {recorded}, not the data beside it ({data}), and cannot be rebuilt "
                f"here ({err}): `kvw catalog --db {db}` where it is writable, or `kvw sql --data {data}`"
            ) from err
        log.warning("catalog %s read %s, not the data beside it: rebuilt over %s", db, recorded, data)
        con = _open(db, read_only)
    try:
        views = con.execute("SELECT sql FROM duckdb_views() WHERE NOT internal").fetchall()
        remote.register(con, remote.protocols_in(v for (v,) in views))
    except BaseException:
        con.close()
        raise
    return con


def _open(db: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        con = duckdb.connect(str(db), read_only=read_only)
    except duckdb.IOException as err:
        if "Could not set lock" not in str(err):
            raise
        raise CatalogError(
            f"the catalog {db} is in use by another process that holds it read-write (a `duckdb {db.name}` "
            f"shell, a flow rebuilding it): close that, or query the Parquet directly with `kvw sql --data DATA`"
        ) from err
    return con
