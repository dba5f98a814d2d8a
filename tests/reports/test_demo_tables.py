"""extract/demo.py on the real default model: what reports 5, 14 and 15 draw is true of the model."""

import duckdb
import numpy as np
import pytest
import torch

from extract import demo
from reports.base import fetch
from reports.kv_caching import TOLERANCE
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
    k = demo.DemoConfig().cached_queries
    assert rows["demo_cache_attention"] == 30 * 9 * sum(q + 1 for q in range(T - k, T))  # last k queries, causal
    assert rows["demo_timing"] == 3 * 2 and rows["demo_head_stats"] == 30 * 9  # fixture: 3 lengths x 2 repeats
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


def test_attention_with_the_cache_equals_attention_without_it(report_warehouse, con):
    """Report 15's claim: the last queries fed one at a time against the KV cache get the same attention
    weights as recomputing the whole prompt, within the tolerance the page states, in every layer and head."""
    run_id = report_warehouse["demo"].run_id
    pairs = con.execute(
        "SELECT c.weight, a.weight, c.query_pos, c.key_pos FROM demo_cache_attention AS c "
        "JOIN demo_attention AS a USING (run_id, layer, q_head, query_pos, key_pos) WHERE c.run_id = ?",
        [run_id],
    ).fetchall()
    cached, full = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    assert len(pairs) == report_warehouse["demo"].rows["demo_cache_attention"]  # every cached weight has its pair
    assert np.abs(cached - full).max() <= TOLERANCE and cached.max() > 0.5  # real weights, not all ~0
    # the comparison can tell rows apart: the previous query's weights (same keys) are far from these
    shifted = con.execute(
        "SELECT max(abs(c.weight - a.weight)) FROM demo_cache_attention AS c JOIN demo_attention AS a "
        "ON a.run_id = c.run_id AND a.layer = c.layer AND a.q_head = c.q_head AND a.query_pos = c.query_pos - 1 "
        "AND a.key_pos = c.key_pos WHERE c.run_id = ?",
        [run_id],
    ).fetchall()[0][0]
    assert shifted > 100 * TOLERANCE
    summary = fetch(con, "demo_cache_attention_summary", {"run_id": run_id, "tolerance": TOLERANCE}).to_pylist()[0]
    assert summary["within_tolerance"] and summary["unmatched"] == 0 and summary["weights"] == len(pairs)
    assert summary["max_abs_diff"] == pytest.approx(np.abs(cached - full).max(), rel=1e-3)
    assert (summary["layers"], summary["heads"], summary["queries"]) == (30, 9, demo.DemoConfig().cached_queries)


def test_cache_attention_on_a_tiny_model_matches_eager():
    """The incremental rows equal the full forward's, each query head with its own KV head; too many
    cached queries for the prompt is refused by name."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=8192,
                      rope_theta=1e5, initializer_range=0.2, tie_word_embeddings=True)  # fmt: skip
    model = LlamaForCausalLM(cfg).eval()
    model.config._attn_implementation = "eager"
    ids = torch.randint(0, 512, (1, 20))
    with torch.inference_mode():
        full = model(input_ids=ids, output_attentions=True, use_cache=False).attentions
    rows = demo.cache_attention_run(model, ids, 5)
    assert len(rows) == 2 * 4 * sum(q + 1 for q in range(15, 20))
    diff = max(abs(r["weight"] - float(full[r["layer"]][0, r["q_head"], r["query_pos"], r["key_pos"]])) for r in rows)
    assert diff <= TOLERANCE and {r["kv_head"] for r in rows if r["q_head"] in (2, 3)} == {1}
    with pytest.raises(ValueError, match="cached_queries must be between 1 and 19"):
        demo.cache_attention_run(model, ids, 20)


def test_timing_rows_and_the_curve_the_page_draws(report_warehouse, con):
    """Every configured length is timed `repeats` times both ways; the page's medians, trapezoid totals and
    log-log slopes are those of the stored rows (numpy), whatever the machine's speed."""
    run_id = report_warehouse["demo"].run_id
    rows = con.execute("SELECT length, repeat, seconds_cache, seconds_no_cache, attn_impl, source FROM demo_timing "
                       "WHERE run_id = ? ORDER BY length, repeat", [run_id]).fetchall()  # fmt: skip
    assert [(r[0], r[1]) for r in rows] == [(n, i) for n in (32, 64, 128) for i in range(2)]
    assert all(r[2] > 0 and r[3] > 0 and r[4] == "sdpa" and r[5].startswith(demo.LONG_TASK + "/") for r in rows)
    curve = fetch(con, "demo_timing_curve", {"run_id": run_id}).to_pylist()
    fit = {r["mode"]: r for r in fetch(con, "demo_timing_fit", {"run_id": run_id}).to_pylist()}
    lengths = np.array([32, 64, 128])
    for mode, col in (("with cache", 2), ("without cache", 3)):
        med = np.array([np.median([r[col] for r in rows if r[0] == n]) for n in lengths])
        got = [c for c in curve if c["mode"] == mode]
        assert [c["length"] for c in got] == lengths.tolist() and all(c["repeats"] == 2 for c in got)
        assert np.allclose([c["ms"] for c in got], 1000 * med, rtol=1e-3)
        total = np.concatenate([[lengths[0] * med[0]], np.diff(lengths) * (med[1:] + med[:-1]) / 2]).cumsum()
        assert np.allclose([c["seconds_total"] for c in got], total, rtol=1e-3)
        assert fit[mode]["slope_per_token"] == pytest.approx(np.polyfit(np.log(lengths), np.log(med), 1)[0], abs=1e-3)
        assert fit[mode]["slope_total"] == pytest.approx(np.polyfit(np.log(lengths), np.log(total), 1)[0], abs=1e-3)


def test_head_stats_per_query_head(report_warehouse, con):
    """One row per (layer, query head), with the KV head h // 3 it reads; the shares are consistent with the
    distance histogram: the previous token is bucket 1, the 16 latest keys are buckets 0..4."""
    rows = con.execute("SELECT layer, q_head, kv_head, sink_share, previous_share, local_share, entropy, "
                       "share_by_distance, tokens FROM demo_head_stats WHERE run_id = ?",
                       [report_warehouse["demo"].run_id]).fetchall()  # fmt: skip
    assert sorted((r[0], r[1]) for r in rows) == [(layer, h) for layer in range(30) for h in range(9)]
    assert all(r[2] == r[1] // 3 and r[8] == 256 for r in rows)
    for r in rows:
        share = np.array(r[7])
        assert share.sum() == pytest.approx(1, abs=1e-4) and len(share) == 9  # distances up to 255: buckets 0..8
        assert r[4] == pytest.approx(share[1], abs=1e-5) and r[5] == pytest.approx(share[:5].sum(), abs=1e-5)
        assert 0 <= r[3] <= 1 and 0 <= r[6] <= 1
    # specialised heads exist: some head puts most attention on the previous token, another on the sink
    assert max(r[4] for r in rows) > 0.5 and max(r[3] for r in rows) > 0.5


def test_head_stats_on_a_tiny_model_match_eager_attention():
    """head_stats_run's captured-query attention equals eager attention per query head (numpy statistics)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=8192,
                      rope_theta=1e5, initializer_range=0.2, tie_word_embeddings=True)  # fmt: skip
    model = LlamaForCausalLM(cfg).eval()
    model.config._attn_implementation = "eager"
    T = 80
    ids = torch.randint(0, 512, (1, T))
    with torch.inference_mode():
        att = [a[0].numpy() for a in model(input_ids=ids, output_attentions=True, use_cache=False).attentions]
    rows = demo.head_stats_run(model, ids)
    assert len(rows) == 2 * 4
    q = np.arange(demo.MIN_QUERY, T)
    for r in rows:
        w = att[r["layer"]][r["q_head"], demo.MIN_QUERY :]  # [Q, T]
        dist = q[:, None] - np.arange(T)[None]
        assert r["kv_head"] == r["q_head"] // 2
        assert r["sink_share"] == pytest.approx(w[:, :4].sum(1).mean(), abs=1e-5)
        assert r["previous_share"] == pytest.approx(w[np.arange(len(q)), q - 1].mean(), abs=1e-5)
        assert r["mean_distance"] == pytest.approx((w * np.clip(dist, 0, None)).sum(1).mean(), rel=1e-4)
        ent = -(w * np.log(np.clip(w, 1e-12, None))).sum(1) / np.log(q + 1)
        assert r["entropy"] == pytest.approx(ent.mean(), abs=1e-5)


def test_rerun_overwrites_and_bad_layer_writes_nothing(tmp_path):
    store = Store(tmp_path / "data")
    small = dict(new_tokens=2, answer_tokens=1, timing_lengths=(16,), timing_repeats=1, head_tokens=64)
    with pytest.raises(ValueError, match=r"layer 99 is out of range: SmolLM2-135M-Instruct has layers 0..29"):
        demo.run_demo(store, cfg=demo.DemoConfig(layer=99, **small))
    assert not any(store.root.rglob("*.parquet")) if store.root.exists() else True
    cfg = demo.DemoConfig(layer=1, **small)
    first = demo.run_demo(store, cfg=cfg)
    files = sorted(store.root.rglob("*.parquet"))
    second = demo.run_demo(store, cfg=cfg)
    assert first.run_id == second.run_id and sorted(store.root.rglob("*.parquet")) == files
    assert len(files) == len(demo.DEMO_TABLES)
    with pytest.raises(ValueError, match="new_tokens must be >= 2"):
        demo.DemoConfig(new_tokens=1)
    with pytest.raises(ValueError, match=r"timing_lengths must be one or more lengths >= 2, got \(\)"):
        demo.DemoConfig(timing_lengths=())
    assert demo.DemoConfig(timing_lengths=(512, 64, 64)).timing_lengths == (64, 512)
