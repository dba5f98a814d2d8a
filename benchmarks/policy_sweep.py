"""One prefill serving 8 policies vs one prefill per policy: same answers, side-by-side time.

For one LongBench sample at `--max-tokens` (default 2048): prefill once, then for each of 8 policies
evict a copy of the cache and decode greedily; against prefilling again for every policy before evicting
and decoding. The keep-sets are computed once beforehand from the prompt's own statistics (what the
warehouse holds after extraction), so both paths decode from identical caches and must produce identical
tokens (asserted). Prints per-policy times and the speed ratio (goal >= 4x at 2K tokens on CPU with the
default model; the ratio falls as answers get longer, since decoding is the same in both paths).

    python benchmarks/policy_sweep.py                                    # hotpotqa sample, 2K tokens
    python benchmarks/policy_sweep.py --task qasper --budget 0.5
    python benchmarks/policy_sweep.py --max-tokens 256 --max-new-tokens 4   # smoke test
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
from transform import decode
from transform.evaluate import stop_ids
from transform.policies import Stats, make

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="hotpotqa")
    ap.add_argument("--data-dir", help="LongBench folder (default: $KVW_LONGBENCH or the shared sample)")
    ap.add_argument("--model", default=models.DEFAULT_MODEL)
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--max-new-tokens", type=int, help="default: LongBench's dataset2maxlen for the task")
    ap.add_argument("--budget", type=float, default=0.25, help="tokens (>= 1) or share (< 1) kept per policy")
    a = ap.parse_args(argv)

    loaded = models.load_cached(a.model)
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
    print(f"{loaded.name} on {loaded.device}, {a.task}: {n} prompt tokens, {len(pols)} policies, "
          f"budget {a.budget:g}, up to {max_new} new tokens")  # fmt: skip

    def run(prefix, keep) -> tuple[list[int], float]:
        t0 = time.perf_counter()
        tokens = decode.greedy(model, decode.resume(model, prefix, keep), max_new, stops)
        return tokens, time.perf_counter() - t0

    run(decode.prefill(model, ids, "question_aware", n), keeps[0])  # warm-up: first-call costs hit neither path

    t0 = time.perf_counter()
    shared = decode.prefill(model, ids, "question_aware", n)
    one = [run(shared, k) for k in keeps]
    one_total = time.perf_counter() - t0

    t0 = time.perf_counter()
    again, prefill_s = [], []
    for k in keeps:
        prefix = decode.prefill(model, ids, "question_aware", n)
        prefill_s.append(prefix.seconds)
        again.append(run(prefix, k))
    again_total = time.perf_counter() - t0

    print(f"\n{'policy':<58} {'kept':>6} {'new':>4} {'decode s':>9} {'same':>5}")
    for p, k, (tok1, s1), (tok2, _) in zip(pols, keeps, one, again, strict=True):
        print(f"{p.label()[:58]:<58} {k.shape[2]:>6} {len(tok1):>4} {s1:>9.2f} {str(tok1 == tok2):>5}")
    same = all(x[0] == y[0] for x, y in zip(one, again, strict=True))
    print(f"\none prefill + {len(pols)} decodes : {one_total:8.2f} s  (prefill {shared.seconds:.2f} s)")
    print(f"{len(pols)} x (prefill + decode)   : {again_total:8.2f} s  (prefill mean {np.mean(prefill_s):.2f} s)")
    print(f"speed ratio                : {again_total / one_total:8.2f} x  (goal >= 4x at 2K tokens on CPU)")
    print(f"same outputs               : {same}")
    if not same:
        print("FAILED: the two paths decoded different tokens", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
