"""One prefill with the KV cache on, plus the attention each position receives from the last W queries.

Everything is read at transformers' attention interface (extract/attention.py): each layer's keys and values
over every prompt position (a sliding layer's cache keeps only its window, the prefill still sees them all),
and the rotated, normed queries of the last `window` positions (W x head_dim per head: tiny). After the
forward pass those queries are scored against the keys the way the layer itself scores them (its scaling,
softcap, sliding window and sinks), causal, softmaxed in float32 and averaged over the W queries and over the
query heads that share each KV head. sdpa and flash attention never materialise the attention matrix; this
equals eager attention's own weights (tests/extract/test_architectures.py, for every supported architecture).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from extract import attention
from extract.model import ArchitectureError, cache_of


@dataclass(frozen=True)
class LayerInfo:
    """How one layer attends: the `layers` table's row (warehouse/schemas.py)."""

    layer: int
    attention: str  # full | sliding
    sliding_window: int | None
    query_heads: int
    kv_heads: int
    head_dim: int
    scaling: float
    softcap: float | None
    sinks: bool


@dataclass
class _Layer:
    info: LayerInfo
    keys: torch.Tensor  # [Hkv, T, D]
    values: torch.Tensor
    queries: dict[int, torch.Tensor]  # end -> [Hq, w, D], the w queries before `end`
    sinks: torch.Tensor | None


@dataclass
class Prefill:
    cache: object  # transformers DynamicCache of the whole prompt (sliding layers: their window)
    keys: torch.Tensor  # [layers, kv_heads, T, head_dim], every prompt position (after RoPE and norms)
    values: torch.Tensor
    attn_received: torch.Tensor  # [layers, kv_heads, T] float32
    attn_received_context: torch.Tensor | None  # same, from the window ending at the context's end (NaN after)
    window: int
    seconds: float  # the forward pass alone
    layers: list[LayerInfo]


def layer_info(call: attention.Call) -> LayerInfo:
    _, hq, _, d = call.query.shape
    return LayerInfo(
        layer=call.layer,
        attention="sliding" if call.sliding_window else "full",
        sliding_window=int(call.sliding_window) if call.sliding_window else None,
        query_heads=int(hq),
        kv_heads=int(call.key.shape[1]),
        head_dim=int(d),
        scaling=float(call.scaling),
        softcap=float(call.softcap) if call.softcap else None,
        sinks=call.sinks is not None,
    )


def _capture(model, input_ids: torch.Tensor, ends: tuple[int, ...], window: int):
    """One forward pass; every layer's keys, values and window queries from the attention interface."""
    layers: dict[int, _Layer] = {}
    T = input_ids.shape[1]

    def keep(call: attention.Call) -> None:
        if call.layer in layers:
            raise ArchitectureError(
                f"{type(model).__name__}: layer {call.layer} calls attention twice in one forward pass"
            )
        if call.key.shape[2] != T:
            raise ArchitectureError(
                f"{type(model).__name__}: layer {call.layer} attends over {call.key.shape[2]} positions of a "
                f"{T}-token prompt"
            )
        qs = {e: call.query[0, :, e - min(window, e) : e].detach().clone() for e in ends}
        sinks = call.sinks.detach().float() if call.sinks is not None else None
        layers[call.layer] = _Layer(layer_info(call), call.key[0].detach(), call.value[0].detach(), qs, sinks)

    with attention.observe(model, keep):
        t0 = time.perf_counter()
        out = model(input_ids=input_ids, use_cache=True, logits_to_keep=1)
        if input_ids.is_cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    return cache_of(out), [layers[i] for i in sorted(layers)], seconds


def check_layers(model, layers: list, cache) -> None:
    """Refuse, naming the problem, what this project cannot read as per-layer keys and values."""
    from transformers.cache_utils import DynamicLayer

    name = type(model).__name__
    cache_layers = list(getattr(cache, "layers", []))
    other = [(i, type(x).__name__) for i, x in enumerate(cache_layers) if not isinstance(x, DynamicLayer)]
    if other:
        kinds = ", ".join(sorted({k for _, k in other}))
        raise ArchitectureError(
            f"{name}: layers {[i for i, _ in other]} keep {kinds} state (a convolution, linear-attention or "
            "state-space layer), not per-position keys and values: kvwarehouse reads and evicts per-position "
            "K/V only, so hybrid models are not supported"
        )
    if not layers:
        raise ArchitectureError(
            f"{name}: no layer called transformers' attention interface (ALL_ATTENTION_FUNCTIONS); kvwarehouse "
            "reads attention there (custom or remote-code attention is not supported)"
        )
    n_cache = len(cache_layers)
    if n_cache and [x.info.layer for x in layers] != list(range(n_cache)):
        raise ArchitectureError(
            f"{name}: the cache has {n_cache} layers but attention was called for layers "
            f"{[x.info.layer for x in layers]}"
        )
    shapes = {(x.info.kv_heads, x.info.head_dim) for x in layers}
    if len(shapes) > 1:
        raise ArchitectureError(
            f"{name}: layers differ in (KV heads, head_dim): {sorted(shapes)}; the warehouse stores one shape per model"
        )
    bad = [x.info.layer for x in layers if x.info.query_heads % x.info.kv_heads]
    if bad:
        raise ArchitectureError(f"{name}: layers {bad} have query heads not a multiple of KV heads")


def _scored_alike(a: _Layer, b: _Layer) -> bool:
    """Can two layers' window attention be computed in one batch (same scaling, softcap, window; no sinks)?"""
    how = lambda x: (x.info.scaling, x.info.softcap, x.info.sliding_window)  # noqa: E731
    return a.sinks is None and b.sinks is None and how(a) == how(b)


def _blocks(layers: list[_Layer], end: int, budget: int = 4 << 20) -> list[slice]:
    """Runs of consecutive layers scored alike, batched so the score tensor stays cache-sized (4 MiB measured
    2x faster than 64 MiB on the CPU)."""
    out: list[slice] = []
    for i, x in enumerate(layers):
        per_layer = x.info.query_heads * x.queries[end].shape[1] * end * 4
        if out and _scored_alike(layers[out[-1].start], x) and (i + 1 - out[-1].start) * per_layer <= budget:
            out[-1] = slice(out[-1].start, i + 1)
        else:
            out.append(slice(i, i + 1))
    return out


def received(layers: list[_Layer], keys: torch.Tensor, end: int) -> torch.Tensor:
    """[L, Hkv, end] float32: mean attention the `w` queries before `end` pay to each key before `end`.
    `keys` [L, Hkv, T, D] are the layers' keys stacked (each block reads a view of them, no copy)."""
    parts = []
    for block in _blocks(layers, end):
        q = torch.stack([x.queries[end] for x in layers[block]])  # [B, Hq, w, D]
        first = layers[block.start]
        pos = torch.arange(end - q.shape[2], end, device=keys.device)
        info = first.info
        p = attention.probabilities(q, keys[block, :, :end], pos, info.scaling, info.softcap, info.sliding_window,
                                    first.sinks)  # fmt: skip
        parts.append(p.mean(dim=(-3, -2)))
    return torch.cat(parts)


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
    use_ctx = context_end is not None and 0 < context_end < T
    ends = (T, context_end) if use_ctx else (T,)
    cache, layers, seconds = _capture(model, input_ids, ends, window)
    check_layers(model, layers, cache)
    keys = torch.stack([x.keys for x in layers])
    values = torch.stack([x.values for x in layers])
    attn = received(layers, keys, T)
    attn_ctx = None
    if context_end is not None:
        attn_ctx = torch.full_like(attn, float("nan"))
        if use_ctx:
            attn_ctx[..., :context_end] = received(layers, keys, context_end)
        else:
            attn_ctx.copy_(attn)
    return Prefill(cache, keys, values, attn, attn_ctx, min(window, T), seconds, [x.info for x in layers])


@torch.inference_mode()
def probe(model: torch.nn.Module, tokens: int = 16) -> list[LayerInfo]:
    """A few-token forward right after loading: the model's layers as the warehouse will see them, or an
    ArchitectureError naming what is not supported (a hybrid cache, attention outside the interface)."""
    device = next(model.parameters()).device
    vocab = int(getattr(model.config.get_text_config(), "vocab_size", 0) or 0) or 100
    ids = (torch.arange(tokens, device=device) % max(vocab - 1, 1) + 1)[None]
    cache, layers, _ = _capture(model, ids, (tokens,), 1)
    check_layers(model, layers, cache)
    return [x.info for x in layers]
