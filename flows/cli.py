"""`kvw`: the project's command line (ad-hoc SQL, catalog, flow runs in-process, serving, workers, download).

Each subcommand is a thin wrapper over an importable function; `kvw <cmd> -h` for options.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str, args: Callable[[argparse.ArgumentParser], None] = lambda p: None):
    """Register a subcommand: its help, its arguments and its handler."""

    def wrap(fn):
        COMMANDS[name] = (help, args, fn)
        return fn

    return wrap


def _sql_args(p):
    p.add_argument("query", nargs="?", help="SQL to run (read from stdin when omitted)")
    p.add_argument(
        "--db", help="catalog file (default warehouse/kv.duckdb or $KVW_DB); a missing one is built over data/ beside"
    )
    p.add_argument(
        "--data", help="query this Parquet root instead (a folder or s3://bucket/prefix/data): views made in memory"
    )
    p.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    p.add_argument("--max-rows", type=int, default=40)


@command("sql", "run read-only SQL against the warehouse catalog", _sql_args)
def _sql(a) -> int:
    import duckdb

    from warehouse import catalog, readonly

    query = a.query if a.query is not None else sys.stdin.read()
    if not query.strip():
        print("kvw sql: no query given", file=sys.stderr)
        return 2
    from warehouse.store import Store, StoreError

    try:
        readonly.check(query)  # before anything opens: a refused statement never runs
        con = catalog.memory(Store(a.data)) if a.data else catalog.connect(a.db, read_only=True)
        readonly.lock(con)
    except (StoreError, readonly.Refused, duckdb.Error) as err:
        print(f"kvw sql: {str(err).splitlines()[0] if not isinstance(err, readonly.Refused) else err}"
              f"{_verify_hint(err)}", file=sys.stderr)  # fmt: skip
        return 1
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
        print(f"kvw sql: {readonly.locked_message(err) or err}{_verify_hint(err)}", file=sys.stderr)
        return 1
    finally:
        con.close()
    return 0


def _data_root(a, cmd: str):
    """--data, else the Parquet folder the --db catalog describes (data/ beside it), else the default
    warehouse: `--db other/kv.duckdb` alone must never rebuild that catalog over the default warehouse's data.
    None (after printing why) when --db names a catalog with no data beside it."""
    from warehouse import config

    data = a.data or config.catalog_data(a.db)
    if data is None:
        print(f"kvw {cmd}: no Parquet folder beside {a.db} (expected {Path(a.db).parent / 'data'}); "
              "name it with --data", file=sys.stderr)  # fmt: skip
    return data


def _catalog_args(p):
    p.add_argument("--data", help="Parquet root (default: data/ beside --db; else $KVW_DATA or warehouse/data)")
    p.add_argument("--db", help="catalog file to write (default warehouse/kv.duckdb or $KVW_DB)")


@command("catalog", "rebuild the DuckDB catalog (views over the Parquet files)", _catalog_args)
def _catalog(a) -> int:
    import duckdb

    from warehouse import catalog
    from warehouse.store import Store, StoreError

    data = _data_root(a, "catalog")
    if data is None:
        return 2
    try:
        db = catalog.build(Store(data), a.db)
    except (duckdb.Error, StoreError) as err:
        print(f"kvw catalog: {str(err).splitlines()[0]}{_verify_hint(err)}", file=sys.stderr)
        return 1
    print(db)
    return 0


def _verify_hint(err: BaseException) -> str:
    """What to run when DuckDB's error is about a damaged Parquet file (its messages do not always name it)."""
    from warehouse.store import _damaged

    return "; `kvw verify` names every damaged file" if _damaged(err) else ""


def _verify_args(p):
    p.add_argument("--data", help="Parquet root, a folder or s3://... (default: data/ beside --db; else $KVW_DATA)")
    p.add_argument("--db", help="a catalog whose data/ to check (default warehouse/kv.duckdb or $KVW_DB)")
    p.add_argument("--table", action="append", help="only this table (repeatable; default every table)")


@command("verify", "check every warehouse file (format, schema, page checksums, row counts); name each bad one",
         _verify_args)  # fmt: skip
def _verify(a) -> int:
    import time

    from warehouse.schemas import TABLES
    from warehouse.store import Store, StoreError
    from warehouse.verify import verify

    data = _data_root(a, "verify")
    if data is None:
        return 2
    from warehouse import remote

    if not remote.is_url(str(data)) and not Path(data).is_dir():
        print(f"kvw verify: {data} is not a folder", file=sys.stderr)
        return 2
    unknown = [t for t in a.table or [] if t not in TABLES]
    if unknown:
        print(f"kvw verify: unknown table {unknown}; tables: {', '.join(sorted(TABLES))}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        report = verify(Store(data), a.table)
    except StoreError as err:
        print(f"kvw verify: {err}", file=sys.stderr)
        return 1
    for f in report.findings:
        print(f"{'BAD ' if f.damage else 'note'}  {f.path}: {f.problem}")
    bad = len({f.path for f in report.damaged})
    tail = f"{bad} bad file(s)" if bad else "no bad file"
    print(f"{report.files} files, {report.rows:,} rows, {report.bytes / 2**20:,.1f} MiB checked in "
          f"{time.perf_counter() - t0:.1f} s: {tail}")  # fmt: skip
    return 1 if bad else 0


def _flow_args(p):
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a flow parameter, as `prefect deployment run -p` takes it (a JSON value, else text); "
                        "repeatable, e.g. -p tasks=qasper,trec -p limit=2")  # fmt: skip


def _run_flow(name: str, flow_ref: str, a) -> int:
    """The flow in this process (flows/local.py): reported to the server at PREFECT_API_URL when one answers,
    else to a temporary one; the flow's result printed, exit 1 when the run did not complete."""
    import importlib

    from flows import local

    module, attr = flow_ref.split(":")
    flow = getattr(importlib.import_module(module), attr)
    try:
        params = local.parse_params(a.param, flow)
    except local.ParamError as err:
        print(f"kvw {name}: {err}", file=sys.stderr)
        return 2
    url = os.environ.get("PREFECT_API_URL")
    answers = local.server_answers(url)
    at = url or "(PREFECT_API_URL unset)"
    if params.get("work_pool") and not answers:
        print(f"kvw {name}: work_pool needs the Prefect server its workers poll, and none answers at {at}: "
              "start it (see Scale out in the README)", file=sys.stderr)  # fmt: skip
        return 2
    if not answers:
        print(f"kvw {name}: no Prefect server at {at}: running with a temporary one (the run is kept in "
              f"{os.environ.get('PREFECT_HOME', '~/.prefect')})", file=sys.stderr)  # fmt: skip
    out = local.run(flow, params, url if answers else None)
    if not out.completed:
        print(f"kvw {name}: {out.state}: {out.message}", file=sys.stderr)
        return 1
    for k, v in (out.result or {}).items():
        print(f"{k}: {v}")
    return 0


@command("extract", "run the extract flow here, without a deployment (-p as `prefect deployment run`)", _flow_args)
def _extract(a) -> int:
    return _run_flow("extract", "flows.extract_flow:extract", a)


@command("evaluate", "run the evaluate flow here, without a deployment (-p as `prefect deployment run`)", _flow_args)
def _evaluate(a) -> int:
    return _run_flow("evaluate", "flows.evaluate_flow:evaluate", a)


@command("serve", "serve every Prefect deployment (needs PREFECT_API_URL; see scripts/env.sh)")
def _serve(a) -> int:
    from flows.serve import main

    return main()


def _deploy_args(p):
    p.add_argument("--pool", required=True, help="process work pool to register on (created when missing)")
    p.add_argument("--source", help="folder holding this repository, as every worker sees it (default: this one)")
    p.add_argument("--zombie-seconds", type=int, default=90,
                   help="a shard run silent this long (its worker died) is marked Crashed and resubmitted")  # fmt: skip


@command("deploy", "register the shard deployments (extract-shard, evaluate-shard) on a work pool", _deploy_args)
def _deploy(a) -> int:
    from flows.deploy import deploy

    if not os.environ.get("PREFECT_API_URL"):
        print("kvw deploy: PREFECT_API_URL is not set (`source scripts/env.sh`)", file=sys.stderr)
        return 2
    kw = {"source": a.source} if a.source else {}
    try:
        names = deploy(a.pool, zombie_seconds=a.zombie_seconds, **kw)
    except ValueError as err:
        print(f"kvw deploy: {err}", file=sys.stderr)
        return 2
    for name in names:
        print(f"{name} on pool {a.pool}")
    print(f"now: kvw worker --pool {a.pool} --gpu N (or --cpu N --threads T), then run with -p work_pool={a.pool}")
    return 0


def _worker_args(p):
    p.add_argument("--pool", required=True, help="work pool to poll (see `kvw deploy`)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--gpu", type=int, metavar="N", help="one worker per GPU 0..N-1, pinned by CUDA_VISIBLE_DEVICES")
    g.add_argument("--gpus", metavar="0,1,...", help="one worker per listed GPU id")
    g.add_argument("--cpu", type=int, metavar="N", help="N CPU workers (no GPU visible)")
    p.add_argument("--threads", type=int, help="torch threads per worker (default: the cores / the workers)")
    p.add_argument("--per-gpu", type=int, default=1, metavar="K",
                   help="K workers per GPU, each with its own model: they overlap extraction's CPU side")  # fmt: skip
    p.add_argument("--name", default=None, help="worker name prefix (default: the host name)")


@command("worker", "start one Prefect process worker per GPU (or CPU slice) on a pool; Ctrl-C stops them", _worker_args)
def _worker(a) -> int:
    import socket

    from flows.worker import run_workers, slots

    gpus = [g.strip() for g in a.gpus.split(",") if g.strip()] if a.gpus else None
    if a.gpu is not None:
        gpus = [str(i) for i in range(a.gpu)]
    try:
        chosen = slots(gpus, a.cpu, a.threads, a.name or socket.gethostname(), a.per_gpu)
    except ValueError as err:
        print(f"kvw worker: {err}", file=sys.stderr)
        return 2
    return run_workers(a.pool, chosen)


def _dl_args(p):
    p.add_argument("dest", help="folder to create: <dest>/data/*.jsonl and <dest>/config/*.json")


@command("download-longbench", "fetch LongBench v1 (data.zip from the hub, config from GitHub)", _dl_args)
def _download(a) -> int:
    from extract.longbench import download_longbench

    print(download_longbench(a.dest))
    return 0


@command("tables", "print every table's grain, key and columns, then every SQL view's and the macros")
def _tables(a) -> int:
    from warehouse.catalog import describe_views
    from warehouse.schemas import TABLES

    for t in TABLES.values():
        print(f"{t.name}: {t.grain}\n  key: {', '.join(t.key)}\n  partitions: {', '.join(t.partitions)}")
        for f in t.schema:
            print(f"    {f.name:<22} {f.type}")
    views, macros = describe_views()
    print("\nviews (SQL over the tables, in warehouse/views/):")
    for v in views:
        print(f"{v.name}: {v.doc}")
        for col, typ in v.columns:
            print(f"    {col:<22} {typ}")
    print("\nmacros:")
    for m in macros:
        print(f"  {m.name}: {m.doc}")
    return 0


@command("policies", "list the eviction policies, their parameters and defaults")
def _policies(a) -> int:
    from transform.policies import REGISTRY, names

    for name in names():
        cls = REGISTRY[name]
        doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
        print(f"{name}  ({'per KV head' if cls.per_head else 'shared by all heads'})  {doc}")
        print("    " + ", ".join(f"{k}={v!r}" for k, v in cls.parameters().items()))
    return 0


def _keep_args(p):
    p.add_argument("policy", help="policy name (see `kvw policies`)")
    p.add_argument("--budget", action="append", default=[], help="tokens (>= 1) or a ratio (< 1); repeatable")
    p.add_argument("--param", action="append", default=[], help="name=value (JSON value); repeatable")
    p.add_argument("--setting", action="append", default=[], help="question_aware (default) and/or question_agnostic")
    p.add_argument("--run-id", help="extraction run (default: the most recently extracted)")
    p.add_argument("--tasks", help="comma-separated tasks (default: all extracted)")
    p.add_argument("--limit", type=int, help="samples per task")
    p.add_argument("--overwrite", action="store_true", help="rank again samples already ranked")
    p.add_argument("--data", help="Parquet root (default: data/ beside --db; else $KVW_DATA or warehouse/data)")
    p.add_argument("--db", help="catalog to rebuild afterwards (default warehouse/kv.duckdb or $KVW_DB)")


@command("keep", "rank a policy's cache positions for extracted samples: every budget's keep-set follows", _keep_args)
def _keep(a) -> int:
    from transform.keep import find_samples, parse_params, rank
    from transform.policies import PolicyError, make
    from warehouse import catalog
    from warehouse.store import Store

    data = _data_root(a, "keep")
    if data is None:
        return 2
    store = Store(data)
    try:
        params = parse_params(a.param)
        budgets = [float(b) if "." in b or "e" in b.lower() else int(b) for b in a.budget] or [None]
        policies = [make(a.policy, **params, **({} if b is None else {"budget": b})) for b in budgets]
        tasks = [t.strip() for t in a.tasks.split(",") if t.strip()] if a.tasks is not None else None
        refs = find_samples(store, a.run_id, tasks, a.limit)
        done = rank(store, policies, a.setting or ["question_aware"], refs, overwrite=a.overwrite)
    except (PolicyError, ValueError) as err:
        print(f"kvw keep: {err}", file=sys.stderr)
        return 2
    for policy in policies:
        print(f"{policy.label()} [{policy.policy_id}]")
    print(
        f"{len(refs)} samples: {done.samples} (sample, setting) ranked in {done.statements} SQL pass(es) "
        f"({done.seconds:.1f} s), {done.existing} already ranked; keep-sets in the views keep_sets and keep"
    )
    print(catalog.build(store, a.db))
    return 0


def _compare_args(p):
    from warehouse.quality_stats import MEASURES

    p.add_argument("policies", nargs="+", metavar="POLICY", help="policy names, labels, policy_ids or id prefixes")
    p.add_argument("--measure", default="kl_continuation", choices=[*MEASURES, "all"],
                   help="what to compare (default kl_continuation: defined for every sample; all: each in turn)")
    p.add_argument("--by", default="category", choices=["category", "task"],
                   help="scopes after every task pooled: LongBench categories (default) or tasks")
    p.add_argument("--task", help="one task only")
    p.add_argument("--setting", help="question_aware or question_agnostic (default: both, if evaluated)")
    p.add_argument("--run-id", help="extraction run (default: every run in the quality table)")
    p.add_argument("--plot", metavar="OUT.html", help="also write report 13's offline chart of these policies")
    p.add_argument("--db", help="catalog file (default warehouse/kv.duckdb or $KVW_DB)")


@command("compare", "eviction policies side by side: n, mean and bootstrap 95% interval per budget", _compare_args)
def _compare(a) -> int:
    from transform import compare
    from warehouse import catalog
    from warehouse.quality_stats import MEASURES

    con = catalog.connect(a.db, read_only=True)
    try:
        rows = compare.load(con, a.policies, a.task, a.setting, a.run_id)
        summary = compare.summarize(rows, a.by)
    except compare.CompareError as err:
        print(f"kvw compare: {err}", file=sys.stderr)
        return 2
    finally:
        con.close()
    measures = list(MEASURES) if a.measure == "all" else [a.measure]
    print("\n".join(compare.table_text(summary, m) for m in measures), end="")
    if a.plot:
        import pyarrow as pa

        from reports import html
        from reports import strategy_comparison as sc

        chart = sc.chart(sc.prepare({"strategy_quality": pa.Table.from_pylist(rows)}))
        print(html.write(a.plot, html.chart_page(chart, "Compare eviction policies", sc.REPORT.summary)))
    return 0


def _report_args(p):
    p.add_argument("--data", help="Parquet root (default: data/ beside --db; else $KVW_DATA or warehouse/data)")
    p.add_argument("--db", help="catalog (default warehouse/kv.duckdb or $KVW_DB); rebuilt first")
    p.add_argument("--out", help="folder for the pages (default reports/out or $KVW_REPORTS)")
    p.add_argument("--run-id", help="extraction run to draw (default: the one with the most samples)")
    p.add_argument("--only", help="comma-separated report names (default: all)")
    p.add_argument(
        "--demo",
        choices=("auto", "always", "never"),
        default="auto",
        help="run the model-internals demo (reports 14, 15): when its tables are missing (auto), always or never",
    )
    p.add_argument("--model", default=None, help="model of the demo (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--demo-new-tokens", type=int, default=32, help="greedy steps of the demo's decode comparison")


@command(
    "report", "build every offline HTML report and index.html (runs the demo when its tables are missing)", _report_args
)
def _report(a) -> int:
    from extract import demo
    from extract import model as models
    from reports.base import ReportError
    from reports.build import build_all, select
    from warehouse import catalog, config
    from warehouse.store import Store

    only = [n.strip() for n in a.only.split(",") if n.strip()] if a.only else None
    model = a.model or models.DEFAULT_MODEL
    try:
        select(only)
        config.writable_dir(a.out or config.reports_dir(), "--out")
        data = _data_root(a, "report")
        if data is None:
            return 2
        store = Store(data)
        db = catalog.build(store, a.db)
        con = catalog.connect(db, read_only=True)
        try:
            missing = demo.demo_missing(con, models.model_slug(model))
        finally:
            con.close()
        if a.demo == "always" or (a.demo == "auto" and missing):
            print(f"running the model-internals demo ({model}; missing: {', '.join(missing) or 'none'})")
            result = demo.run_demo(store, model, demo.DemoConfig(new_tokens=a.demo_new_tokens))
            print(f"demo run {result.run_id}: {result.rows} in {result.seconds:.1f} s")
            catalog.build(store, db)
        built = build_all(db, a.out, a.run_id, only)
    except (ReportError, ValueError) as err:
        print(f"kvw report: {err}", file=sys.stderr)
        return 2
    for b in built:
        print(f"{b.name:30} {b.status:10} {b.size_bytes / 1e6:5.2f} MB {b.seconds:5.1f} s")
    print(built[0].path.parent / "index.html" if built else "no reports")
    return 1 if any(b.status.startswith("failed") for b in built) else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kvw", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, (help_, args, _) in COMMANDS.items():
        args(sub.add_parser(name, help=help_, description=help_))
    a = ap.parse_args(argv)
    try:
        return COMMANDS[a.cmd][2](a)
    except BrokenPipeError:  # `kvw sql --csv ... | head` closed our stdout: that is not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit-time flush cannot raise again
        return 141  # 128 + SIGPIPE, what a shell tool killed by the closed pipe reports
    except KeyboardInterrupt:
        print(f"kvw {a.cmd}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a user gets one line naming the problem, never a traceback (KVW_DEBUG=1 shows it)
        if os.environ.get("KVW_DEBUG"):
            raise
        print(f"kvw {a.cmd}: {_explain(err)}", file=sys.stderr)
        return 1


def _explain(err: Exception) -> str:
    """One line for an error no handler named: the message of an expected kind (bad data or input, a store or
    catalog that cannot be used), else the exception's type too and how to see the traceback."""
    import duckdb

    first = (str(err).strip().splitlines() or [""])[0]
    if isinstance(err, duckdb.Error | OSError | ValueError) and first:
        return f"{first}{_verify_hint(err) if isinstance(err, duckdb.Error) else ''}"
    return f"unexpected {type(err).__name__}: {first} (KVW_DEBUG=1 prints the traceback; please report it)"


if __name__ == "__main__":
    sys.exit(main())
