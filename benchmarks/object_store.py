"""The warehouse on an S3-protocol server vs a local folder, side by side in one run (issue 8's storage half).

A real S3 server on loopback (moto's server mode, the tests' one) stands in for a bucket; samples come from
benchmarks/synth.py (the real schema, sizes and Store writes). It prints:
- seconds per sample written (tokens, token_stats, layer_stats, samples: the four files an extraction
  writes per sample, 2K tokens of a 30-layer, 3-KV-head model) to S3 and to a local folder, and their ratio
  (goal <= 1.2);
- catalog build seconds over the S3 layout and the local one at 1,000 and 10,000 files, and a count(*) and a
  by-layer aggregate through the catalog.
Loopback has no network latency: a real bucket adds ~10-50 ms per request, which is why the store lists a
table once per prefix instead of folder by folder.

    python benchmarks/object_store.py                  # 8 samples at 2K tokens; 1,000 and 10,000 files
    python benchmarks/object_store.py --files 1000     # a quicker look
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import synth  # benchmarks/synth.py: the script's folder is on sys.path

from warehouse import catalog
from warehouse.store import Store

TABLES = ("tokens", "token_stats", "layer_stats", "samples")


def start_server() -> str:
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False).start()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise, when logging is set up
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
    )  # fmt: skip
    return endpoint


def make_bucket(name: str) -> str:
    import boto3

    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"


def samples(n: int, n_tokens: int, run_id: str = "bench"):
    """`n` synthetic samples' tables, made before any timing starts."""
    profile = synth.load_profile()
    model = synth._Model(profile, n_tokens)
    names = synth._task_names(profile, 21)
    out = []
    for i in range(n):
        task, base = names[i % len(names)]
        keys = {"run_id": run_id, "model": "synthetic", "task": task, "sample_id": f"s{i:06d}"}
        out.append(synth._sample_tables(model, i, 0, task, base, i // len(names), keys))
    return out


def write_seconds(store: Store, tables: list[dict]) -> list[float]:
    """Seconds per sample, writing its four files in the extraction's order (samples last)."""
    times = []
    for t in tables:
        t0 = time.perf_counter()
        for name in TABLES:
            store.write(name, t[name], t["samples"]["sample_id"][0].as_py())
        times.append(time.perf_counter() - t0)
    return times


def fill(store: Store, tables: list[dict], threads: int = 8) -> None:
    """Write many small samples quickly (in parallel: setting up the layout is not what is measured)."""

    def one(t):
        for name in TABLES:
            store.write(name, t[name], t["samples"]["sample_id"][0].as_py())

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, tables))


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=8, help="samples written per side for the per-sample time")
    ap.add_argument("--n-tokens", type=int, default=2048)
    ap.add_argument("--files", type=int, nargs="+", default=[1000, 10000], help="file counts for the catalog build")
    a = ap.parse_args(argv)
    print(f"loopback S3 server (moto) at {start_server()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tables = samples(a.samples, a.n_tokens)
        rows = tables[0]["token_stats"].num_rows
        local = write_seconds(Store(Path(tmp) / "write"), tables)
        remote = write_seconds(Store(make_bucket("kvw-bench-write") + "/data"), tables)
        lo, re_ = statistics.median(local), statistics.median(remote)
        print(f"\nper sample ({a.n_tokens} tokens, {rows:,} token_stats rows, 4 files), median of {a.samples}:")
        print(f"  local folder   {lo:.3f} s")
        print(f"  loopback S3    {re_:.3f} s   ratio {re_ / lo:.2f} (goal <= 1.2)")

        print("\ncatalog over N files (tiny samples, 4 files each):")
        print(f"  {'files':>6} | {'local build':>11} | {'S3 build':>8} | {'S3 count(*)':>11} | {'S3 by layer':>11}")
        for n in a.files:
            small = samples(max(1, n // len(TABLES)), 16, run_id=f"n{n}")
            lstore, sstore = Store(Path(tmp) / f"n{n}"), Store(make_bucket(f"kvw-bench-{n}") + "/data")
            fill(lstore, small)
            fill(sstore, small)
            assert len(sstore.files("token_stats")) == len(small)
            lb, _ = timed(lambda s=lstore, k=n: catalog.build(s, Path(tmp) / f"local-{k}.duckdb"))
            sb, db = timed(lambda s=sstore, k=n: catalog.build(s, Path(tmp) / f"s3-{k}.duckdb"))
            con = catalog.connect(db)
            cnt, got = timed(lambda c=con: c.execute("SELECT count(*) FROM token_stats").fetchone()[0])
            by_layer = "SELECT layer, avg(key_norm) FROM token_stats GROUP BY layer"
            agg, _ = timed(lambda c=con, q=by_layer: c.execute(q).fetchall())
            con.close()
            assert got == sum(t["token_stats"].num_rows for t in small)
            print(f"  {n:>6} | {lb:>9.2f} s | {sb:>6.2f} s | {cnt:>9.2f} s | {agg:>9.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
