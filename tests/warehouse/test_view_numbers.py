"""The catalog's aggregate views give the numbers numpy gives from the same Parquet files: `token_summary`
(per-token means and maxima over layers and heads) and `keep_mass` (attention and key-norm mass kept by a
real snapkv keep-set)."""

import shutil

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from transform.keep import apply_policy, find_samples, load_stats
from transform.policies import make
from warehouse import catalog
from warehouse.store import Store


@pytest.fixture(scope="module")
def applied(small_warehouse, tmp_path_factory):
    """A copy of the real extraction with one snapkv keep-set applied (question_aware), and its catalog."""
    base = tmp_path_factory.mktemp("view-numbers")
    shutil.copytree(small_warehouse["store"].root, base / "data")
    store = Store(base / "data")
    policy = make("snapkv", budget=0.3)
    assert apply_policy(store, policy, run_id=small_warehouse["run_id"]).ranked == 3
    con = duckdb.connect(str(catalog.build(store, base / "kv.duckdb")), read_only=True)
    ref = min(find_samples(store, small_warehouse["run_id"]), key=lambda r: r.task)
    yield store, con, policy, ref
    con.close()


def grids(store, ref, columns):
    """(L, H, n) arrays of a sample's token_stats columns, read straight from its Parquet file."""
    t = pq.read_table(store.path("token_stats", ref.sample_id, model=ref.model, task=ref.task, run_id=ref.run_id))
    layer, head, pos = (t[c].to_numpy().astype(np.int64) for c in ("layer", "kv_head", "position"))
    out = {}
    for c in columns:
        g = np.full((layer.max() + 1, head.max() + 1, pos.max() + 1), np.nan)
        g[layer, head, pos] = t[c].to_numpy(zero_copy_only=False).astype(np.float64)
        out[c] = g
    return out


def test_token_summary_is_the_mean_and_max_over_layers_and_heads(applied):
    store, con, _, ref = applied
    g = grids(store, ref, ["key_norm", "value_absmean", "key_absmax", "attn_received"])
    got = con.execute(
        "SELECT position, key_norm, value_absmean, key_absmax, attn_received FROM token_summary"
        " WHERE task = ? AND sample_id = ? ORDER BY position",
        [ref.task, ref.sample_id],
    ).fetchnumpy()
    assert got["position"].tolist() == list(range(g["key_norm"].shape[-1]))
    for col, want in [
        ("key_norm", g["key_norm"].mean(axis=(0, 1))),
        ("value_absmean", g["value_absmean"].mean(axis=(0, 1))),
        ("key_absmax", g["key_absmax"].max(axis=(0, 1))),
        ("attn_received", g["attn_received"].mean(axis=(0, 1))),
    ]:
        np.testing.assert_allclose(got[col], want, rtol=1e-5, atol=1e-7, err_msg=col)


def test_keep_mass_is_the_share_of_mass_on_the_kept_positions(applied):
    store, con, policy, ref = applied
    g = grids(store, ref, ["key_norm", "attn_received"])
    kept = policy.keep_mask(load_stats(store, ref))  # the Python reference's keep-set over the n-token cache
    n = kept.shape[-1]
    attn, knorm = g["attn_received"][..., :n], g["key_norm"][..., :n]
    want_attn = (attn * kept).sum(-1) / attn.sum(-1)
    want_knorm = (knorm * kept).sum(-1) / knorm.sum(-1)
    rows = con.execute(
        "SELECT layer, kv_head, kept_tokens, n_tokens, attn_mass_kept, key_norm_mass_kept FROM keep_mass"
        " WHERE task = ? AND sample_id = ? AND policy_id = ? AND setting = 'question_aware'",
        [ref.task, ref.sample_id, policy.policy_id],
    ).fetchall()
    assert len(rows) == kept.shape[0] * kept.shape[1]
    for layer, head, kept_tokens, n_tokens, attn_kept, knorm_kept in rows:
        assert (kept_tokens, n_tokens) == (kept[layer, head].sum(), n)
        assert attn_kept == pytest.approx(want_attn[layer, head], rel=1e-5)
        assert knorm_kept == pytest.approx(want_knorm[layer, head], rel=1e-5)
    assert 0.3 < float(np.mean([r[4] for r in rows])) < 1, "snapkv at 30% keeps more than 30% of the attention"
