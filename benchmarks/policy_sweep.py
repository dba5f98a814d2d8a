"""One prefill serving 8 policies vs one prefill per policy: same answers, side-by-side time.

For one LongBench sample at `--max-tokens` (default 2048): prefill once, evict a copy of the cache per
policy and decode the 8 copies together (caches of equal length as one batch, transform.decode_batch);
against prefilling again for every policy, then evicting and decoding it alone (batch 1), as the issue
defines the baseline. The keep-sets are computed once beforehand from the prompt's own statistics (what
the warehouse holds after extraction), so both paths decode from identical caches. A batched matmul may
round differently from batch 1 in the last bits, so the check is: logits agree within TOLERANCE on every
step both paths fed the same tokens (fails otherwise), and the count of differing tokens is reported (a
flip needs two logits tied that closely). Prints per-policy times, decode ms per token batched vs single,
and the speed ratio (goal >= 4x at 2K tokens on CPU with the default model).

    python benchmarks/policy_sweep.py                                    # hotpotqa sample, 2K tokens
    python benchmarks/policy_sweep.py --task qasper --budget 0.5
    python benchmarks/policy_sweep.py --max-tokens 256 --max-new-tokens 4   # smoke test
    python benchmarks/policy_sweep.py --random-config llama3-8b --tokenizer DIR --max-tokens 4096 --tolerance 1
        # GPU, no download; bf16 batched and batch-1 matmuls round differently, hence the looser tolerance
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from extract import model as models
from extract.capture import prefill as capture_prefill
from extract.longbench import Sample, open_longbench, read_task
from extract.prompts import build_prompt
from transform import decode, decode_batch
from transform.evaluate import stop_ids
from transform.policies import Stats, make

try:  # run as a script (python benchmarks/x.py) or imported as benchmarks.x
    from random_model import SHAPES, random_model, tokenizer
except ImportError:
    from benchmarks.random_model import SHAPES, random_model, tokenizer

TOLERANCE = 1e-3  # logits of batched vs batch-1 decoding may differ in the last float bits, no more

POLICIES = [  # 8 policies; budget = the --budget argument unless a spec sets its own
    {"name": "sink_recent", "sink_tokens": 4},
    {"name": "sink_recent_uniform"},
    {"name": "knorm"},
    {"name": "vnorm"},
    {"name": "h2o"},
    {"name": "snapkv"},
    {"name": "random", "sink_tokens": 4},
    {"name": "knorm", "per_head": False, "sink_tokens": 4},
]


def policies(budget: float, n: int) -> list:
    out = []
    for spec in POLICIES:
        params = {k: v for k, v in spec.items() if k != "name"}
        if spec["name"] == "sink_recent_uniform":  # budget split the brief's way: sink + uniform middle + recent
            k = max(3, int(round(budget * n)) if budget < 1 else int(budget))
            params.update(
                sink_tokens=k // 4, recent_tokens=k // 2, middle_budget_tokens=k - k // 4 - k // 2, block_n=16
            )
        else:
            params["budget"] = budget
        out.append(make(spec["name"], **params))
    return out


def stats_of(model, ids: torch.Tensor) -> Stats:
    """Key/value norms and window attention of the prompt: the warehouse's token_stats, computed here."""
    pf = capture_prefill(model, ids)
    f64 = lambda t: t.double().cpu().numpy()  # noqa: E731
    return Stats(f64(pf.keys.norm(dim=-1)), f64(pf.values.norm(dim=-1)), f64(pf.attn_received))


def sample_of(lb, task: str) -> Sample:
    for item in read_task(lb, task, 1):
        if isinstance(item, Sample):
            return item
    raise SystemExit(f"no readable sample in {task}")


def compare(tok1: list[int], sc1: torch.Tensor, tok2: list[int], sc2: torch.Tensor) -> tuple[int, float]:
    """Tokens that differ, and the largest logit difference over the steps both paths fed the same tokens."""
    common = min(len(tok1), len(tok2))
    flips = [i for i in range(common) if tok1[i] != tok2[i]]
    upto = flips[0] + 1 if flips else common
    return len(flips) + abs(len(tok1) - len(tok2)), float((sc1[:upto] - sc2[:upto]).abs().max())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="hotpotqa")
    ap.add_argument("--data-dir", help="LongBench folder (default: $KVW_LONGBENCH or the shared sample)")
    ap.add_argument("--model", default=models.DEFAULT_MODEL)
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--max-new-tokens", type=int, help="default: LongBench's dataset2maxlen for the task")
    ap.add_argument("--budget", type=float, default=0.25, help="tokens (>= 1) or share (< 1) kept per policy")
    ap.add_argument("--random-config", choices=sorted(SHAPES), help="random weights of this shape instead")
    ap.add_argument("--tokenizer", help="with --random-config: a local tokenizer folder (default: the default model's)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest |logit difference| accepted")
    a = ap.parse_args(argv)

    if a.random_config:
        loaded = random_model(a.random_config, a.device, a.dtype, tokenizer(a.tokenizer))
    else:
        loaded = models.load_cached(a.model, a.device, a.dtype)
    lb = open_longbench(a.data_dir)
    prompt = build_prompt(loaded.tokenizer, lb.prompts[a.task], sample_of(lb, a.task), a.max_tokens)
    ids = torch.from_numpy(prompt.input_ids)
    n = len(ids)
    max_new = a.max_new_tokens or lb.maxlens.get(a.task, 32)
    stops = stop_ids(loaded.tokenizer, loaded.model, a.task)
    pols = policies(a.budget, n)
    stats = stats_of(loaded.model, ids)
    keeps = [p.keep_token_idx(stats) for p in pols]  # outside both timings: the warehouse has them
    model = loaded.model
    print(f"{loaded.name} on {loaded.device} ({loaded.dtype}, {loaded.attn_impl})")
    print(f"{a.task}: {n} prompt tokens, {len(pols)} policies, "
          f"budget {a.budget:g}, up to {max_new} new tokens")  # fmt: skip

    def run(prefix, keep) -> tuple[list[int], torch.Tensor, float]:
        """One policy at batch 1 (the reference): tokens, their logits, seconds."""
        t0 = time.perf_counter()
        scores: list = []
        tokens = decode.greedy(model, decode.resume(model, prefix, keep), max_new, stops, scores=scores)
        return tokens, torch.stack(scores), time.perf_counter() - t0

    def run_batched(prefix) -> tuple[list, list[tuple[int, int, float]]]:
        """Every policy, caches of equal length decoded as one batch: per policy (tokens, logits); per batch
        (rows, steps, seconds)."""
        out: list = [None] * len(keeps)
        batches = []
        for rows in decode_batch.groups(prefix, keeps):
            t0 = time.perf_counter()
            batch = decode_batch.resume_batch(model, prefix, [keeps[i] for i in rows], rows)
            scores: list = []
            tokens = decode_batch.greedy_batch(model, batch, max_new, stops, scores=scores)
            batches.append((len(rows), max(map(len, tokens)), time.perf_counter() - t0))
            for row, tok, sc in zip(rows, tokens, scores, strict=True):
                out[row] = (tok, sc)
        return out, batches

    warm = decode.prefill(model, ids, "question_aware", n)  # warm-up: first-call costs hit neither path
    run(warm, keeps[0])
    run_batched(warm)

    t0 = time.perf_counter()
    shared = decode.prefill(model, ids, "question_aware", n)
    one, batches = run_batched(shared)
    one_total = time.perf_counter() - t0

    t0 = time.perf_counter()
    again, prefill_s = [], []
    for k in keeps:
        prefix = decode.prefill(model, ids, "question_aware", n)
        prefill_s.append(prefix.seconds)
        again.append(run(prefix, k))
    again_total = time.perf_counter() - t0

    print(f"\n{'policy':<58} {'kept':>6} {'new':>4} {'single s':>9} {'differ':>6} {'max |dlogit|':>12}")
    differ, worst = 0, 0.0
    for p, k, (tok1, sc1), (tok2, sc2, s2) in zip(pols, keeps, one, again, strict=True):
        d, gap = compare(tok1, sc1, tok2, sc2)
        differ, worst = differ + d, max(worst, gap)
        print(f"{p.label()[:58]:<58} {k.shape[2]:>6} {len(tok2):>4} {s2:>9.2f} {d:>6} {gap:>12.2e}")
    single_ms = 1000 * sum(x[2] for x in again) / sum(len(x[0]) for x in again)
    print(f"\none prefill + {len(pols)} decodes : {one_total:8.2f} s  (prefill {shared.seconds:.2f} s; batched)")
    print(f"{len(pols)} x (prefill + decode)   : {again_total:8.2f} s  (prefill mean {np.mean(prefill_s):.2f} s)")
    print(f"speed ratio                : {again_total / one_total:8.2f} x  (goal >= 4x at 2K tokens on CPU)")
    print(f"decode, single             : {single_ms:8.1f} ms per token (batch 1)")
    for rows, steps, seconds in batches:
        print(f"decode, batch of {rows:<2}        : {1000 * seconds / steps:8.1f} ms per step, "
              f"{1000 * seconds / steps / rows:.1f} ms per token per row ({steps} steps, {seconds:.2f} s)")  # fmt: skip
    print(f"differing tokens           : {differ} (batched vs single; a flip needs a near-tie of two logits)")
    print(f"max |logit difference|     : {worst:8.2e} (steps whose inputs agree; tolerance {a.tolerance:g})")
    if torch.cuda.is_available() and loaded.device.startswith("cuda"):
        print(f"peak GPU memory            : {torch.cuda.max_memory_allocated() / 2**30:8.1f} GiB")
    if worst > a.tolerance:
        print("FAILED: batched and single decoding disagree beyond the tolerance", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
