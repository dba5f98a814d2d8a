"""A warehouse every report can draw: the real 3-sample extraction (small_warehouse), two hostile token
texts, small literal rankings / policies / quality tables (reports 12, 13) and a real demo run (14, 15)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from warehouse import catalog
from warehouse.schemas import TABLES
from warehouse.store import Store

XSS_IMG = "<img src=x onerror=alert(1)>"
XSS_SCRIPT = "</script><script>alert(2)</script>"
NOW = datetime(2026, 1, 1, tzinfo=UTC)

# Literal policies: (policy_id, name, params, budget, unit, per_head)
POLICIES = [
    ("litsr0004064", "sink_recent", {"sink_tokens": 4, "recent_tokens": 64}, 68.0, "tokens", False),
    ("litsr0004128", "sink_recent", {"sink_tokens": 4, "recent_tokens": 128}, 132.0, "tokens", False),
    ("litkn000025", "knorm", {"budget": 0.25}, 0.25, "ratio", True),
    ("litkn000050", "knorm", {"budget": 0.5}, 0.5, "ratio", True),
]
KEEP_POLICIES = ("litsr0004064", "litkn000025")  # the two drawn in report 12


def sink_recent_kept(n: int, sink: int, recent: int, layers: int, heads: int) -> np.ndarray:
    pos = np.arange(n)
    return np.broadcast_to((pos < sink) | (pos >= n - recent), (layers, heads, n))


def per_head_kept(n: int, layers: int, heads: int) -> np.ndarray:
    """A made-up per-head pattern: the first 4 tokens, then every 4th position shifted per layer and head."""
    L, H, P = np.meshgrid(np.arange(layers), np.arange(heads), np.arange(n), indexing="ij")
    return (P < 4) | ((P + L + 2 * H) % 4 == 0)


def ranking_table(ref: dict, ranking_id: str, setting: str, kept: np.ndarray, shared: bool) -> pa.Table:
    """A fixed keep-set as the `rankings` table holds it: kept positions first, then the rest, kept_count."""
    L, H, n = kept.shape
    heads = [(None, None)] if shared else [(layer, head) for layer in range(L) for head in range(H)]
    rows = []
    for layer, head in heads:
        mask = kept[layer or 0, head or 0]
        order = np.concatenate([np.flatnonzero(mask), np.flatnonzero(~mask)]).tolist()
        rows.append({**{k: ref[k] for k in ("run_id", "model", "task", "sample_id")}, "ranking_id": ranking_id,
                     "setting": setting, "layer": layer, "kv_head": head, "n": n, "positions": order,
                     "kept_count": int(mask.sum())})  # fmt: skip
    return pa.Table.from_pylist(rows, schema=TABLES["rankings"].schema)


def quality_rows(ref: dict, i: int) -> list[dict]:
    rows = []
    for j, (pid, _, _, budget, _, _) in enumerate(POLICIES):
        for setting in ("question_aware", "question_agnostic"):
            kept = int(ref["n_tokens"] * (0.25 + 0.25 * (j % 2)))
            rows.append(
                {
                    **{k: ref[k] for k in ("run_id", "model", "task", "sample_id")},
                    "policy_id": pid,
                    "setting": setting,
                    "budget": budget,
                    "metric": "qa_f1",
                    "score": 10.0 * (i + 1) + j,
                    "score_full": 10.0 * (i + 1) + 5,
                    "answer_nll": 2.0 + 0.1 * j,
                    "answer_nll_full": 1.9,
                    "kl": 0.05 * (j + 1),
                    "kept_tokens": kept,
                    "n_tokens": ref["n_tokens"],
                    "kv_bytes_kept": kept * 1000,
                    "kv_bytes_full": ref["n_tokens"] * 1000,
                    "decode_seconds": 1.0,
                    "decode_seconds_full": 1.2,
                    "prefill_seconds": 0.5,
                    "new_tokens": 5,
                    "answer_tokens": 4,
                    "prediction": "an <b>answer</b>",
                    "prediction_full": "the answer",
                    "evaluated_at": NOW,
                }
            )
    return rows


def write_eviction_tables(store: Store, refs: list[dict], layers: int = 30, heads: int = 3) -> None:
    """Literal policies, keep-sets (two policies, both settings) and quality rows for every sample."""
    for pid, name, params, budget, unit, per_head in POLICIES:
        row = dict(policy_id=pid, name=name, params=json.dumps(params), budget=budget, budget_unit=unit,
                   per_head=per_head, created_at=NOW, ranking_id=f"rk-{pid}", threshold="all", forced_first=0,
                   forced_last=0)  # fmt: skip
        store.write("policies", pa.Table.from_pylist([row], schema=TABLES["policies"].schema), pid)
    for i, ref in enumerate(refs):
        n = ref["n_tokens"]
        for setting in ("question_aware", "question_agnostic"):
            for pid, kept, shared in (
                (KEEP_POLICIES[0], sink_recent_kept(n, 4, 64, layers, heads), True),
                (KEEP_POLICIES[1], per_head_kept(n, layers, heads), False),
            ):
                store.write("rankings", ranking_table(ref, f"rk-{pid}", setting, kept, shared),
                            f"rk-{pid}.{setting}.{ref['sample_id']}")  # fmt: skip
        table = pa.Table.from_pylist(quality_rows(ref, i), schema=TABLES["quality"].schema)
        store.write("quality", table, ref["sample_id"])


def plant_hostile_tokens(store: Store, db) -> dict:
    """Give the two lowest-attention tokens of the first sample markup as text: what reports 7 and 8 show."""
    con = duckdb.connect(str(db), read_only=True)
    (run_id, model, task, sample_id), *_ = con.execute(
        "SELECT run_id, model, task, sample_id FROM sample_labels ORDER BY sample LIMIT 1"
    ).fetchall()
    positions = [p for (p,) in con.execute(
        "SELECT position FROM token_summary WHERE task = ? AND sample_id = ? ORDER BY attn_received, position LIMIT 2",
        [task, sample_id],
    ).fetchall()]  # fmt: skip
    con.close()
    parts = dict(model=model, task=task, run_id=run_id)
    tokens = pq.read_table(store.path("tokens", sample_id, **parts))
    texts = tokens.column("token_text").to_pylist()
    texts[positions[0]], texts[positions[1]] = XSS_IMG, XSS_SCRIPT
    store.write("tokens", tokens.set_column(tokens.schema.get_field_index("token_text"), "token_text",
                                            pa.array(texts, pa.string())), sample_id)  # fmt: skip
    return {"task": task, "sample_id": sample_id, "positions": positions}


@pytest.fixture(scope="session")
def report_warehouse(small_warehouse, tmp_path_factory):
    """A private copy of small_warehouse with everything the 15 reports read. Read-only for tests."""
    from extract.demo import DemoConfig, run_demo

    base = tmp_path_factory.mktemp("report-warehouse")
    shutil.copytree(small_warehouse["store"].root, base / "data")
    store = Store(base / "data")
    db = catalog.build(store, base / "kv.duckdb")
    hostile = plant_hostile_tokens(store, db)
    con = duckdb.connect(str(db), read_only=True)
    cols = "run_id, model, task, sample_id, n_tokens"
    refs = [dict(zip(cols.split(", "), r, strict=True)) for r in con.execute(f"SELECT {cols} FROM samples").fetchall()]
    con.close()
    write_eviction_tables(store, refs)
    demo = run_demo(
        store,
        cfg=DemoConfig(new_tokens=6, answer_tokens=3, timing_lengths=(32, 64, 128), timing_repeats=2, head_tokens=256),
    )  # short timing and head texts: tests stay fast
    db = catalog.build(store, base / "kv.duckdb")
    return {"store": store, "db": db, "root": base, "run_id": small_warehouse["run_id"], "hostile": hostile,
            "refs": refs, "demo": demo}  # fmt: skip


@pytest.fixture(scope="session")
def built_reports(report_warehouse, tmp_path_factory):
    """Every report built once from report_warehouse: (out folder, list of Built)."""
    from reports.build import build_all

    out = tmp_path_factory.mktemp("reports-out")
    return out, build_all(report_warehouse["db"], out)


SECOND_RUN_TOKENS = 256  # the second run of two_run_warehouse: the same model at a shorter prompt budget


@pytest.fixture(scope="session")
def two_run_warehouse(report_warehouse, small_warehouse, tmp_path_factory):
    """report_warehouse plus a second real extraction run (2 samples at 256 tokens, no raw K/V) with literal
    quality rows but no keep-sets: pages over samples and quality offer two runs, the rest one."""
    from extract.run import make_run_id, plan, process_sample, write_run
    from extract.sample import StatsConfig

    base = tmp_path_factory.mktemp("two-run-warehouse")
    shutil.copytree(report_warehouse["store"].root, base / "data")
    store = Store(base / "data")
    smol, lb, cfg = small_warehouse["loaded"], small_warehouse["lb"], StatsConfig()
    run_id = make_run_id(smol, SECOND_RUN_TOKENS, cfg)
    started = datetime.now(UTC)
    for sample in plan(lb, ["qasper", "trec"], 1).samples:
        process_sample(store, smol, lb, sample, run_id, SECOND_RUN_TOKENS, cfg)
    write_run(store, smol, run_id, {"max_tokens": SECOND_RUN_TOKENS, "test": True}, started, 0.0)
    db = catalog.build(store, base / "kv.duckdb")
    con = duckdb.connect(str(db), read_only=True)
    cols = "run_id, model, task, sample_id, n_tokens"
    refs = [dict(zip(cols.split(", "), r, strict=True))
            for r in con.execute(f"SELECT {cols} FROM samples WHERE run_id = ?", [run_id]).fetchall()]  # fmt: skip
    con.close()
    for i, ref in enumerate(refs):
        store.write("quality", pa.Table.from_pylist(quality_rows(ref, i), schema=TABLES["quality"].schema),
                    ref["sample_id"])  # fmt: skip
    db = catalog.build(store, base / "kv.duckdb")
    return {**report_warehouse, "store": store, "db": db, "root": base, "second_run": run_id, "second_refs": refs}


@pytest.fixture(scope="session")
def built_two_runs(two_run_warehouse, tmp_path_factory):
    """Every report built from two_run_warehouse: (out folder, list of Built)."""
    from reports.build import build_all

    out = tmp_path_factory.mktemp("reports-two-runs")
    return out, build_all(two_run_warehouse["db"], out)
