"""Window attention from captured queries equals eager attention's own weights (sdpa and eager)."""

import pytest
import torch

from extract.capture import prefill


def eager_received(model, ids, window, end=None):
    """Reference: the attention matrix itself, averaged over the last `window` queries before `end`."""
    end = end or len(ids)
    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(input_ids=ids[None, :end], output_attentions=True)
    groups = model.config.num_attention_heads // model.config.num_key_value_heads
    rows = []
    for att in out.attentions:  # [1, Hq, T, T]
        a = att[0, :, end - window : end, :end].mean(1)  # [Hq, T]
        rows.append(a.reshape(model.config.num_key_value_heads, groups, end).mean(1))
    return torch.stack(rows)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_window_attention_matches_eager(tiny_llama, impl):
    torch.manual_seed(2)
    ids = torch.randint(0, 512, (150,))
    ref = eager_received(tiny_llama, ids, 16)
    ref_ctx = eager_received(tiny_llama, ids, 16, end=100)
    tiny_llama.set_attn_implementation(impl)
    pf = prefill(tiny_llama, ids, window=16, context_end=100)
    torch.testing.assert_close(pf.attn_received, ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(pf.attn_received_context[..., :100], ref_ctx, rtol=1e-4, atol=1e-6)
    assert torch.isnan(pf.attn_received_context[..., 100:]).all()
    # each query's attention sums to 1, so the mean over the window does too
    torch.testing.assert_close(pf.attn_received.sum(-1), torch.ones(pf.attn_received.shape[:2]))


def test_window_longer_than_prompt_uses_every_query(tiny_llama):
    ids = torch.randint(0, 512, (5,))
    pf = prefill(tiny_llama, ids, window=32)
    assert pf.window == 5
    torch.testing.assert_close(pf.attn_received, eager_received(tiny_llama, ids, 5), rtol=1e-4, atol=1e-6)


def test_real_model_matches_eager(smol):
    """The default model at 300 tokens: captured-query attention equals eager's matrix."""
    import copy

    model = copy.deepcopy(smol.model)
    ids = torch.randint(0, 49152, (300,), generator=torch.Generator().manual_seed(0))
    pf = prefill(model, ids, window=32)
    ref = eager_received(model, ids, 32)
    torch.testing.assert_close(pf.attn_received, ref, rtol=1e-3, atol=1e-5)
