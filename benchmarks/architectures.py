"""The architecture table: each supported attention architecture (tiny random models, tests/architectures.py) and
a hybrid, through extraction and evaluation as a user brings their own model.

Per architecture: saved as a local folder with the default model's tokenizer, loaded (with its probe), 2 LongBench
samples (qasper, trec) extracted at 512 tokens, then knorm at 25% and a keep-all control evaluated in both
settings (transform.evaluate_run.evaluate, the steps the evaluate flow runs). Prints: token_stats rows against
layers x KV heads x positions, the largest |attn_received - eager attention| on those prompts, the keep-all
control's answers and KL against the full cache, the layers a policy evicts, and seconds per step. The hybrid
(LFM2) row shows where and how fast it is refused.

    python benchmarks/architectures.py [--out /tmp/kvw-arch] [--only gemma3,mistral]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from extract import capture  # noqa: E402
from extract import model as models  # noqa: E402
from extract.longbench import open_longbench  # noqa: E402
from extract.run import make_run_id, plan, process_sample, write_run  # noqa: E402
from extract.sample import StatsConfig  # noqa: E402
from tests.architectures import SUPPORTED, save  # noqa: E402
from transform import evaluate_run as er  # noqa: E402
from warehouse import catalog  # noqa: E402
from warehouse.store import Store  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "longbench"
KEEP_ALL = 0.9999


def eager_error(model, ids: torch.Tensor, window: int = 32) -> float:
    """max |captured window attention - eager attention weights| on one prompt."""
    impl = model.config._attn_implementation
    got = capture.prefill(model, ids, window).attn_received
    model.set_attn_implementation("eager")
    with torch.inference_mode():
        out = model(input_ids=ids[None], output_attentions=True)
    model.set_attn_implementation(impl)
    hkv = got.shape[1]
    ref = torch.stack([a[0, :, -window:].mean(1).reshape(hkv, -1, ids.shape[0]).mean(1) for a in out.attentions])
    return float((got - ref.float()).abs().max())


def one(name: str, root: Path, tok, lb) -> dict:
    folder = save(name, root / "models" / name, tok)
    t0 = time.perf_counter()
    try:
        loaded = models.load(folder, "cpu", "float32")
    except models.ArchitectureError as err:
        return {"name": name, "refused": f"{time.perf_counter() - t0:.1f} s after the call: {err}"}
    t1 = time.perf_counter()
    store = Store(root / name / "data")
    cfg, started = StatsConfig(), datetime.now(UTC)
    run_id = make_run_id(loaded, 512, cfg)
    err = 0.0
    for sample in plan(lb, ["qasper", "trec"], 1).samples:
        process_sample(store, loaded, lb, sample, run_id, 512, cfg)
    write_run(store, loaded, run_id, {"model": folder, "max_tokens": 512, "max_tokens_effective": 512},
              started, time.perf_counter() - t1)  # fmt: skip
    t2 = time.perf_counter()
    con = catalog.memory(store)
    for (ids,) in con.execute("SELECT list(token_id ORDER BY position) FROM tokens GROUP BY sample_id").fetchall():
        err = max(err, eager_error(loaded.model, torch.tensor(ids)))
    con.close()
    t3 = time.perf_counter()
    specs = ["knorm", {"name": "knorm", "budget": KEEP_ALL}]
    er.evaluate(store, specs, [0.25], "both", run_id=run_id, limit=1, data_dir=str(FIXTURE), max_new_tokens=16)
    t4 = time.perf_counter()
    con = catalog.memory(store)
    rows, expected = con.execute(
        "SELECT count(*), (SELECT sum(n_tokens) FROM samples) * ? FROM token_stats",
        [len(loaded.layers) * loaded.layers[0].kv_heads],
    ).fetchone()
    control = con.execute(
        "SELECT count(*) FILTER (prediction = prediction_full), count(*), max(kl_continuation), "
        "max(evicted_layers) FROM quality_samples WHERE budget = ?",
        [KEEP_ALL],
    ).fetchone()
    quarter = con.execute("SELECT avg(kl_continuation), avg(memory_saved) FROM quality_samples WHERE budget = 0.25")
    kl25, saved = quarter.fetchone()
    con.close()
    kinds = "".join("S" if x.attention == "sliding" else "F" for x in loaded.layers)
    return {"name": name, "class": type(loaded.model).__name__, "attn": loaded.attn_impl, "layers": kinds,
            "rows": f"{rows} = {expected}" if rows == expected else f"{rows} != {expected}",
            "attn_err": err, "keep_all": f"{control[0]}/{control[1]} same, KL {control[2]:.0f}",
            "evicted": control[3], "kl25": kl25, "saved25": saved,
            "seconds": f"load {t1 - t0:.1f}, extract {t2 - t1:.1f}, eval {t4 - t3:.1f}"}  # fmt: skip


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/kvw-architectures", help="scratch folder (emptied first)")
    ap.add_argument("--only", help="comma-separated architectures (default: every supported one, then lfm2)")
    a = ap.parse_args(argv)
    root = Path(a.out)
    shutil.rmtree(root, ignore_errors=True)
    names = a.only.split(",") if a.only else [*SUPPORTED, "lfm2"]
    tok = models.load_cached(models.DEFAULT_MODEL, "cpu", "float32").tokenizer
    lb = open_longbench(FIXTURE)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; tiny random models (4 layers, hidden 64), "
          "2 samples x 512 tokens, knorm 25% + keep-all, both settings, 16 new tokens")  # fmt: skip
    print(
        "| architecture | class | attention | layers (F full, S sliding) | token_stats rows = L x H x T | "
        "max attn error vs eager | keep-all control | layers evicted | KL at 25% | K/V saved at 25% | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        r = one(name, root, tok, lb)
        if "refused" in r:
            print(f"| {name} | | | | refused at load | | | | | | {r['refused']} |", flush=True)
            continue
        print(f"| {name} | {r['class']} | {r['attn']} | {r['layers']} | {r['rows']} | {r['attn_err']:.1e} | "
              f"{r['keep_all']} | {r['evicted']} | {r['kl25']:.3f} | {r['saved25']:.0%} | {r['seconds']} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
