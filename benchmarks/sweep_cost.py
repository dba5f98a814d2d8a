"""What one sample's whole evaluation sweep costs, against one full-cache answer of the same sample.

The sweep is the evaluate flow's default: every built-in policy x 5 budgets x both settings, each instance
decoded greedily to LongBench's max_new_tokens and teacher-forced along the reference answer and the full
cache's continuation (both KLs), plus the full cache's own run per setting; it runs through
transform.evaluate.evaluate_sample, the function the flow calls. Three ways, side by side, interleaved:

- masked: one prefill per setting, every instance one row of a batch over the shared cache (transform.masked);
- compacted: one prefill per setting, a compacted copy per instance, copies of equal length batched
  (transform.decode_batch, the path before masking);
- re-prefill: a prefill per instance then its own decode at batch 1 (what a tool without a shared prefill does);
  measured on `--reprefill` instances and scaled to the sweep's count (printed as such), since a full re-prefill
  sweep takes minutes per repeat.

One answer = a question_aware prefill plus greedy decoding to max_new_tokens (the full cache alone). Keep-sets
come from the prompt's own statistics, computed once outside every timing (the warehouse holds them). Peak
memory: the most the process's resident set (CPU) or allocated memory (CUDA) grew during a run, sampled every
2 ms; on the CPU the script runs with MALLOC_MMAP_THRESHOLD_=131072, so every tensor over 128 KB is its own
mapping and freeing it shrinks the resident set (glibc would otherwise reuse freed heap and hide the peak), and
each way runs once on one policy first (metrics, tokenizer and allocator warm-ups are not the sweep's).
Prints min/median/max seconds per way and the ratios to one answer (goal: masked <= 5x on the CPU).

    python benchmarks/sweep_cost.py                                   # 2K and 4K tokens, 3 repeats
    python benchmarks/sweep_cost.py --lengths 1024 --repeats 1 --reprefill 0     # a quick look
    python benchmarks/sweep_cost.py --random-config llama3.1-8b --lengths 4096 16384   # a GPU shape
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

import torch

from extract import model as models
from extract.capture import prefill as capture_prefill
from extract.longbench import open_longbench
from extract.prompts import build_prompt
from transform import decode, settings
from transform.evaluate import evaluate_sample, stop_ids
from transform.evaluate_run import DEFAULT_BUDGETS, DEFAULT_POLICIES, parse_policies, policy_ref
from transform.policies import PolicyError, Stats
from transform.samples import Sample
from transform.settings import SETTINGS, cache_len

try:  # run as a script (python benchmarks/x.py) or imported as benchmarks.x
    from policy_sweep import sample_of
    from random_model import SHAPES, random_model, tokenizer
except ImportError:
    from benchmarks.policy_sweep import sample_of
    from benchmarks.random_model import SHAPES, random_model, tokenizer


class Peak:
    """The most resident memory (CPU) or allocated memory (CUDA) grew above its level at the start, sampled."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def _now(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.base = self.peak = self._now()
        self.done = threading.Event()

        def poll():
            while not self.done.wait(0.002):
                self.peak = max(self.peak, self._now())

        self.thread = threading.Thread(target=poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.grew = torch.cuda.max_memory_allocated() - self.base
        else:
            self.done.set()
            self.thread.join()
            self.grew = max(self.peak, self._now()) - self.base


def measure(a, loaded, lb, record, max_new: int, length: int) -> None:
    """One prompt length: every way, repeated and interleaved; prints the table."""
    model, tok = loaded.model, loaded.tokenizer
    prompt = build_prompt(tok, lb.prompts[a.task], record, length)
    ids, context_end = prompt.input_ids, prompt.ranges()["context_end"]
    sample = Sample(
        "bench", loaded.name, a.task, record.sample_id, record.source, len(ids), context_end, max_new,
        tuple(record.answers), tuple(record.all_classes) if record.all_classes else None, ids,
    )  # fmt: skip
    pf = capture_prefill(model, torch.from_numpy(ids), context_end=context_end)
    f64 = lambda t: t.double().cpu().numpy()  # noqa: E731
    norms = f64(pf.keys.norm(dim=-1)), f64(pf.values.norm(dim=-1))
    attn = {s: f64(getattr(pf, settings.get(s).attn_column)) for s in SETTINGS}  # what each setting observes
    del pf
    policies, keeps = [], {}
    for policy in parse_policies(list(DEFAULT_POLICIES), list(DEFAULT_BUDGETS)):
        try:
            for setting in SETTINGS:
                n = cache_len(sample, setting)
                policy.check(n)
                cut = Stats(norms[0][..., :n], norms[1][..., :n], attn[setting][..., :n])
                keeps[policy.policy_id, setting] = policy.keep_token_idx(cut)
            policies.append(policy)
        except PolicyError as e:  # an infeasible cell (issue 17): left out of every way alike
            print(f"  left out: {e}")
    refs = [policy_ref(p) for p in policies]
    by_id = {p.policy_id: p for p in policies}
    keep_for = lambda s, ref, setting: keeps[by_id[ref.policy_id].policy_id, setting]  # noqa: E731
    instances = len(refs) * len(SETTINGS)
    print(f"\n{len(ids)} prompt tokens: {len(refs)} policy instances x {len(SETTINGS)} settings = {instances}")
    stops = stop_ids(tok, model, a.task)

    def answer():
        prefix = decode.prefill(model, ids, "question_aware", sample.context_end)
        decode.greedy(model, decode.resume(model, prefix, None), max_new, stops)

    def sweep(way):
        return lambda: evaluate_sample(loaded, sample, refs, SETTINGS, keep_for, decoding=way)

    def reprefill():
        for ref in refs[: a.reprefill]:
            prefix = decode.prefill(model, ids, "question_aware", sample.context_end)
            decode.greedy(model, decode.resume(model, prefix, keep_for(sample, ref, "question_aware")), max_new,
                          stops)  # fmt: skip

    runs = {"answer": answer, **{w: sweep(w) for w in a.ways}}
    if a.reprefill:
        runs["re-prefill"] = reprefill
    times: dict[str, list[float]] = {k: [] for k in runs}
    peaks: dict[str, list[int]] = {k: [] for k in runs}
    answer()  # warm-ups
    for way in a.ways:
        evaluate_sample(loaded, sample, refs[:1], SETTINGS[:1], keep_for, decoding=way)
    for r in range(a.repeats):
        order = list(runs) if r % 2 == 0 else list(runs)[::-1]  # interleaved, both orders
        for name in order:
            with Peak(str(loaded.device)) as peak:
                t0 = time.perf_counter()
                runs[name]()
                if str(loaded.device).startswith("cuda"):
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t0)
            peaks[name].append(peak.grew)
    if a.reprefill:
        scale = instances / min(a.reprefill, len(refs))
        times["re-prefill"] = [t * scale for t in times["re-prefill"]]
    one = statistics.median(times["answer"])
    print(f"{'way':<12} {'min s':>8} {'median s':>9} {'max s':>8} {'x answer':>9} {'peak MiB':>9} {'x answer':>9}")
    peak_one = max(peaks["answer"])
    for name, ts in times.items():
        note = f"   (timed on {min(a.reprefill, len(refs))} instances, scaled)" if name == "re-prefill" else ""
        # a peak below 1 MiB is in the allocator's noise: no ratio to it
        ratio = f"{max(peaks[name]) / peak_one:9.2f}" if peak_one >= 2**20 else f"{'-':>9}"
        print(f"{name:<12} {min(ts):8.2f} {statistics.median(ts):9.2f} {max(ts):8.2f} "
              f"{statistics.median(ts) / one:9.1f} {max(peaks[name]) / 2**20:9.0f} {ratio}{note}")  # fmt: skip
    if a.breakdown and "masked" in a.ways:
        breakdown(lambda: sweep("masked")(), answer, one)


def breakdown(sweep, answer, one: float) -> None:
    """Where a masked sweep's time goes: its forwards by kind, counted and timed (one more run of each), against
    the answer's prefill rate: the sweep's token rows at that rate is the floor batching alone cannot beat."""
    from transform import decode_batch, masked

    seen: dict[str, list[float]] = {}
    real = decode.forward_batch

    def counted(model, ids, cache, start, logits_to_keep=1):
        t0 = time.perf_counter()
        out = real(model, ids, cache, start, logits_to_keep)
        if out.is_cuda:
            torch.cuda.synchronize()
        kind = ("prefill" if start == 0 else "greedy step" if ids.shape[1] == 1
                else "teacher forcing" if logits_to_keep == 0 else "rest of prompt")  # fmt: skip
        row = seen.setdefault(kind, [0, 0, 0.0])
        row[0], row[1], row[2] = row[0] + 1, row[1] + ids.numel(), row[2] + time.perf_counter() - t0
        return out

    modules = (decode, decode_batch, masked)
    for m in modules:
        m.forward_batch = counted
    try:
        answer()
        rate = seen["prefill"][2] / seen["prefill"][1]  # seconds per prompt token in the answer's prefill
        seen.clear()
        t0 = time.perf_counter()
        sweep()
        total = time.perf_counter() - t0
    finally:
        for m in modules:
            m.forward_batch = real
    print(f"masked sweep, where the time goes (one more run, {total:.1f} s; the answer's prefill: "
          f"{rate * 1e3:.2f} ms per token):")  # fmt: skip
    print(f"  {'forwards':<16} {'calls':>6} {'token rows':>11} {'s':>8} {'ms/row':>7}")
    rows = 0
    for kind, (calls, n, sec) in seen.items():
        rows += n
        print(f"  {kind:<16} {calls:6d} {n:11d} {sec:8.2f} {sec / n * 1e3:7.2f}")
    floor = rows * rate
    print(f"  floor: {rows} token rows at the prefill's rate = {floor:.1f} s = {floor / one:.1f}x one answer")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="hotpotqa")
    ap.add_argument("--data-dir", help="LongBench folder (default: $KVW_LONGBENCH or the shared sample)")
    ap.add_argument("--model", default=models.DEFAULT_MODEL)
    ap.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096], help="prompt tokens (max_tokens)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reprefill", type=int, default=2, help="instances timed for re-prefill (0: skip it)")
    ap.add_argument(
        "--ways",
        nargs="+",
        default=["masked", "compacted"],
        choices=["masked", "compacted"],
        help="the sweep's decoding paths to time (both by default)",
    )
    ap.add_argument(
        "--no-breakdown",
        dest="breakdown",
        action="store_false",
        help="leave out the masked sweep's time by kind of forward (one more run)",
    )
    ap.add_argument("--random-config", choices=sorted(SHAPES), help="random weights of this shape instead")
    ap.add_argument("--tokenizer", help="with --random-config: a local tokenizer folder (default: the default model's)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:  # see the docstring: resident memory that follows tensors
        os.environ["MALLOC_MMAP_THRESHOLD_"] = "131072"
        os.execv(sys.executable, [sys.executable, *sys.argv])

    if a.random_config:
        loaded = random_model(a.random_config, a.device, a.dtype, tokenizer(a.tokenizer))
    else:
        loaded = models.load_cached(a.model, a.device, a.dtype)
    lb = open_longbench(a.data_dir)
    record = sample_of(lb, a.task)
    max_new = lb.maxlens.get(a.task, 32)
    print(f"{loaded.name} on {loaded.device} ({loaded.dtype}, {loaded.attn_impl}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {a.task}, {max_new} new tokens at most")  # fmt: skip

    for length in a.lengths:
        measure(a, loaded, lb, record, max_new, length)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
