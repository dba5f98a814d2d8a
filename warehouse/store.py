"""The Parquet store: Hive-partitioned paths derived from the data, atomic writes.

A file's path is a pure function of its table, partition values and a name, so a rerun overwrites
instead of duplicating, and a killed run leaves either the old file or the new one, never half of one.
Per-sample tables name a file after its sample. Tables written many samples at a time (`rankings`,
`quality`) use `write_batch`: one file per partition per write, named after a digest of the keys it
holds, so the same rows always land under the same name; `drop_keys` rewrites files without some keys
before they are written again, so no key is ever in two files.

The root is a local folder or an object-store URL (`s3://bucket/prefix`, through fsspec: warehouse/remote.py).
Locally a file is written to a temp name and renamed; on an object store it is written once under its final
name (a PUT is atomic: readers see the old object or the new one), so there are no temp objects to clean.
Paths are `Path`s under a local root and URL strings under a remote one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from warehouse import remote
from warehouse.remote import StoreError
from warehouse.schemas import TABLES, Table

log = logging.getLogger(__name__)
_SAFE = re.compile(r"^[A-Za-z0-9._+-]+$")
TMP_PREFIX = ".tmp-"
HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"  # temp names say which machine writes
TMP_LEASE_SECONDS = 6 * 3600  # another machine's temp file is left alone until this old (see clean_tmp)
StorePath = Path | str  # a Path under a local root, a URL under an object-store root

__all__ = ["SchemaError", "Store", "StoreError", "StorePath", "check_partition_value", "conform"]


class SchemaError(ValueError):
    """A table handed to the store does not match its declared schema."""


def check_partition_value(name: str, value: object) -> str:
    text = str(value)
    if not text or not _SAFE.match(text) or text.startswith("."):
        raise ValueError(f"partition value {name}={text!r} must be non-empty letters, digits, '.', '_', '+' or '-'")
    return text


def conform(table: Table, data: pa.Table, schema: pa.Schema | None = None) -> pa.Table:
    """Return `data` with exactly the table's columns, in order and type, or say what is wrong."""
    schema = schema or table.schema
    missing = [n for n in schema.names if n not in data.column_names]
    extra = [n for n in data.column_names if n not in schema.names]
    if missing or extra:
        raise SchemaError(f"{table.name}: missing columns {missing}, unexpected columns {extra}")
    data = data.select(schema.names)
    try:
        return data.cast(schema, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise SchemaError(f"{table.name}: cannot cast to the declared schema: {err}") from err


def _encodings(schema: pa.Schema) -> dict:
    """Parquet options per column kind: the difference between 15 and 11 bytes per token_stats row."""
    floats = [f.name for f in schema if pa.types.is_float32(f.type) or pa.types.is_float64(f.type)]
    halves = [f.name for f in schema if pa.types.is_float16(f.type)]  # plain + zstd: smaller and faster than a dict
    delta = [f.name for f in schema if f.name == "position" and pa.types.is_integer(f.type)]  # runs of +1
    # rankings (lists of positions): dictionary indices, i.e. bit-packed positions, are as small at zstd level 1
    # as at 3 (1.38 bytes per position at 2K tokens) and write twice as fast
    lists = any(pa.types.is_list(f.type) and pa.types.is_integer(f.type.value_type) for f in schema)
    return dict(
        compression="zstd",
        compression_level=1 if lists else 3,
        use_dictionary=[n for n in schema.names if n not in floats + halves + delta],
        use_byte_stream_split=floats,  # exponent bytes side by side: floats compress ~2x better
        column_encoding={n: "DELTA_BINARY_PACKED" for n in delta} or None,
        write_statistics=True,
        write_page_checksum=True,  # CRC-32 per page: a flipped bit is an error naming the file (kvw verify)
        row_group_size=1 << 20,
    )


def _not_parquet(path, size: int | None) -> bool:
    what = f"{size} bytes" if size is not None else "no Parquet footer"
    log.warning("%s: %s, not a Parquet file: treated as missing (a rerun rewrites it)", path, what)
    return False


class DamagedFileError(StoreError):
    """A warehouse file does not read back as written (a page checksum, the footer, the format): named, never
    retried. `kvw verify` lists every such file."""


def _damaged(err: BaseException) -> bool:
    text = str(err).lower()
    words = ("checksum", "crc", "magic bytes", "parquet", "thrift", "corrupt", "invalid", "end of stream", "page",
             "decompress", "deserializ")  # fmt: skip
    return any(k in text for k in words)


class Store:
    """Parquet files under `root/<table>/<part>=<value>/.../<name>.parquet`, `root` a folder or a URL."""

    def __init__(self, root: str | os.PathLike):
        self.remote = remote.is_url(root)
        if self.remote:
            self.root: StorePath = str(root).rstrip("/")
            self.fs = remote.filesystem(self.root)  # no I/O yet: the first use checks the bucket (check())
            self._checked = False
        else:
            self.root = Path(str(root).removeprefix("file://")).resolve()
            self.fs = None

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # -- paths ---------------------------------------------------------------------------------------------
    def _join(self, *parts: str) -> StorePath:
        if self.remote:
            return "/".join([self.root, *parts])
        return self.root.joinpath(*parts)

    def dir(self, table: str, **parts: object) -> StorePath:
        return self._join(*self._segments(table, parts))

    def path(self, table: str, name: str, **parts: object) -> StorePath:
        return self._join(*self._segments(table, parts), f"{check_partition_value('file', name)}.parquet")

    @staticmethod
    def _segments(table: str, parts: dict) -> list[str]:
        names = [table]
        for p in TABLES[table].partitions:
            if p not in parts:
                raise ValueError(f"{table}: partition {p!r} is required")
            names.append(f"{p}={check_partition_value(p, parts[p])}")
        return names

    def glob(self, table: str) -> str:
        return str(self._join(table, "**", "*.parquet"))

    def files(self, table: str, prefix: str | None = None, **parts: object) -> list[StorePath]:
        """The table's files, pruned by the partition values given (any subset) and a file-name prefix.
        Remotely, objects under the table that do not fit its layout raise StoreError (never skipped)."""
        pattern = [f"{p}={check_partition_value(p, parts[p])}" if p in parts else "*" for p in TABLES[table].partitions]
        unknown = set(parts) - set(TABLES[table].partitions)
        if unknown:
            raise ValueError(f"{table}: {sorted(unknown)} are not partitions; partitions: {TABLES[table].partitions}")
        name = f"{prefix}*.parquet" if prefix else "*.parquet"
        if self.remote:
            return self._remote_files(table, pattern, name)
        base = self.root / table
        if not base.exists():
            return []
        return sorted(base.glob("/".join([*pattern, name])))

    def _remote_files(self, table: str, pattern: list[str], name: str) -> list[str]:
        """One recursive listing under the longest fixed prefix (an object store lists by prefix, not by
        folder), every object checked against the layout."""
        fixed = []
        for part in pattern:
            if part == "*":
                break
            fixed.append(part)
        base = str(self._join(table, *fixed))
        listing = self._list(base)
        partitions = (rf"{p}=[^/]+" for p in TABLES[table].partitions)
        layout = re.compile("^" + "/".join([re.escape(table), *partitions, r"[^/]+\.parquet"]) + "$")
        wanted = re.compile("^" + "/".join([re.escape(table), *(_glob_re(p) for p in pattern), _glob_re(name)]) + "$")
        found, foreign = [], []
        for rel, size in listing:
            if not layout.match(rel) or size < 12:  # a Parquet file is at least its magic bytes and footer
                foreign.append(rel)
            elif wanted.match(rel):
                found.append(str(self._join(rel)))
        if foreign:
            raise StoreError(
                f"{self.root}/{table}/ holds {len(foreign)} object(s) that are not warehouse files, e.g. "
                f"{', '.join(self.root + '/' + f for f in foreign[:3])}; a {table} file is "
                f"{'/'.join([table, *(f'{p}=<value>' for p in TABLES[table].partitions)])}/<name>.parquet. "
                "Move them, or give the warehouse a prefix of its own"
            )
        return sorted(found)

    def _list(self, base: str) -> list[tuple[str, int]]:
        """(path relative to the root, size) of every object under `base`."""
        self.check()
        with remote.explained(base):
            found = self.fs.find(remote.key(base), detail=True)
        start = len(remote.key(self.root)) + 1
        return [(k[start:], int(v.get("size") or 0)) for k, v in found.items() if v.get("type") != "directory"]

    def check(self) -> None:
        """Remote roots: can the bucket be listed with these credentials? (Once per Store; a missing bucket or
        refused credentials raise StoreError naming the bucket, before any work is done.)"""
        if not self.remote or self._checked:
            return
        with remote.explained(self.root):
            try:
                self.fs.ls(remote.key(self.root), detail=False)  # one short listing: the tables under the root
            except FileNotFoundError as err:
                if remote.missing_bucket(err):
                    raise
                # no object under the prefix yet: a new warehouse
        self._checked = True

    def exists(self, table: str, name: str, **parts: object) -> bool:
        """Is the file there and a Parquet file (at least 12 bytes, ending in the magic `PAR1`)? A zero-byte or
        truncated file, e.g. a `samples` done marker cut short by a full disk or an empty PUT, is not: the rerun
        redoes that sample and writes the file whole."""
        path = self.path(table, name, **parts)
        if not self.remote:
            try:
                with open(path, "rb") as fh:
                    fh.seek(0, 2)
                    if fh.tell() < 12:
                        return _not_parquet(path, fh.tell())
                    fh.seek(-4, 2)
                    return fh.read(4) == b"PAR1" or _not_parquet(path, None)
            except FileNotFoundError:
                return False
        self.check()
        with remote.explained(path):
            try:
                info = self.fs.info(remote.key(path))
            except FileNotFoundError:
                return False
            if info.get("type") != "file":
                return False
            size = int(info.get("size") or 0)
            if size < 12:
                return _not_parquet(path, size)
            tail = self.fs.cat_file(remote.key(path), start=size - 4)
        return tail == b"PAR1" or _not_parquet(path, None)

    def remove(self, table: str, name: str, **parts: object) -> bool:
        path = self.path(table, name, **parts)
        if self.remote:
            if not self.exists(table, name, **parts):
                return False
            with remote.explained(path):
                self.fs.rm_file(remote.key(path))
            return True
        try:
            path.unlink()
            return True
        except FileNotFoundError:
            return False

    def write(self, table: str, data: pa.Table, name: str, schema: pa.Schema | None = None) -> StorePath:
        """Write one file atomically; partition values come from the data's own columns."""
        spec = TABLES[table]
        data = conform(spec, data, schema)
        parts = {}
        for p in spec.partitions:
            values = data.column(p).unique().to_pylist()
            if len(values) != 1:
                raise SchemaError(f"{table}: one file holds one {p}, got {values[:5]}")
            parts[p] = values[0]
        path = self.path(table, name, **parts)
        if not self.remote:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._replace(path, data)  # temp names do not end in .parquet: globs skip them
        return path

    def read(self, table: str, name: str, columns: list[str] | None = None, **parts: object) -> pa.Table:
        return self.read_file(self.path(table, name, **parts), columns)

    def read_file(self, path: StorePath, columns: list[str] | None = None) -> pa.Table:
        """One of this store's files (a path `files()` or `path()` gave)."""
        try:
            if not self.remote:
                return pq.read_table(path, columns=columns, page_checksum_verification=True)
            with remote.explained(str(path)):
                return pq.read_table(remote.key(str(path)), columns=columns, filesystem=self.fs,
                                     page_checksum_verification=True)  # fmt: skip
        except (OSError, pa.ArrowException) as err:
            if isinstance(err, FileNotFoundError | PermissionError | StoreError):
                raise
            if self.remote and not _damaged(err):  # a network error is no verdict on the file
                raise
            raise DamagedFileError(f"{path}: {str(err).splitlines()[0]} (`kvw verify` checks every file)") from err

    @contextmanager
    def open(self, path: StorePath) -> Iterator[BinaryIO]:
        """One of this store's files (a path `files()` or `path()` gave), open for reading."""
        if not self.remote:
            with open(path, "rb") as f:
                yield f
            return
        with remote.explained(str(path)), self.fs.open(remote.key(str(path)), "rb") as f:
            yield f

    def read_schema(self, path: StorePath) -> pa.Schema:
        """The schema in a file's footer (reads the footer only)."""
        if not self.remote:
            return pq.read_schema(path)
        with self.open(path) as f:
            return pq.read_schema(f)

    def scan(self, table: str, **parts: object):
        """The table as a polars LazyFrame over the same files DuckDB reads, pruned by the partitions given
        (`scan("token_stats", task="qasper")` opens only that task's files); typed like the declared schema
        even where older files lack a newer column. Remote files are read by polars' own object-store client,
        which takes credentials from the same standard variables."""
        import polars as pl

        schema = pl.from_arrow(pa.Table.from_pylist([], schema=TABLES[table].schema)).schema
        files = self.files(table, **parts)
        if not files:
            return pl.LazyFrame(schema=schema)
        return pl.scan_parquet(files, schema=schema, hive_partitioning=False, missing_columns="insert")

    def connect(self, database: str = ":memory:", read_only: bool = False):
        """A DuckDB connection that can read this store's files (remote: its filesystem registered)."""
        import duckdb

        con = duckdb.connect(database, read_only=read_only)
        if self.remote:
            remote.register(con, [remote.protocol(self.root)])
        return con

    def write_batch(
        self, table: str, data: pa.Table, prefix: str, key: Iterable[str], rows_per_file: int, presorted: bool = False
    ) -> list[StorePath]:
        """Write rows of many partitions: per partition, files of about `rows_per_file` rows (whole `key[0]`
        groups, e.g. whole samples), each named `<prefix>.<digest of its keys>`; atomic per file. Rows are
        sorted by partitions then `key` (`presorted`: the caller did it, saving a copy of large rows)."""
        spec, key = TABLES[table], list(key)
        data = conform(spec, data)
        if not presorted:
            data = data.sort_by([(c, "ascending") for c in [*spec.partitions, *key]])
        named = []
        for part in _partition_groups(data, spec.partitions):
            for chunk in _chunks(part, key[0], max(1, rows_per_file)):
                digest = hashlib.sha256()
                for row in chunk.select(key).to_pylist():
                    digest.update(repr(tuple(row.values())).encode())
                named.append((chunk, f"{prefix}.{digest.hexdigest()[:16]}"))
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # Parquet writes release the GIL
            return list(pool.map(lambda item: self.write(table, *item), named))

    def keys(self, files: list[StorePath], columns: list[str]) -> set[tuple]:
        """The distinct values of `columns` held by these files (reads only those columns)."""
        found: set[tuple] = set()
        for f in files:
            t = self.read_file(f, columns).group_by(columns).aggregate([])
            found.update(zip(*(t[c].to_pylist() for c in columns), strict=True))
        return found

    def drop_keys(self, files: list[StorePath], columns: list[str], keys: Iterable[tuple]) -> int:
        """Rewrite each file without the rows whose `columns` values are one of `keys` (delete it when nothing
        is left); returns the rows dropped. A crash in between leaves those keys missing, never twice."""
        wanted = pa.array(sorted({_SEP.join(map(str, k)) for k in keys}), pa.string())
        dropped = 0
        for f in files:
            t = self.read_file(f)
            hit = pc.is_in(_joined(t, columns), value_set=wanted)
            n = pc.sum(hit).as_py() or 0
            if not n:
                continue
            rest = t.filter(pc.invert(hit))
            if rest.num_rows:
                self._replace(f, rest)
            elif self.remote:
                with remote.explained(str(f)):
                    self.fs.rm_file(remote.key(str(f)))
            else:
                f.unlink(missing_ok=True)
            dropped += n
        return dropped

    def drop_rewritten(self, table: str, rows: pa.Table, key: list[str], prefix: str | None = None) -> int:
        """Before `rows` are written again: drop their keys from the older files of their partitions (those
        named with `prefix`), so that no key ends up in two files; returns the rows dropped."""
        spec = TABLES[table]
        groups: dict[tuple, set[tuple]] = {}
        cols = [rows[c].to_pylist() for c in (*spec.partitions, *key)]
        for values in zip(*cols, strict=True):
            groups.setdefault(values[: len(spec.partitions)], set()).add(values[len(spec.partitions) :])
        dropped = 0
        for part, keys in groups.items():
            files = self.files(table, prefix=prefix, **dict(zip(spec.partitions, part, strict=True)))
            dropped += self.drop_keys(files, key, keys)
        return dropped

    def empty_file(self, table: Table) -> StorePath:
        """A zero-row Parquet file with the table's schema (under `_empty/`, outside every table), so an
        empty view still has typed columns; named after the schema, so a new schema gets a new file. Remotely
        it sits in a Hive-shaped folder (`<p>=_/...`): views read it first, beside the table's files, so every
        declared column exists even where all files predate it (NULL there)."""
        digest = hashlib.sha256(table.schema.to_string().encode()).hexdigest()[:12]
        empty = pa.Table.from_pylist([], schema=table.schema)
        path = self._join("_empty", table.name, *(f"{p}=_" for p in table.partitions), f"{digest}.parquet")
        if self.remote:
            self.check()
            with remote.explained(str(path)):
                if not self.fs.exists(remote.key(path)):
                    self._put(path, empty)
            return path
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            self._replace(path, empty)
        return path

    def _replace(self, path: StorePath, data: pa.Table) -> None:
        if self.remote:
            self._put(path, data)
            return
        tmp = path.with_name(f"{TMP_PREFIX}{path.name}.@{HOST}.{os.getpid()}-{uuid.uuid4().hex}")  # the writer
        try:
            pq.write_table(data, tmp, **_encodings(data.schema))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def _put(self, url: str, data: pa.Table) -> None:
        """Encode the whole file in memory, then one PUT under its final name: an object store makes it
        visible whole or not at all (a failed encode uploads nothing; a streamed upload could commit a
        truncated file when an error closes it)."""
        self.check()
        buf = pa.BufferOutputStream()
        pq.write_table(data, buf, **_encodings(data.schema))
        with remote.explained(url):
            self.fs.pipe_file(remote.key(url), buf.getvalue().to_pybytes())

    def clean_tmp(self, table: str | None = None, lease: float = TMP_LEASE_SECONDS) -> int:
        """Delete temp files left by killed writers (of one table, or all); returns how many. A temp file
        whose writer process still runs on this machine is being written: left alone. One written from another
        machine (a folder shared over NFS) cannot be checked from here: it is left alone until it is `lease`
        seconds old, far longer than any one file takes to write. Remotely nothing is ever written under a
        temp name: this only checks the bucket (check())."""
        if self.remote:
            self.check()
            return 0
        n = 0
        for tmp in self._tmp_files(table):
            if not _abandoned(tmp, lease):
                continue
            tmp.unlink(missing_ok=True)
            n += 1
        return n

    def _tmp_files(self, table: str | None = None) -> Iterator[Path]:
        base = self.root / table if table else self.root
        if base.exists():
            yield from base.rglob(f"{TMP_PREFIX}*")


def _glob_re(pattern: str) -> str:
    """A one-level glob (`*` within a path segment) as a regular expression."""
    return "[^/]*".join(re.escape(piece) for piece in pattern.split("*"))


def _abandoned(tmp: Path, lease: float) -> bool:
    """Was this temp file (`...@<host>.<pid>-<hex>`; `...<pid>-<hex>` before hosts) left by a writer now gone?"""
    m = re.search(r"(?:\.@([A-Za-z0-9_-]+))?\.(\d+)-[0-9a-f]{32}$", tmp.name)
    if not m:
        return True  # named before temp files carried their writer's pid
    host, pid = m.group(1), int(m.group(2))
    if host is not None and host != HOST:  # another machine's writer: only age tells
        try:
            return time.time() - tmp.stat().st_mtime > lease
        except FileNotFoundError:
            return False
    return not _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_SEP = "\x1f"


def _joined(t: pa.Table, columns: list[str]) -> pa.Array:
    """One string per row: the key columns joined (to test rows against a set of key tuples)."""
    parts = [pc.cast(t[c], pa.string()) for c in columns]
    return pc.binary_join_element_wise(*parts, _SEP) if len(parts) > 1 else parts[0].combine_chunks()


def _partition_groups(data: pa.Table, partitions: tuple[str, ...]) -> Iterator[pa.Table]:
    """Contiguous runs of equal partition values (the table is sorted by them)."""
    if not data.num_rows:
        return
    cols = [data[p].to_pylist() for p in partitions]
    start = 0
    for i in range(1, data.num_rows + 1):
        if i == data.num_rows or any(c[i] != c[start] for c in cols):
            yield data.slice(start, i - start)
            start = i


def _chunks(data: pa.Table, column: str, rows: int) -> Iterator[pa.Table]:
    """Slices of about `rows` rows that never split a run of equal `column` values."""
    values = data[column].to_pylist()
    start = 0
    while start < len(values):
        end = min(start + rows, len(values))
        while end < len(values) and values[end] == values[end - 1]:
            end += 1
        yield data.slice(start, end - start)
        start = end
