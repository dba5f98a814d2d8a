"""Report 12 on literal keep-sets: the sizes its panels state are the keep-sets' own (numpy), the token zoom
is each position's kept share, and a sweep of 8 variants x 5 budgets still makes a page under 3 MB."""

import json
import shutil

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from reports.base import fetch
from reports.eviction_patterns import REPORT
from tests.reports.conftest import KEEP_POLICIES, NOW, XSS_SCRIPT, per_head_kept, ranking_table
from warehouse import catalog
from warehouse.schemas import TABLES
from warehouse.store import Store

pytestmark = pytest.mark.model  # report_warehouse: the default model's real extraction

MAX_BYTES = 3_000_000


def code(share: float) -> str:
    """The page's character for a kept share: '0' none, '9' all, '1'..'8' some."""
    return "0" if share == 0 else "9" if share == 1 else str(min(8, max(1, int(np.floor(9 * share + 0.5)))))


def runs(kept: np.ndarray) -> tuple[float, float, float]:
    """Mean sink, recent and middle sizes over the (layer, head) keep-sets of a [L, H, n] mask."""
    sinks, recents, middles = [], [], []
    for mask in kept.reshape(-1, kept.shape[-1]):
        sink = int(np.argmin(mask)) if not mask.all() else len(mask)
        recent = int(np.argmin(mask[::-1])) if not mask.all() else 0
        sinks.append(sink), recents.append(recent), middles.append(int(mask.sum()) - sink - recent)
    return float(np.mean(sinks)), float(np.mean(recents)), float(np.mean(middles))


@pytest.fixture(scope="module")
def con(report_warehouse):
    c = duckdb.connect(str(report_warehouse["db"]), read_only=True)
    yield c
    c.close()


def params(report_warehouse, **extra) -> dict:
    return {**REPORT.params, "run_id": report_warehouse["run_id"], **extra}


def test_panel_sizes_are_measured_on_the_keep_sets(report_warehouse, con):
    bounds = fetch(con, "eviction_boundaries", params(report_warehouse)).to_pylist()
    refs = {r["sample_id"]: r for r in report_warehouse["refs"]}
    labels = dict(con.execute("SELECT s.sample, s.sample_id FROM sample_labels AS s").fetchall())
    assert len(bounds) == 3 * 2 * 2  # samples x the two policies with keep-sets x settings
    for b in bounds:
        n = refs[labels[b["sample"]]]["n_tokens"]
        if b["policy_id"] == KEEP_POLICIES[0]:  # sink 4 + recent 64, shared by every layer and head
            assert (b["sink_tokens"], b["recent_tokens"], b["middle_tokens"], b["kept_tokens"]) == (4, 64, 0, 68)
            assert b["variant"] == "sink_recent recent_tokens=64 sink_tokens=4" and b["budget_label"] == "68 tokens"
            assert not b["per_head"] and (b["sink_end"], b["recent_start"]) == (4, n - 64)
        else:
            kept = per_head_kept(n, 30, 3)
            sink, recent, middle = runs(kept)
            assert b["sink_tokens"] == pytest.approx(sink, rel=1e-3)
            assert b["recent_tokens"] == pytest.approx(recent, rel=1e-3)
            assert b["middle_tokens"] == pytest.approx(middle, rel=1e-3) and b["per_head"]
            assert b["kept_tokens"] == pytest.approx(kept.sum() / 90, rel=1e-3) and b["budget_label"] == "25.0%"
            assert b["sink_end"] == int(kept.reshape(90, n).argmin(axis=1).min())  # 4: kept by every head before it
        assert b["cache_tokens"] == n and b["kept_share"] == pytest.approx(b["kept_tokens"] / n, rel=1e-3)


def test_token_zoom_is_each_positions_kept_share(report_warehouse, con):
    rows = fetch(con, "eviction_tokens", params(report_warehouse)).to_pylist()
    text = {t["sample"]: t["tokens"] for t in fetch(con, "eviction_token_text", params(report_warehouse)).to_pylist()}
    labels = dict(con.execute("SELECT s.sample, s.sample_id FROM sample_labels AS s").fetchall())
    refs = {r["sample_id"]: r for r in report_warehouse["refs"]}
    covered = {r["sample"] for r in rows}
    assert covered == set(text) and len(covered) == 3  # 3 x 512 tokens x 2 policies x 2 settings, under the cap
    for r in rows:
        n = refs[labels[r["sample"]]]["n_tokens"]
        kept = per_head_kept(n, 30, 3).mean(axis=(0, 1)) if r["policy_id"] == KEEP_POLICIES[1] else (
            (np.arange(n) < 4) | (np.arange(n) >= n - 64)).astype(float)  # fmt: skip
        assert r["kept"] == "".join(code(s) for s in kept) and len(text[r["sample"]]) == n
    hostile = report_warehouse["hostile"]  # the first sample's planted markup is there, as text
    first = sorted(covered)[0]
    assert {text[first][p] for p in hostile["positions"]} >= {XSS_SCRIPT}
    # a cap below the first sample still zooms into that one, and no other
    one = fetch(con, "eviction_token_text", params(report_warehouse, max_zoom_cells=10)).to_pylist()
    assert [t["sample"] for t in one] == [first]
    a, b = sorted(covered)[:2]
    cap = 4 * (refs[labels[a]]["n_tokens"] + refs[labels[b]]["n_tokens"])  # 2 policies x 2 settings per sample
    two = fetch(con, "eviction_tokens", params(report_warehouse, max_zoom_cells=cap)).to_pylist()
    assert sorted({r["sample"] for r in two}) == [a, b]  # two samples' characters fit, not three


def sweep_policies() -> list[tuple]:
    """8 variants x 5 budgets: 4 shared sink + recent variants, 4 per-head random ones."""
    out = []
    for v in range(8):
        for b, share in enumerate((0.1, 0.2, 0.3, 0.4, 0.5)):
            out.append((f"sw{v}b{b}", "sink_recent" if v < 4 else "knorm", {"sink_tokens": 2 ** v, "budget": share},
                        share, v >= 4))  # fmt: skip
    return out


def test_a_sweep_of_40_policy_instances_stays_under_3_mb(report_warehouse, tmp_path):
    from reports.build import build_all

    shutil.copytree(report_warehouse["store"].root, tmp_path / "data")
    store = Store(tmp_path / "data")
    rng = np.random.default_rng(0)
    for pid, name, prm, share, per_head in sweep_policies():
        row = dict(policy_id=pid, name=name, params=json.dumps(prm), budget=share, budget_unit="ratio",
                   per_head=per_head, created_at=NOW, ranking_id=f"rk-{pid}", threshold="all", forced_first=0,
                   forced_last=0)  # fmt: skip
        store.write("policies", pa.Table.from_pylist([row], schema=TABLES["policies"].schema), pid)
        for ref in report_warehouse["refs"]:
            n = ref["n_tokens"]
            kept = rng.random((30, 3, n)) < share if per_head else np.broadcast_to(
                (np.arange(n) < prm["sink_tokens"]) | (np.arange(n) >= n - int(share * n)), (30, 3, n))  # fmt: skip
            for setting in ("question_aware", "question_agnostic"):
                store.write("rankings", ranking_table(ref, f"rk-{pid}", setting, kept, not per_head),
                            f"rk-{pid}.{setting}.{ref['sample_id']}")  # fmt: skip
    db = catalog.build(store, tmp_path / "kv.duckdb")
    con = duckdb.connect(str(db), read_only=True)
    pattern = fetch(con, "eviction_pattern", params(report_warehouse)).to_pylist()
    con.close()
    cells = sum(len(r["kept"]) for r in pattern)
    assert len(pattern) == 3 * 42 * 2 and cells <= REPORT.params["max_cells"]  # 40 + the 2 fixture policies
    buckets = REPORT.params["max_cells"] // (3 * 42 * 2 * 30)  # coarser than the 128 of a small page
    assert {r["buckets"] for r in pattern} == {buckets} and all(len(r["kept"]) == 30 * buckets for r in pattern)
    (built,) = build_all(db, tmp_path / "out", only=["eviction_patterns"])
    assert built.status == "ok" and built.size_bytes < MAX_BYTES
    page = built.path.read_text()
    assert "budget=" not in page  # variant labels leave the budget out: it has its own selector
    assert all(f"sink_recent sink_tokens={2**v}" in page for v in range(4))
