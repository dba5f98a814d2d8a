"""Eviction on every supported architecture keeps the cache's layer types: keep-all through eviction decodes
what `model.generate` decodes, token for token, with sliding windows shorter than the prompt (the batched
path too); a policy evicts full layers and leaves a sliding layer its window, unless the window covers the
whole sample, where evicting it is exact."""

import numpy as np
import pytest
import torch
from transformers.cache_utils import DynamicSlidingWindowLayer

from tests.architectures import SUPPORTED, WINDOW, build, fast_or_slow
from tests.conftest import generate
from transform import decode, decode_batch
from transform.evict import evict, evicted_layers, held, keep_all

T, NEW, CTX = 300, 12, 260  # prompt, generated tokens, where question_agnostic's context ends


def prompt(seed=3):
    return torch.randint(3, 512, (T,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", fast_or_slow(SUPPORTED))
def test_keep_all_through_eviction_is_generate(name):
    model = build(name)
    ids = prompt()
    want = generate(model, ids, NEW)
    L, H = model.config.num_hidden_layers, model.config.num_key_value_heads
    for setting in ("question_aware", "question_agnostic"):
        prefix = decode.prefill(model, ids, setting, CTX, horizon=T + NEW)
        state = decode.resume(model, prefix, keep_all(L, H, T))
        assert decode.greedy(model, state, NEW) == want, setting
        batch = decode_batch.resume_batch(model, prefix, [None, keep_all(L, H, T)])
        assert decode_batch.greedy_batch(model, batch, NEW) == [want, want], setting


@pytest.mark.parametrize("name", ["gemma3", "mistral", "gemma2"])
def test_eviction_keeps_layer_types_and_sliding_windows(name):
    model = build(name)
    ids = prompt()
    prefix = decode.prefill(model, ids, "question_aware", T, horizon=T + NEW)
    L, H = model.config.num_hidden_layers, model.config.num_key_value_heads
    keep = np.broadcast_to(np.r_[0:4, 200:T], (L, H, 4 + T - 200)).copy()
    out = evict(prefix.cache, keep, horizon=T + NEW)
    for src, got, evicted in zip(prefix.cache.layers, out.layers, evicted_layers(prefix.cache, T + NEW), strict=True):
        assert type(got) is type(src)
        if isinstance(src, DynamicSlidingWindowLayer):
            assert not evicted and got.sliding_window == WINDOW and got.cumulative_length == T
            assert torch.equal(got.keys, src.keys) and got.keys.shape[2] == WINDOW - 1  # the model's own window
        else:
            assert evicted and got.keys.shape[2] == keep.shape[2]
    full_layers = sum(not isinstance(x, DynamicSlidingWindowLayer) for x in prefix.cache.layers)
    assert held(prefix.cache, keep.shape[2], T + NEW) == [
        keep.shape[2] if not isinstance(x, DynamicSlidingWindowLayer) else WINDOW - 1 for x in prefix.cache.layers
    ]
    assert sum(evicted_layers(prefix.cache, T + NEW)) == full_layers
    # the evicted cache decodes, and eviction changed what it decodes where a full layer was evicted
    got = decode.greedy(model, decode.resume(model, prefix, keep), NEW)
    assert len(got) == NEW
    if full_layers:
        logits_full = decode.resume(model, prefix, None).logits
        state = decode.resume(model, prefix, keep)
        step = decode.forward(model, torch.tensor([got[0]]), state.cache, T)
        ref = decode.forward(model, torch.tensor([got[0]]), decode.resume(model, prefix, None).cache, T)
        assert torch.equal(logits_full, state.logits)  # question_aware: the first token comes from the prefill
        assert (step - ref).abs().max() > 1e-3


def masked_reference(model, ids, keep, new_ids):
    """Logits of `new_ids` after the FULL prompt with the evicted positions masked out (no eviction)."""
    hq = model.config.num_attention_heads
    H = keep.shape[1]
    q = len(new_ids)
    allowed = torch.zeros(hq, q, T + q, dtype=torch.bool)
    for h in range(hq):
        allowed[h, :, torch.from_numpy(keep[0, h // (hq // H)])] = True
    allowed[:, :, T:] = torch.tril(torch.ones(q, q, dtype=torch.bool))
    mask = torch.zeros(1, hq, q, T + q).masked_fill(~allowed[None], float("-inf"))
    prefix = decode.prefill(model, ids, "question_aware", T)
    with torch.inference_mode():
        out = model(input_ids=new_ids[None], position_ids=torch.arange(T, T + q)[None], cache=prefix.cache,
                    attention_mask=mask, logits_to_keep=0)  # fmt: skip
    return out.logits[0].float()


def test_a_window_that_covers_the_sample_is_evicted_exactly():
    """Gemma3 with a window longer than prompt + answer: its sliding layers attend like full ones, so a policy
    evicts them too, and the result equals the full cache with the evicted positions masked."""
    model = build("gemma3", attn="eager")
    model.config.sliding_window = 4096
    for layer in model.model.layers:
        if layer.self_attn.sliding_window:
            layer.self_attn.sliding_window = 4096
    ids = prompt()
    L, H = model.config.num_hidden_layers, model.config.num_key_value_heads
    keep = np.broadcast_to(np.r_[0:8, 100:140, T - 32 : T], (L, H, 80)).copy()
    new = torch.tensor([5, 77, 301, 9])
    prefix = decode.prefill(model, ids, "question_aware", T, horizon=T + len(new))
    assert evicted_layers(prefix.cache, T + len(new)) == [True] * L
    assert evicted_layers(prefix.cache, None) == [False] * 3 + [True]  # horizon unknown: windows kept
    state = decode.resume(model, prefix, keep)
    got = decode.forward(model, new, state.cache, T, logits_to_keep=0)
    torch.testing.assert_close(got, masked_reference(model, ids, keep, new), atol=1e-4, rtol=1e-4)
