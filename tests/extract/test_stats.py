"""Statistics equal a naive numpy computation, and quantization errors equal torch's own round trips."""

import warnings

import numpy as np
import pytest
import torch

from extract import stats
from extract.capture import prefill


@pytest.fixture
def kv(tiny_llama):
    torch.manual_seed(1)
    ids = torch.randint(0, 512, (97,))
    pf = prefill(tiny_llama, ids, window=8)
    return pf.keys.numpy().astype(np.float64), pf.values.numpy().astype(np.float64), pf


def test_cache_shape_matches_the_model(kv, tiny_llama):
    K, V, pf = kv
    cfg = tiny_llama.config
    assert K.shape == (cfg.num_hidden_layers, cfg.num_key_value_heads, 97, cfg.head_dim) == V.shape


def test_token_stats_equal_numpy(kv):
    K, V, pf = kv
    got = stats.token_stats(pf.keys, pf.values)
    for name, x in (("key", K), ("value", V)):
        np.testing.assert_allclose(got[f"{name}_norm"], np.sqrt((x**2).sum(-1)), rtol=1e-5)
        np.testing.assert_allclose(got[f"{name}_absmean"], np.abs(x).mean(-1), rtol=1e-5)
        np.testing.assert_allclose(got[f"{name}_absmax"], np.abs(x).max(-1), rtol=1e-6)


def test_layer_stats_equal_numpy(kv):
    K, V, pf = kv
    got = stats.layer_stats(pf.keys, pf.values, sparsity_rel=0.05)
    L, H = K.shape[:2]
    for layer in range(L):
        for head in range(H):
            k, v = K[layer, head], V[layer, head]
            for name, x in (("key", k), ("value", v)):
                rms = np.sqrt((x**2).mean())
                assert got[f"{name}_sparsity"][layer, head] == pytest.approx((np.abs(x) < 0.05 * rms).mean(), abs=1e-6)
                assert got[f"{name}_std"][layer, head] == pytest.approx(x.std(), rel=1e-4)
                assert got[f"{name}_absmean"][layer, head] == pytest.approx(np.abs(x).mean(), rel=1e-5)
                assert got[f"{name}_absmax"][layer, head] == pytest.approx(np.abs(x).max(), rel=1e-6)
            r = np.corrcoef(k.ravel(), v.ravel())[0, 1]
            assert got["kv_correlation"][layer, head] == pytest.approx(r, abs=1e-4)
            rn = np.corrcoef(np.linalg.norm(k, axis=-1), np.linalg.norm(v, axis=-1))[0, 1]
            assert got["kv_norm_correlation"][layer, head] == pytest.approx(rn, abs=1e-4)


def _rel(x, xq):
    return float((x - xq).norm() / x.norm())


def test_quantization_errors_equal_torch_round_trips(kv):
    _, _, pf = kv
    got = stats.layer_stats(pf.keys, pf.values)
    warnings.filterwarnings("ignore", message=".*quantize_per.*deprecated")
    for layer in range(pf.keys.shape[0]):
        for head in range(pf.keys.shape[1]):
            for name, cache in (("key", pf.keys), ("value", pf.values)):
                x = cache[layer, head].float()  # [T, D]
                amax = x.abs().amax(-1)
                zeros = torch.zeros(len(x), dtype=torch.long)
                q8 = torch.quantize_per_channel(x, (amax / 127).double(), zeros, 0, torch.qint8).dequantize()
                q4 = torch.stack(
                    [
                        torch.quantize_per_tensor(r, float(a / 7), 8, torch.quint4x2).dequantize()
                        for r, a in zip(x, amax, strict=True)
                    ]
                )
                s8 = (amax / stats.FP8_MAX)[:, None]
                f8 = (x / s8).to(torch.float8_e4m3fn).to(torch.float32) * s8
                assert got[f"{name}_int8_error"][layer, head] == pytest.approx(_rel(x, q8), rel=1e-3)
                assert got[f"{name}_int4_error"][layer, head] == pytest.approx(_rel(x, q4), rel=1e-3)
                assert got[f"{name}_fp8_error"][layer, head] == pytest.approx(_rel(x, f8), rel=1e-3)
                # the explicit helpers agree with the fused computation too
                assert _rel(x, stats.int_round_trip(x, 8)) == pytest.approx(_rel(x, q8), rel=1e-3)
                assert _rel(x, stats.fp8_round_trip(x)) == pytest.approx(_rel(x, f8), rel=1e-3)
    k = got["key_int8_error"]
    assert (k < got["key_int4_error"]).all() and (k > 0).all()  # int4 is coarser than int8, and nothing is free


def test_blocks_of_layers_give_what_one_layer_at_a_time_gives(monkeypatch):
    """On an accelerator several layers are reduced at once (kernel launches, not memory, are its cost);
    every statistic must be what the CPU's one-layer-at-a-time path gives, also for a ragged last block."""
    torch.manual_seed(0)
    K, V = torch.randn(7, 3, 200, 16), torch.randn(7, 3, 200, 16) * 2 + 0.1
    one = {**stats.token_stats(K, V), **stats.layer_stats(K, V)}
    monkeypatch.setattr(stats, "_layers_per_block", lambda keys: 3)
    blocks = {**stats.token_stats(K, V), **stats.layer_stats(K, V)}
    assert one.keys() == blocks.keys()
    for name, want in one.items():
        assert blocks[name].shape == want.shape, name
        torch.testing.assert_close(blocks[name], want, rtol=1e-5, atol=1e-6, equal_nan=True, msg=name)
