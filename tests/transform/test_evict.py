"""Eviction on a live DynamicCache (tiny random Llama, initializer_range=0.2 so outputs react to pruning).

The reference for a compacted cache is the full cache with an attention mask that hides the evicted
positions: both must give the same logits. Positions continue from the original length (RoPE).
"""

import numpy as np
import pytest
import torch

from transform import decode
from transform.evict import KeepSetError, cache_bytes, copy_cache, evict, evict_, keep_all, kv_bytes, restrict

T = 96


@pytest.fixture
def prompt():
    torch.manual_seed(1)
    return torch.randint(0, 512, (T,))


def full_prefix(model, ids):
    return decode.prefill(model, ids, "question_aware", T)


def masked_logits(model, prefix, keep, new_ids):
    """Logits of `new_ids` fed after the FULL cache with evicted positions masked out (per query head)."""
    L, H, _ = keep.shape
    hq = model.config.num_attention_heads
    q = len(new_ids)
    allowed = torch.zeros(hq, q, T + q, dtype=torch.bool)
    for h in range(hq):  # GQA: query head h reads KV head h // (hq / H); every layer has the same keep here
        allowed[h, :, torch.from_numpy(keep[0, h // (hq // H)])] = True
    allowed[:, :, T:] = torch.tril(torch.ones(q, q, dtype=torch.bool))
    mask = torch.zeros(1, hq, q, T + q).masked_fill(~allowed[None], float("-inf"))
    cache = copy_cache(prefix.cache)
    with torch.inference_mode():
        out = model(input_ids=new_ids[None], position_ids=torch.arange(T, T + q)[None], cache=cache,
                    attention_mask=mask, logits_to_keep=0)  # fmt: skip
    return out.logits[0].float()


def evicted_logits(model, prefix, keep, new_ids, start=T):
    state = decode.resume(model, prefix, keep)
    with torch.inference_mode():
        return decode.forward(model, new_ids, state.cache, start, logits_to_keep=0)


NEW = torch.tensor([5, 77, 301, 9])


def test_shared_keep_equals_masked_full_cache(tiny_llama, prompt):
    prefix = full_prefix(tiny_llama, prompt)
    pos = np.r_[0:4, 30:50, T - 16 : T]
    keep = np.broadcast_to(pos, (2, 2, len(pos))).copy()
    got = evicted_logits(tiny_llama, prefix, keep, NEW)
    want = masked_logits(tiny_llama, prefix, keep, NEW)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    full = evicted_logits(tiny_llama, prefix, None, NEW)
    assert (got - full).abs().max() > 0.05  # eviction changed the outputs: the test could fail


def test_per_head_keep_equals_masked_full_cache(tiny_llama, prompt):
    prefix = full_prefix(tiny_llama, prompt)
    rng = np.random.default_rng(0)
    heads = [np.sort(rng.choice(T, 40, replace=False)) for _ in range(2)]
    keep = np.stack([np.stack(heads)] * 2)  # [L=2, H=2, 40], differs per head
    got = evicted_logits(tiny_llama, prefix, keep, NEW)
    torch.testing.assert_close(got, masked_logits(tiny_llama, prefix, keep, NEW), atol=1e-4, rtol=1e-4)


def test_gathered_entries_are_the_kept_positions_per_layer_and_head(tiny_llama, prompt):
    prefix = full_prefix(tiny_llama, prompt)
    rng = np.random.default_rng(1)
    keep = np.sort(np.stack([[rng.choice(T, 10, replace=False) for _ in range(2)] for _ in range(2)]), axis=-1)
    out = evict(prefix.cache, keep)
    for layer in range(2):
        for h in range(2):
            src = prefix.cache.layers[layer]
            torch.testing.assert_close(out.layers[layer].keys[0, h], src.keys[0, h, keep[layer, h]])
            torch.testing.assert_close(out.layers[layer].values[0, h], src.values[0, h, keep[layer, h]])
    assert out.get_seq_length() == 10 and prefix.cache.get_seq_length() == T  # the source is untouched


def test_original_positions_matter(tiny_llama, prompt):
    """Feeding at the compacted length instead of T changes the logits (RoPE restarts): guards the rule."""
    prefix = full_prefix(tiny_llama, prompt)
    pos = np.r_[0:8, T - 24 : T]
    keep = np.broadcast_to(pos, (2, 2, len(pos))).copy()
    right = evicted_logits(tiny_llama, prefix, keep, NEW)
    wrong = evicted_logits(tiny_llama, prefix, keep, NEW, start=len(pos))
    assert (right - wrong).abs().max() > 0.05


def test_copy_is_independent_and_evict_in_place(tiny_llama, prompt):
    prefix = full_prefix(tiny_llama, prompt)
    before = prefix.cache.layers[0].keys.clone()
    c = copy_cache(prefix.cache)
    assert c.layers[0].keys.data_ptr() != prefix.cache.layers[0].keys.data_ptr()
    with torch.inference_mode():
        decode.forward(tiny_llama, NEW, c, T)
    assert c.get_seq_length() == T + len(NEW) and prefix.cache.get_seq_length() == T
    torch.testing.assert_close(prefix.cache.layers[0].keys, before)
    keep = np.broadcast_to(np.arange(0, T, 2), (2, 2, T // 2)).copy()
    same = evict_(c, np.broadcast_to(np.arange(0, T, 2), (2, 2, T // 2)).copy())
    assert same is c and c.get_seq_length() == T // 2
    torch.testing.assert_close(c.layers[1].values, evict(prefix.cache, keep).layers[1].values)


def test_keep_all_is_the_identity_and_bytes(tiny_llama, prompt):
    prefix = full_prefix(tiny_llama, prompt)
    out = evict(prefix.cache, keep_all(2, 2, T))
    for a, b in zip(out.layers, prefix.cache.layers, strict=True):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    assert cache_bytes(prefix.cache) == kv_bytes(2, 2, T, 16, 4) == 2 * 2 * 2 * T * 16 * 4


@pytest.mark.parametrize(
    ("keep", "match"),
    [
        (np.zeros((2, 3, 4), dtype=np.int64), "does not match the cache"),
        (np.zeros((2, 2, 0), dtype=np.int64), "empty"),
        (np.full((2, 2, 1), T, dtype=np.int64), "cache holds positions 0..95"),
        (np.full((2, 2, 1), -1, dtype=np.int64), "span -1"),
        (np.broadcast_to(np.array([3, 2]), (2, 2, 2)).copy(), "sorted and unique"),
        (np.zeros((2, 2, 2)), "integers"),
    ],
)
def test_bad_keep_sets_are_named(tiny_llama, prompt, keep, match):
    prefix = full_prefix(tiny_llama, prompt)
    with pytest.raises(KeepSetError, match=match):
        evict(prefix.cache, keep)


def test_restrict_to_a_prefix():
    keep = np.array([[[0, 5, 50, 60], [1, 6, 50, 60]]])
    assert restrict(keep, 50).tolist() == [[[0, 5], [1, 6]]]
    with pytest.raises(KeepSetError, match="same count per head"):
        restrict(np.array([[[0, 5, 50], [1, 50, 51]]]), 50)
