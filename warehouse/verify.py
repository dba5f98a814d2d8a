"""`kvw verify`: every file of a warehouse checked, each bad one named, so damaged data never answers a query.

Per file: it is Parquet (magic bytes and a footer); its columns are the declared schema's (a file written before
a column was added may lack it, as the views allow) with the declared types; every data page decodes and
matches its CRC-32 checksum (written since 2026-12-07; a page without one is only decoded); the partition
folders match the rows. Per extracted sample: `tokens` holds `n_tokens` rows, `layer_stats` one row per
(layer, KV head) of the run's `layers` table, `token_stats` that many times `n_tokens`. A sample file without
its `samples` marker is reported as unfinished (views hide it; a rerun redoes the sample), not as damage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from warehouse.schemas import TABLES, Table, kv_schema
from warehouse.store import Store, StorePath

SAMPLE_FILES = ("tokens", "token_stats", "layer_stats", "kv")  # one file per sample, named after it


@dataclass(frozen=True)
class Finding:
    path: str
    table: str
    problem: str
    damage: bool = True  # False: a note (an unfinished sample), not a broken file


@dataclass
class Report:
    files: int = 0
    rows: int = 0
    bytes: int = 0
    findings: list[Finding] | None = None

    @property
    def damaged(self) -> list[Finding]:
        return [f for f in self.findings or [] if f.damage]


def _types_fit(declared: pa.DataType, found: pa.DataType) -> bool:
    """Equal, or the dictionary-encoded form of the same values (labels are written dictionary-encoded)."""
    if found == declared:
        return True
    unwrap = lambda t: t.value_type if pa.types.is_dictionary(t) else t  # noqa: E731
    return unwrap(found) == unwrap(declared) or (
        pa.types.is_large_string(unwrap(found)) and unwrap(declared) == pa.string()
    )


def check_file(store: Store, table: Table, path: StorePath) -> tuple[list[str], int, int]:
    """(problems, rows, bytes) of one file: format, schema, every page's checksum, partition folders."""
    problems: list[str] = []
    try:
        with store.open(path) as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(0)
            pf = pq.ParquetFile(fh, page_checksum_verification=True)
            got = pf.schema_arrow
            declared = table.schema
            if table.name == "kv" and "key" in got.names and pa.types.is_fixed_size_list(got.field("key").type):
                declared = kv_schema(got.field("key").type.list_size)  # the list size is the model's head_dim
            extra = [n for n in got.names if n not in declared.names]
            if extra:
                problems.append(f"columns not in the declared {table.name} schema: {extra}")
            wrong = [
                f"{f.name} is {f.type}, declared {declared.field(f.name).type}"
                for f in got
                if f.name in declared.names and not _types_fit(declared.field(f.name).type, f.type)
            ]
            if wrong:
                problems.append("wrong types: " + "; ".join(wrong))
            rows, parts, seen = 0, _partitions(path, table), {}
            for i in range(pf.num_row_groups):  # decodes every page: a checksum or decoding error raises here
                group = pf.read_row_group(i)
                rows += group.num_rows
                for p in parts:
                    if p in group.column_names:
                        seen.setdefault(p, set()).update(map(str, group[p].unique().to_pylist()))
            if rows != pf.metadata.num_rows:
                problems.append(f"{rows} rows decoded, the footer says {pf.metadata.num_rows}")
            problems += [
                f"rows of {p} {sorted(values)[:3]} in folder {p}={parts[p]}"
                for p, values in seen.items()
                if values != {parts[p]}
            ]
    except (OSError, pa.ArrowException, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        return [f"unreadable: {first}"], 0, 0
    return problems, rows, size


def _partitions(path: StorePath, table: Table) -> dict[str, str]:
    parts = {}
    for segment in str(path).split("/")[:-1]:
        key, eq, value = segment.partition("=")
        if eq and key in table.partitions:
            parts[key] = value
    return parts


def _sample_counts(store: Store) -> Iterator[Finding]:
    """Row counts of each extracted sample's files against its `samples` row and its run's `layers`."""
    con = store.connect()
    try:
        from warehouse import catalog

        catalog.create_views(con, store)
        rows = con.execute(
            """
            WITH l AS (SELECT run_id, sum(kv_heads)::BIGINT AS heads FROM layers GROUP BY run_id),
            t AS (SELECT run_id, task, sample_id, count(*) AS n FROM tokens GROUP BY ALL),
            ls AS (SELECT run_id, task, sample_id, count(*) AS n FROM layer_stats GROUP BY ALL),
            ts AS (SELECT run_id, task, sample_id, count(*) AS n FROM token_stats GROUP BY ALL)
            SELECT s.model, s.task, s.run_id, s.sample_id, s.n_tokens, t.n, ls.n, ts.n, l.heads
            FROM samples s LEFT JOIN t USING (run_id, task, sample_id) LEFT JOIN ls USING (run_id, task, sample_id)
            LEFT JOIN ts USING (run_id, task, sample_id) LEFT JOIN l USING (run_id)
            """
        ).fetchall()
    finally:
        con.close()
    for model, task, run_id, sample_id, n, tokens, layer_rows, stats, heads in rows:
        parts = dict(model=model, task=task, run_id=run_id)

        def where(table: str, sample_id=sample_id, parts=parts) -> str:
            return str(store.path(table, sample_id, **parts))

        if tokens != n:
            yield Finding(where("tokens"), "tokens", f"{tokens or 0} rows for a {n}-token sample")
        if heads is not None and layer_rows != heads:
            yield Finding(
                where("layer_stats"),
                "layer_stats",
                f"{layer_rows or 0} rows, the run's layers hold {heads} (layer, KV head) pairs",
            )
        if layer_rows and stats != layer_rows * n:
            yield Finding(
                where("token_stats"),
                "token_stats",
                f"{stats or 0} rows, expected {layer_rows} (layer, KV head) x {n} positions",
            )


def _relative(store: Store, table: str, path: StorePath) -> str:
    """A file's place under its table (partition folders and name): how a sample's files match its marker."""
    return str(path)[len(str(store._join(table))) + 1 :]


def verify(store: Store, tables: list[str] | None = None, progress: Callable[[str], None] | None = None) -> Report:
    """Check every file of the chosen tables (all by default); the report names each bad file."""
    report = Report(findings=[])
    names = tables or sorted(TABLES)
    markers = set()
    if any(t in SAMPLE_FILES for t in names):
        markers = {_relative(store, "samples", p) for p in store.files("samples")}
    for name in names:
        table = TABLES[name]
        files = store.files(name)
        if progress:
            progress(f"{name}: {len(files)} file(s)")
        for path in files:
            problems, rows, size = check_file(store, table, path)
            report.files += 1
            report.rows += rows
            report.bytes += size
            report.findings += [Finding(str(path), name, p) for p in problems]
            if name in SAMPLE_FILES and _relative(store, name, path) not in markers:
                note = "no samples marker: an unfinished sample (hidden from the views; a rerun redoes it)"
                report.findings.append(Finding(str(path), name, note, damage=False))
    if not report.damaged and {"samples", "tokens", "token_stats", "layer_stats"} <= set(names):
        report.findings += list(_sample_counts(store))  # counts only over files that read
    return report
