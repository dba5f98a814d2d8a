"""What the load-time checks of a local model cost: its content-hash revision and the architecture probe.

1. `extract.model.local_revision` over a folder of `--gb` GB of random "weights" in 4 shards (mtimes set an
   hour back, as for a model saved earlier): the first call reads and hashes every byte (page cache warm: the
   files were just written), later calls only stat the files (hashes remembered in KVW_CACHE). Repeated
   `--repeats` times, min / median / max.
2. `extract.capture.probe` (a 16-token forward through the attention interface) on the default model,
   beside one 512-token prefill of it for scale.

    python benchmarks/model_checks.py --gb 4 --dir /tmp/kvw-revision
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from extract import capture  # noqa: E402
from extract import model as models  # noqa: E402


def spread(xs: list[float]) -> str:
    return f"min {min(xs):.3f} / median {statistics.median(xs):.3f} / max {max(xs):.3f} s"


def make_folder(root: Path, gb: float, shards: int = 4) -> int:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text("{}")
    size = int(gb * 2**30 / shards)
    block = os.urandom(1 << 24)
    for i in range(shards):
        with open(root / f"model-{i:05d}-of-{shards:05d}.safetensors", "wb") as fh:
            for _ in range(size // len(block)):
                fh.write(block)
    past = time.time() - 3600
    for p in root.iterdir():
        os.utime(p, (past, past))
    return sum(p.stat().st_size for p in root.iterdir())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", help="scratch folder for the fake weights (default: a temp dir, removed after)")
    a = ap.parse_args(argv)
    scratch = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="kvw-revision-"))
    cache_before = os.environ.get("KVW_CACHE")
    os.environ["KVW_CACHE"] = str(scratch / "cache")  # the remembered hashes go here, not into the user's cache
    folder = scratch / "model"
    try:
        total = make_folder(folder, a.gb)
        first, again = [], []
        for _ in range(a.repeats):
            shutil.rmtree(scratch / "cache", ignore_errors=True)  # forget the hashes: a first load
            t0 = time.perf_counter()
            rev = models.local_revision(folder)
            first.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            assert models.local_revision(folder) == rev
            again.append(time.perf_counter() - t0)
        rate = total / 2**30 / statistics.median(first)
        print(f"local_revision over {total / 2**30:.1f} GiB in 4 shards: first {spread(first)} ({rate:.2f} GiB/s, "
              f"page cache warm); remembered {spread(again)}")  # fmt: skip
    finally:
        if cache_before is None:
            os.environ.pop("KVW_CACHE", None)
        else:
            os.environ["KVW_CACHE"] = cache_before
        if not a.dir:
            shutil.rmtree(scratch, ignore_errors=True)

    loaded = models.load_cached(models.DEFAULT_MODEL, "cpu", "float32")
    probes, prefills = [], []
    ids = torch.randint(0, 49152, (512,), generator=torch.Generator().manual_seed(0))
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        capture.probe(loaded.model)
        probes.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        capture.prefill(loaded.model, ids)
        prefills.append(time.perf_counter() - t0)
    print(
        f"probe (16-token forward, {len(loaded.layers)} layers, {loaded.name}): {spread(probes)}; "
        f"one 512-token prefill with capture: {spread(prefills)}; torch threads {torch.get_num_threads()}"
    )


if __name__ == "__main__":
    main()
