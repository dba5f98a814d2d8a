"""extract/demo.py on the real default model: what reports 14 and 15 draw is true of the model."""

import duckdb
import numpy as np
import pytest
import torch

from extract import demo
from warehouse.store import Store

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def con(report_warehouse):
    c = duckdb.connect(str(report_warehouse["db"]), read_only=True)
    yield c
    c.close()


def test_tables_have_the_expected_shapes(report_warehouse, con):
    rows, run_id = report_warehouse["demo"].rows, report_warehouse["demo"].run_id
    T = len(demo._ids(demo.models.load_cached(demo.models.DEFAULT_MODEL, "cpu", "float32", "eager").tokenizer,
                      demo.ATTENTION_PROMPT)[0])  # fmt: skip
    assert rows["demo_attention"] == 30 * 9 * T * (T + 1) // 2  # every layer, query head, causal pair
    assert rows["demo_projections"] == (9 + 3 + 3 + 9) * T  # one layer: q, k, v, o heads x tokens
    assert rows["demo_decode"] == 6 and rows["demo_prefix"] == len(demo.QUESTIONS)
    # every query's weights sum to 1 (softmax), and nothing is stored above the diagonal
    assert con.execute(
        "SELECT count(*) FROM demo_attention WHERE run_id = ? AND key_pos > query_pos", [run_id]
    ).fetchall() == [(0,)]
    lo, hi = con.execute(
        "SELECT min(s), max(s) FROM (SELECT sum(weight) s FROM demo_attention GROUP BY layer, q_head, query_pos)"
    ).fetchall()[0]
    assert lo == pytest.approx(1, abs=1e-4) and hi == pytest.approx(1, abs=1e-4)


def test_kv_head_mapping_reproduces_eager_attention(report_warehouse, con):
    """Weights recomputed from the stored q and k projections (RoPE applied) match eager attention only when
    query head h reads KV head h // 3: the grouping report 14 draws is the one the model uses."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    loaded = demo.models.load_cached(demo.models.DEFAULT_MODEL, "cpu", "float32", "eager")
    (layer,) = con.execute("SELECT DISTINCT layer FROM demo_projections").fetchall()[0]

    def vectors(kind):
        rows = con.execute(
            "SELECT head, position, vector FROM demo_projections WHERE kind = ? ORDER BY head, position", [kind]
        ).fetchall()
        heads, T = max(r[0] for r in rows) + 1, max(r[1] for r in rows) + 1
        return torch.tensor(np.array([r[2] for r in rows], np.float32).reshape(heads, T, -1))

    q, k = vectors("q"), vectors("k")
    T = q.shape[1]
    cos, sin = loaded.model.model.rotary_emb(q[None], torch.arange(T)[None])
    q_rot, k_rot = apply_rotary_pos_emb(q[None], k[None], cos, sin)
    eager = np.zeros((9, T, T), np.float32)
    for h, qp, kp, w in con.execute(
        "SELECT q_head, query_pos, key_pos, weight FROM demo_attention WHERE layer = ?", [layer]
    ).fetchall():
        eager[h, qp, kp] = w

    def recomputed(kv_of):
        scores = torch.stack([q_rot[0, h] @ k_rot[0, kv_of(h)].T for h in range(9)]) / 8.0
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
        return scores.masked_fill(mask, float("-inf")).softmax(-1).numpy()

    assert np.abs(recomputed(lambda h: h // 3) - eager).max() < 0.02  # float16 storage of q and k
    assert np.abs(recomputed(lambda h: (h // 3 + 1) % 3) - eager).max() > 0.1  # the wrong grouping does not fit


def test_decoding_with_and_without_cache_agrees(con):
    rows = con.execute("SELECT step, length, token_id, token_id_no_cache, max_abs_diff, seconds_cache, "
                       "seconds_no_cache FROM demo_decode ORDER BY step").fetchall()  # fmt: skip
    assert [r[0] for r in rows] == list(range(6))
    assert [r[1] for r in rows] == [rows[0][1] + i for i in range(6)]  # one more token attended per step
    assert all(r[2] == r[3] for r in rows)
    assert max(r[4] for r in rows) < 1e-3 and all(r[5] > 0 and r[6] > 0 for r in rows)


def test_prefix_reuse_gives_the_same_answers(con):
    rows = con.execute("SELECT question_tokens, prefix_tokens, max_abs_diff, answer_full, answer_reuse "
                       "FROM demo_prefix ORDER BY question_index").fetchall()  # fmt: skip
    assert len(rows) == 3 and all(r[0] > 0 and r[1] > 20 for r in rows)
    assert all(r[2] < 1e-3 and r[3] == r[4] and r[3] for r in rows)


def test_rerun_overwrites_and_bad_layer_writes_nothing(tmp_path):
    store = Store(tmp_path / "data")
    with pytest.raises(ValueError, match=r"layer 99 is out of range: SmolLM2-135M-Instruct has layers 0..29"):
        demo.run_demo(store, cfg=demo.DemoConfig(layer=99, new_tokens=2, answer_tokens=1))
    assert not any(store.root.rglob("*.parquet")) if store.root.exists() else True
    cfg = demo.DemoConfig(layer=1, new_tokens=2, answer_tokens=1)
    first = demo.run_demo(store, cfg=cfg)
    files = sorted(store.root.rglob("*.parquet"))
    second = demo.run_demo(store, cfg=cfg)
    assert first.run_id == second.run_id and sorted(store.root.rglob("*.parquet")) == files and len(files) == 5
    with pytest.raises(ValueError, match="new_tokens must be >= 2"):
        demo.DemoConfig(new_tokens=1)
