"""`kvw`: the project's command line (ad-hoc SQL, catalog, serving, data download).

Each subcommand is a thin wrapper over an importable function; `kvw <cmd> -h` for options.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str, args: Callable[[argparse.ArgumentParser], None] = lambda p: None):
    """Register a subcommand: its help, its arguments and its handler."""

    def wrap(fn):
        COMMANDS[name] = (help, args, fn)
        return fn

    return wrap


def _sql_args(p):
    p.add_argument("query", nargs="?", help="SQL to run (read from stdin when omitted)")
    p.add_argument("--db", help="catalog file (default warehouse/kv.duckdb or $KVW_DB)")
    p.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    p.add_argument("--max-rows", type=int, default=40)


@command("sql", "run read-only SQL against the warehouse catalog", _sql_args)
def _sql(a) -> int:
    import duckdb

    from warehouse import catalog

    query = a.query if a.query is not None else sys.stdin.read()
    if not query.strip():
        print("kvw sql: no query given", file=sys.stderr)
        return 2
    con = catalog.connect(a.db, read_only=True)
    try:
        rel = con.sql(query)
        if rel is None:
            return 0
        if a.csv:
            import csv

            w = csv.writer(sys.stdout)
            w.writerow(rel.columns)
            w.writerows(rel.fetchall())
        else:
            rel.show(max_rows=a.max_rows, max_width=200)
    except duckdb.Error as err:
        print(f"kvw sql: {err}", file=sys.stderr)
        return 1
    finally:
        con.close()
    return 0


def _catalog_args(p):
    p.add_argument("--data", help="Parquet root (default warehouse/data or $KVW_DATA)")
    p.add_argument("--db", help="catalog file to write (default warehouse/kv.duckdb or $KVW_DB)")


@command("catalog", "rebuild the DuckDB catalog (views over the Parquet files)", _catalog_args)
def _catalog(a) -> int:
    from warehouse import catalog, config
    from warehouse.store import Store

    db = catalog.build(Store(a.data or config.data_root()), a.db)
    print(db)
    return 0


@command("serve", "serve every Prefect deployment (needs PREFECT_API_URL; see scripts/env.sh)")
def _serve(a) -> int:
    from flows.serve import main

    return main()


def _dl_args(p):
    p.add_argument("dest", help="folder to create: <dest>/data/*.jsonl and <dest>/config/*.json")


@command("download-longbench", "fetch LongBench v1 (data.zip from the hub, config from GitHub)", _dl_args)
def _download(a) -> int:
    from extract.longbench import download_longbench

    print(download_longbench(a.dest))
    return 0


@command("tables", "print every table's grain, key and columns")
def _tables(a) -> int:
    from warehouse.schemas import TABLES

    for t in TABLES.values():
        print(f"{t.name}: {t.grain}\n  key: {', '.join(t.key)}\n  partitions: {', '.join(t.partitions)}")
        for f in t.schema:
            print(f"    {f.name:<22} {f.type}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kvw", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, (help_, args, _) in COMMANDS.items():
        args(sub.add_parser(name, help=help_, description=help_))
    a = ap.parse_args(argv)
    return COMMANDS[a.cmd][2](a)


if __name__ == "__main__":
    sys.exit(main())
