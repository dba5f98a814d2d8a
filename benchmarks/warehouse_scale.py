"""The warehouse at scale, side by side in one run: storage, scans, and policy sweeps as SQL vs the numpy reference.

On a synthetic warehouse of N token_stats rows (benchmarks/synth.py: the real schema, layout and Store, values
drawn from a real extraction's fitted distributions) it prints:
- bytes per token_stats row, catalog build seconds and file counts;
- a full-scan aggregate (every row, by layer) and partition-pruned ones (one task; one run);
- per policy (a setting-free score, an attention score, a position policy): the seconds to rank every sample
  in both settings (one SQL pass per ranking and setting, Parquet written) and to derive every keep-set of a
  5-budget sweep from the `keep_sets` view; keep-sets per second;
- the numpy reference (`load_stats` + `keep_mask` per sample, setting and budget) on a subset of the same
  samples, per sample, and the SQL/numpy ratio per sample;
- with --storage: what Parquet encodings and row orders give for token_stats (bytes per row, and whether
  DuckDB can read the file).
Goals (2 cores): one score policy, 5 budgets, both settings over 100M rows <= 10 s; SQL/numpy <= 1.0 per
sample; full-scan aggregate over 100M rows <= 2 s; <= 10 bytes per token_stats row without losing precision.

    python benchmarks/warehouse_scale.py                                      # 10M rows in a temp folder
    python benchmarks/warehouse_scale.py --rows 100000000 --root /tmp/wh100   # the full run (folder kept)
    python benchmarks/warehouse_scale.py --root /tmp/wh100 --reuse --storage  # again, plus encodings
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import synth  # benchmarks/synth.py: the script's folder is on sys.path

from transform.keep import find_samples, load_stats, rank
from transform.policies import make
from transform.settings import SETTINGS
from warehouse import catalog
from warehouse.store import Store, _encodings

BUDGETS = (0.1, 0.2, 0.3, 0.4, 0.5)
POLICIES = (("knorm", {}), ("h2o", {}), ("snapkv", {}), ("sink_recent", {"sink_tokens": 4}))


def timed(fn, repeats: int = 1):
    """(median seconds, last result)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def table_bytes(store: Store, table: str) -> tuple[int, int]:
    files = store.files(table)
    return sum(f.stat().st_size for f in files), len(files)


def scans(con: duckdb.DuckDBPyConnection, repeats: int) -> dict[str, float]:
    task, run = con.execute("SELECT any_value(task), any_value(run_id) FROM samples").fetchone()
    queries = {
        "full scan: avg norms and attention by layer (every row)": (
            "SELECT layer, avg(key_norm), avg(value_norm), avg(attn_received) FROM token_stats GROUP BY layer",
            [],
        ),
        "pruned: the same for one task": (
            "SELECT layer, avg(key_norm), avg(value_norm) FROM token_stats WHERE task = ? GROUP BY layer",
            [task],
        ),
        "pruned: row count of one run": ("SELECT count(*) FROM token_stats WHERE run_id = ?", [run]),
    }
    return {
        label: timed(lambda q=q, p=p: con.execute(q, p).fetchall(), repeats)[0] for label, (q, p) in queries.items()
    }


def sweep(store: Store, refs: list, name: str, params: dict) -> dict:
    """Rank every sample (both settings, written) then materialise every keep-set of the 5 budgets."""
    shutil.rmtree(store.root / "rankings", ignore_errors=True)
    policies = [make(name, budget=b, **params) for b in BUDGETS]
    ranked_s, done = timed(lambda: rank(store, policies, SETTINGS, refs))
    con = catalog.memory(store)
    ids = [p.policy_id for p in policies]
    q = """SELECT policy_id, setting, count(DISTINCT sample_id), sum(len(kept_positions))
           FROM keep_sets WHERE list_contains(?::VARCHAR[], policy_id) GROUP BY ALL"""
    derive_s, rows = timed(lambda: con.execute(q, [ids]).fetchall())
    con.close()
    assert len(rows) == len(BUDGETS) * len(SETTINGS) and all(r[2] == len(refs) for r in rows), rows
    keep_sets = len(refs) * len(BUDGETS) * len(SETTINGS)
    return {"rank": ranked_s, "derive": derive_s, "total": ranked_s + derive_s, "statements": done.statements,
            "files": done.files, "keep_sets": keep_sets}  # fmt: skip


def reference(store: Store, refs: list, name: str, params: dict) -> float:
    """Seconds per sample of the numpy reference: load the statistics per setting, one keep_mask per budget."""
    policies = [make(name, budget=b, **params) for b in BUDGETS]
    t0 = time.perf_counter()
    for ref in refs:
        for setting in SETTINGS:
            stats = load_stats(store, ref, setting)
            for p in policies:
                p.keep_mask(stats)
    return (time.perf_counter() - t0) / len(refs)


def storage(store: Store, samples: int) -> list[tuple[str, float, str, float]]:
    """token_stats of a few samples rewritten with other encodings: (choice, bytes/row, DuckDB reads it, write s)."""
    files = store.files("token_stats")[:samples]
    tables = [pq.read_table(f) for f in files]
    rows = sum(t.num_rows for t in tables)
    halves = [f.name for f in tables[0].schema if pa.types.is_float16(f.type)]
    base = _encodings(tables[0].schema)  # pyarrow adds to column_encoding in place: a fresh copy per write below
    choices = {
        "as written (float16 plain, float32 byte-stream split, zstd 3)": ({}, None),
        "zstd level 6": ({"compression_level": 6}, None),
        "zstd level 9": ({"compression_level": 9}, None),
        "byte-stream split on float16 too": (
            {
                "use_byte_stream_split": False,
                "column_encoding": {
                    **(base["column_encoding"] or {}),
                    **{c: "BYTE_STREAM_SPLIT" for c in base["use_byte_stream_split"] + halves},
                },
            },
            None,
        ),
        "rows by (layer, position, kv_head)": ({}, ["layer", "position", "kv_head"]),
        "rows by (position, layer, kv_head)": ({}, ["position", "layer", "kv_head"]),
    }
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, (change, order) in choices.items():
            size, seconds, readable = 0, 0.0, "yes"
            for i, t in enumerate(tables):
                path = Path(tmp) / f"{i}.parquet"
                if order:
                    t = t.sort_by([(c, "ascending") for c in order])
                t0 = time.perf_counter()
                pq.write_table(t, path, **{**_encodings(t.schema), **change})
                seconds += time.perf_counter() - t0
                size += path.stat().st_size
            try:
                duckdb.execute(f"SELECT sum(key_norm) FROM read_parquet('{tmp}/*.parquet')").fetchall()
            except duckdb.Error as err:
                readable = f"no: {str(err).splitlines()[0][:70]}"
            out.append((label, size / rows, readable, seconds))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000, help="token_stats rows to generate")
    ap.add_argument("--root", type=Path, help="warehouse data root to generate into (default: a temp folder)")
    ap.add_argument("--reuse", action="store_true", help="use the warehouse already at --root")
    ap.add_argument("--policies", default=",".join(n for n, _ in POLICIES), help="comma-separated")
    ap.add_argument("--numpy-samples", type=int, default=24, help="samples the numpy reference runs on")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of each scan (median)")
    ap.add_argument("--storage", action="store_true", help="also compare token_stats encodings and row orders")
    a = ap.parse_args(argv)
    tmp = None
    root = a.root
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="kvw-scale-")
        root = Path(tmp.name) / "data"
    store = Store(root)
    print(f"machine: {os.cpu_count()} cores; duckdb {duckdb.__version__}, pyarrow {pa.__version__}")
    if not a.reuse:
        shutil.rmtree(root, ignore_errors=True)
        gen = synth.generate(root, a.rows)
        print(f"generated {gen['rows']:,} token_stats rows ({gen['samples']} samples) in {gen['seconds']:.1f} s")
    con = catalog.memory(store)
    (rows,) = con.execute("SELECT count(*) FROM token_stats").fetchone()
    con.close()
    nbytes, nfiles = table_bytes(store, "token_stats")
    print(f"\ntoken_stats: {rows:,} rows, {nfiles} files, {nbytes / 1e9:.2f} GB, {nbytes / rows:.2f} bytes per row")

    with tempfile.TemporaryDirectory() as cat:
        build_s, db = timed(lambda: catalog.build(store, Path(cat) / "kv.duckdb"))
        files = sum(len(store.files(t)) for t in ("runs", "samples", "tokens", "token_stats", "layer_stats"))
        print(f"catalog build: {build_s:.2f} s over {files:,} files")
        con = duckdb.connect(str(db), read_only=True)
        print(f"\n{'query':58} seconds (median of {a.repeats})")
        for label, s in scans(con, a.repeats).items():
            print(f"{label:58} {s:7.2f}")
        con.close()

    refs = find_samples(store)
    few = refs[: a.numpy_samples]
    wanted = [(n, p) for n, p in POLICIES if n in a.policies.split(",")]
    print(f"\npolicy sweeps: {len(refs)} samples x {len(BUDGETS)} budgets {BUDGETS} x {len(SETTINGS)} settings")
    header = (f"{'policy':12} {'rank s':>7} {'derive s':>8} {'total s':>8} {'passes':>6} {'files':>5} "
              f"{'keep-sets/s':>11} {'SQL ms/sample':>13} {'numpy ms/sample':>15} {'SQL/numpy':>9}")  # fmt: skip
    print(header)
    for name, params in wanted:
        r = sweep(store, refs, name, params)
        ref_s = reference(store, few, name, params)
        sql_per = r["total"] / len(refs)
        print(f"{name:12} {r['rank']:7.2f} {r['derive']:8.2f} {r['total']:8.2f} {r['statements']:6d} {r['files']:5d} "
              f"{r['keep_sets'] / r['total']:11,.0f} {1000 * sql_per:13.1f} {1000 * ref_s:15.1f} "
              f"{sql_per / ref_s:9.3f}")  # fmt: skip
    shutil.rmtree(store.root / "rankings", ignore_errors=True)
    shutil.rmtree(store.root / "policies", ignore_errors=True)

    if a.storage:
        print(f"\n{'token_stats encoding (24 samples)':62} {'bytes/row':>9} {'write s':>8}  DuckDB reads it")
        for label, per_row, readable, seconds in storage(store, 24):
            print(f"{label:62} {per_row:9.2f} {seconds:8.2f}  {readable}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
