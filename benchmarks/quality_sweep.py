"""The default evaluation sweep on the shared LongBench sample: KL per policy and budget with bootstrap intervals.

Extracts `--limit` samples of each task (default model, `--max-tokens`), evaluates every registered policy at
the default sweep's budgets in both settings (transform.evaluate_run.evaluate, as `evaluate/longbench` does),
then prints, per setting, policy and budget: n, mean and seeded bootstrap 95% interval of the continuation KL
and of the answer KL (warehouse.quality_stats over the `quality_samples` view, what `kvw compare` prints).

    python benchmarks/quality_sweep.py --out /tmp/kvw-sweep --tasks qasper,hotpotqa,trec --limit 2
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path

from extract import model as models
from extract.longbench import open_longbench
from extract.run import is_done, make_run_id, plan, process_sample, write_run
from extract.sample import StatsConfig
from transform import evaluate_run as er
from warehouse import catalog
from warehouse.store import Store


def extract(store: Store, data_dir: str, tasks: list[str], limit: int, max_tokens: int) -> str:
    loaded = models.load_cached(models.DEFAULT_MODEL, "cpu", "float32", "sdpa")
    lb, cfg = open_longbench(data_dir), StatsConfig()
    run_id, started, t0 = make_run_id(loaded, max_tokens, cfg, "quality-sweep"), datetime.now(UTC), time.perf_counter()
    for sample in plan(lb, tasks, limit).samples:
        if not is_done(store, loaded.name, run_id, sample):  # a rerun keeps what was extracted
            process_sample(store, loaded, lb, sample, run_id, max_tokens, cfg)
    params = {"model": models.DEFAULT_MODEL, "max_tokens": max_tokens, "data_dir": data_dir, "tasks": tasks}
    write_run(store, loaded, run_id, params, started, time.perf_counter() - t0)
    return run_id


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="a folder for data/ and kv.duckdb")
    ap.add_argument("--data-dir", default="/work/shared/longbench")
    ap.add_argument("--tasks", default="qasper,hotpotqa,gov_report,trec,passage_retrieval_en,lcc")
    ap.add_argument("--limit", type=int, default=2, help="samples per task")
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--max-new-tokens", type=int, default=32, help="cap on LongBench's per-task answer length")
    ap.add_argument("--budgets", default=",".join(map(str, er.DEFAULT_BUDGETS)))
    ap.add_argument("--summary-only", action="store_true", help="print the table of an earlier run")
    a = ap.parse_args()
    store, db = Store(Path(a.out) / "data"), Path(a.out) / "kv.duckdb"
    t0 = time.perf_counter()
    if not a.summary_only:
        tasks = a.tasks.split(",")
        run_id = extract(store, a.data_dir, tasks, a.limit, a.max_tokens)
        t1 = time.perf_counter()
        print(f"extracted run {run_id}: {t1 - t0:.0f} s", flush=True)
        budgets = [float(b) for b in a.budgets.split(",")]
        p, outcomes = er.evaluate(store, list(er.DEFAULT_POLICIES), budgets, "both", run_id=run_id, tasks=tasks,
                                  limit=a.limit, data_dir=a.data_dir, max_new_tokens=a.max_new_tokens)  # fmt: skip
        print(f"evaluated {sum(o.evaluated for o in outcomes)} rows ({len(p.samples)} samples x {len(p.policies)} "
              f"policies x {len(p.settings)} settings): {time.perf_counter() - t1:.0f} s", flush=True)  # fmt: skip
    from warehouse import quality_stats

    catalog.build(store, db)
    con = catalog.connect(db)
    try:
        rows = quality_stats.summarize(quality_stats.load(con), by=("setting", "label", "budget"))
    finally:
        con.close()
    for measure in ("kl_continuation", "kl"):
        print(f"\n{quality_stats.markdown(rows, measure)}")


if __name__ == "__main__":
    main()
