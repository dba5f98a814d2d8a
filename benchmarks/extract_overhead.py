"""Extraction vs a bare prefill of the same model on the same prompts, side by side in one run.

Prints, per prompt length: bare prefill seconds, extraction seconds (prefill +
statistics + Parquet writes), their ratio (goal <= 1.10 on CPU, <= 1.05 on a
GPU), token_stats rows written per second, bytes per token_stats row on disk
(goal <= 8), and the process's peak RSS.

    python benchmarks/extract_overhead.py                      # default model, 1K/2K/4K
    python benchmarks/extract_overhead.py --lengths 1024 --repeats 1
    python benchmarks/extract_overhead.py --random-config llama3-8b --dtype bfloat16   # GPU, no download
    python benchmarks/extract_overhead.py --random-config llama3-8b --tokenizer DIR --lengths 4096 16384
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from extract import model as models
from extract.longbench import open_longbench, read_task
from extract.run import process_sample
from extract.sample import StatsConfig
from warehouse.store import Store

try:  # run as a script (python benchmarks/x.py) or imported as benchmarks.x
    from random_model import SHAPES, random_model, tokenizer
except ImportError:
    from benchmarks.random_model import SHAPES, random_model, tokenizer


def fitting_sample(lb, n_tokens: int, tasks=("narrativeqa", "qasper", "gov_report", "hotpotqa", "multi_news")):
    """The shortest English sample that still fills `n_tokens` (~1.3 tokens per word, 20% margin).

    Short enough that tokenizing a 100K-token novel does not dominate the comparison, long enough
    that the middle truncation cuts it to exactly `n_tokens`.
    """
    need = n_tokens * 1.2 / 1.3
    pool = [s for t in tasks for s in read_task(lb, t) if hasattr(s, "context") and (s.length or 0) >= need]
    return min(pool, key=lambda s: s.length)


def reset_peak(device: str):
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def gpu_peak(device: str) -> float:
    """GiB allocated at the peak since the last reset (0 off the GPU)."""
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else 0.0


def sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.inference_mode()
def bare_prefill(loaded, ids: torch.Tensor) -> float:
    ids = ids[None].to(loaded.device)
    sync(loaded.device)
    t0 = time.perf_counter()
    out = loaded.model(input_ids=ids, use_cache=True, logits_to_keep=1)
    sync(loaded.device)
    del out
    return time.perf_counter() - t0


def pipelined(store, loaded, lb, sample, ids, n: int, cfg, k: int, workers: int) -> dict:
    """`k` extractions on `workers` threads (what a flow run does with concurrent tasks) vs `k` bare prefills."""
    t0 = time.perf_counter()
    for _ in range(k):
        bare_prefill(loaded, ids)
    bare = time.perf_counter() - t0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda i: process_sample(store, loaded, lb, sample, f"pipe{n}-{i}", n, cfg, True), range(k)))
    sync(loaded.device)
    full = time.perf_counter() - t0
    return {"pipe_samples": k, "pipe_bare_s": bare, "pipe_extract_s": full, "pipe_ratio": full / bare}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default=models.DEFAULT_MODEL)
    ap.add_argument("--random-config", choices=sorted(SHAPES), help="random weights of this shape instead")
    ap.add_argument("--tokenizer", help="with --random-config: a local tokenizer folder (default: the default model's)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--attn", default="auto", help="with --random-config: sdpa, eager or flash_attention_2")
    ap.add_argument("--pipeline", type=int, default=0, help="also time this many samples extracted by concurrent "
                    "threads (prefill under extract.sample.DEVICE_LOCK, tokenizing and writing overlapped), against "
                    "as many bare prefills: the throughput ratio of a run, not one sample's latency")  # fmt: skip
    ap.add_argument("--workers", type=int, default=3, help="threads for --pipeline")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)

    if args.random_config:
        loaded = random_model(args.random_config, args.device, args.dtype, tokenizer(args.tokenizer), args.attn)
    else:
        loaded = models.load(args.model, args.device, args.dtype)
    lb = open_longbench()
    sample = fitting_sample(lb, max(args.lengths))
    cfg = StatsConfig()
    from extract.prompts import build_prompt

    print(
        f"model={loaded.name} device={loaded.device} dtype={loaded.dtype} attn={loaded.attn_impl} "
        f"threads={torch.get_num_threads()} sample={sample.task}/{sample.sample_id}"
    )
    print(f"{'tokens':>7} {'prefill_s':>10} {'extract_s':>10} {'ratio':>6} {'rows/s':>10} {'B/row':>6} "
          f"{'GPU GiB prefill/extract':>24}")  # fmt: skip
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "data")
        for n in args.lengths:
            ids = torch.from_numpy(build_prompt(loaded.tokenizer, lb.prompts[sample.task], sample, n).input_ids)
            bare_prefill(loaded, ids)  # warm-up for this shape
            process_sample(store, loaded, lb, sample, f"bench{n}", n, cfg, overwrite=True)
            bare, full, peak_bare, peak_full = [], [], 0.0, 0.0
            for _ in range(args.repeats):  # interleaved, so drift hits both sides alike
                reset_peak(loaded.device)
                bare.append(bare_prefill(loaded, ids))
                peak_bare = max(peak_bare, gpu_peak(loaded.device))
                reset_peak(loaded.device)
                t0 = time.perf_counter()
                process_sample(store, loaded, lb, sample, f"bench{n}", n, cfg, overwrite=True)
                sync(loaded.device)
                full.append(time.perf_counter() - t0)
                peak_full = max(peak_full, gpu_peak(loaded.device))
            b, f = statistics.median(bare), statistics.median(full)
            files = store.files("token_stats", run_id=f"bench{n}")
            import pyarrow.parquet as pq

            rows = sum(pq.ParquetFile(p).metadata.num_rows for p in files)
            size = sum(os.path.getsize(p) for p in files)
            r = {
                "tokens": len(ids),
                "prefill_s": b,
                "extract_s": f,
                "ratio": f / b,
                "rows_per_s": rows / f,
                "bytes_per_row": size / rows,
                "gpu_peak_prefill_gib": peak_bare,
                "gpu_peak_extract_gib": peak_full,
            }
            results.append(r)
            print(
                f"{r['tokens']:>7} {b:>10.3f} {f:>10.3f} {r['ratio']:>6.3f} {r['rows_per_s']:>10.0f} "
                f"{r['bytes_per_row']:>6.2f} {peak_bare:>11.1f} / {peak_full:>10.1f}"
            )
            if args.pipeline:
                r.update(pipelined(store, loaded, lb, sample, ids, n, cfg, args.pipeline, args.workers))
                print(
                    f"{'':>7} pipelined, {args.pipeline} samples on {args.workers} threads: {r['pipe_bare_s']:.3f} s "
                    f"of bare prefills vs {r['pipe_extract_s']:.3f} s extracting, ratio {r['pipe_ratio']:.3f}"
                )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    print(f"peak RSS {peak:.0f} MiB" + (f", peak GPU memory {gpu:.1f} GiB" if gpu else ""))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "results": results,
                    "peak_rss_mib": peak,
                    "device": loaded.device,
                    "dtype": loaded.dtype,
                    "attn": loaded.attn_impl,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
