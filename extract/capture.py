"""One prefill with the KV cache on, plus the attention each position receives from the last W queries.

sdpa and flash attention never materialise the attention matrix, so a pre-hook
on every attention module keeps the rotated queries of the last `window`
positions (W x head_dim per head: tiny); after the forward pass they are
scored against the cached keys, causal, softmaxed in float32 and averaged over
the W queries and over the query heads that share each KV head. Checked equal
to eager attention in tests/extract/test_capture.py.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from extract.model import cache_of


@dataclass
class Prefill:
    cache: object  # transformers DynamicCache of the whole prompt
    keys: torch.Tensor  # [layers, kv_heads, T, head_dim], as cached (after RoPE)
    values: torch.Tensor
    attn_received: torch.Tensor  # [layers, kv_heads, T] float32
    attn_received_context: torch.Tensor | None  # same, from the window ending at the context's end (NaN after)
    window: int
    seconds: float  # the forward pass alone


def attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The self-attention module of every decoder layer, in layer order."""
    mods = [m for m in model.modules() if hasattr(m, "q_proj") and hasattr(m, "layer_idx")]
    if not mods:
        raise TypeError(f"{type(model).__name__}: no attention modules with q_proj/layer_idx found")
    return sorted(mods, key=lambda m: m.layer_idx)


def _rotate(module: torch.nn.Module, q: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply the model's own RoPE to queries (the keys are already rotated in the cache)."""
    apply = sys.modules[type(module).__module__].apply_rotary_pos_emb
    q_rot, _ = apply(q, q, cos, sin)  # the key slot is required; its output is unused
    return q_rot


@contextmanager
def capture_window_queries(model: torch.nn.Module, window: int, ends: tuple[int, ...] | None = None):
    """Collect {end: {layer: rotated queries [heads, W, head_dim]}} for the W positions before each `end`.

    `ends` default to the end of the prompt; an end before it (e.g. the end of the context) gives the
    window a question-agnostic policy would observe.
    """
    queries: dict[int | None, dict[int, torch.Tensor]] = {e: {} for e in (ends or (None,))}

    def hook(module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        cos, sin = kwargs["position_embeddings"]
        for end, store in queries.items():
            stop = hidden.shape[1] if end is None else end
            w = min(window, stop)
            h = hidden[:, stop - w : stop]
            q = module.q_proj(h).view(*h.shape[:-1], -1, module.head_dim)
            if hasattr(module, "q_norm"):
                q = module.q_norm(q)
            q = q.transpose(1, 2)
            store[module.layer_idx] = _rotate(module, q, cos[:, stop - w : stop], sin[:, stop - w : stop])[0].detach()

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in attention_modules(model)]
    try:
        yield queries
    finally:
        for h in handles:
            h.remove()


def window_attention(queries: torch.Tensor, keys: torch.Tensor, scaling: float) -> torch.Tensor:
    """Mean causal attention from the last W queries to every key, per KV head.

    queries [..., Hq, W, D] for positions T-W..T-1; keys [..., Hkv, T, D] -> [..., Hkv, T] float32.
    Leading dims (layers) are batched: one call for a block of layers.
    """
    *lead, hq, w, d = queries.shape
    hkv, t = keys.shape[-3], keys.shape[-2]
    q = (queries.float() * scaling).reshape(*lead, hkv, hq // hkv, w, d)
    scores = torch.einsum("...hgwd,...htd->...hgwt", q, keys.float())
    # only the last w keys can lie in a query's future: mask that corner, not the whole row
    future = torch.ones(w, w, dtype=torch.bool, device=keys.device).triu(1)
    scores[..., t - w :].masked_fill_(future, float("-inf"))
    return scores.softmax(-1).mean(dim=(-3, -2))


def _layer_blocks(n_layers: int, per_layer_bytes: int, budget: int = 4 << 20) -> list[slice]:
    """Layers per batch so the score tensor stays cache-sized (4 MiB measured 2x faster than 64 MiB)."""
    step = max(1, min(n_layers, budget // max(per_layer_bytes, 1)))
    return [slice(i, i + step) for i in range(0, n_layers, step)]


def _attention_received(mods, queries: dict[int, torch.Tensor], keys: torch.Tensor) -> torch.Tensor:
    q = torch.stack([queries[m.layer_idx] for m in mods])  # [L, Hq, W, D]
    per_layer = q.shape[1] * q.shape[2] * keys.shape[2] * 4
    blocks = _layer_blocks(len(mods), per_layer)
    return torch.cat([window_attention(q[b], keys[b], mods[0].scaling) for b in blocks])


@torch.inference_mode()
def prefill(
    model: torch.nn.Module, input_ids: torch.Tensor, window: int = 32, context_end: int | None = None
) -> Prefill:
    """Run the prompt once; return the cache, stacked K/V and the window attention received.

    With `context_end`, also the attention from the W queries just before it, over the keys
    before it (NaN after it): what a question-agnostic policy sees.
    """
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    input_ids = input_ids.to(next(model.parameters()).device)
    T = input_ids.shape[1]
    mods = attention_modules(model)
    use_ctx = context_end is not None and 0 < context_end < T
    ends = (T, context_end) if use_ctx else (T,)
    with capture_window_queries(model, window, ends) as queries:
        t0 = time.perf_counter()
        out = model(input_ids=input_ids, use_cache=True, logits_to_keep=1)
        if input_ids.is_cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    cache = cache_of(out)
    keys = torch.stack([layer.keys[0] for layer in cache.layers])
    values = torch.stack([layer.values[0] for layer in cache.layers])
    attn = _attention_received(mods, queries[T], keys)
    attn_ctx = None
    if context_end is not None:
        attn_ctx = torch.full_like(attn, float("nan"))
        if use_ctx:
            attn_ctx[..., :context_end] = _attention_received(mods, queries[context_end], keys[:, :, :context_end])
        else:
            attn_ctx.copy_(attn)
    return Prefill(cache, keys, values, attn, attn_ctx, min(window, T), seconds)
