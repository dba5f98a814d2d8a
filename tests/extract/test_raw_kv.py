"""raw_kv_layers / raw_kv_heads / raw_kv_positions keep exactly the chosen slice of the cache, each row
holding its own (layer, head, position)'s vectors, in a table the store accepts."""

import numpy as np
import pytest
import torch

from extract.longbench import Sample
from extract.sample import StatsConfig, kv_table
from warehouse import schemas
from warehouse.store import Store

SAMPLE = Sample("trec", "s1", "q", "c", ["a"], None, "en", 10, "trec.jsonl:1")


def coded_cache(L=3, H=4, T=10, D=2) -> torch.Tensor:
    """K[l, h, t, d] = 100 l + 10 h + t + d / 2: every value says where it came from (exact in float16)."""
    layer, h, t, d = torch.meshgrid(*(torch.arange(x, dtype=torch.float32) for x in (L, H, T, D)), indexing="ij")
    return 100 * layer + 10 * h + t + d / 2


@pytest.mark.parametrize(
    ("layers", "heads", "positions", "want_pos"),
    [
        ((0, 2), (1,), 10, list(range(10))),
        ((1,), (3, 0), 3, [0, 4, 9]),  # 3 of 10, evenly: 0, 4.5 -> 4 (round half to even), 9
        (None, None, 2, [0, 9]),
    ],
)
def test_raw_kv_keeps_the_chosen_slice(layers, heads, positions, want_pos, tmp_path):
    K = coded_cache()
    cfg = StatsConfig(raw_kv=True, raw_kv_layers=layers, raw_kv_heads=heads, raw_kv_positions=positions)
    t = kv_table("r", "m", SAMPLE, K, -K, cfg)
    want_layers, want_heads = layers or (0, 1, 2), heads or (0, 1, 2, 3)
    got = list(zip(t["layer"].to_pylist(), t["kv_head"].to_pylist(), t["position"].to_pylist(), strict=True))
    assert sorted(got) == sorted((a, b, c) for a in want_layers for b in want_heads for c in want_pos)
    key = np.asarray(t["key"].to_pylist(), dtype=np.float64)
    for (layer, head, pos), k, v in zip(got, key, np.asarray(t["value"].to_pylist()), strict=True):
        assert k.tolist() == [100 * layer + 10 * head + pos, 100 * layer + 10 * head + pos + 0.5]
        assert v.tolist() == (-k).tolist()
    Store(tmp_path).write("kv", t, "s1", schema=schemas.kv_schema(2))  # the declared schema takes it


def test_a_layer_or_head_out_of_range_is_named():
    K = coded_cache()
    with pytest.raises(ValueError, match=r"out of range: \[3\] \(model has 3 layers, 4 KV heads\)"):
        kv_table("r", "m", SAMPLE, K, K, StatsConfig(raw_kv=True, raw_kv_layers=(0, 3)))
    with pytest.raises(ValueError, match=r"out of range: \[4\]"):
        kv_table("r", "m", SAMPLE, K, K, StatsConfig(raw_kv=True, raw_kv_heads=(4,)))
