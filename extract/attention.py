"""The one seam to the model: transformers' attention interface.

Every decoder layer of a transformers 5 model calls
`ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, <its eager function>)` with
`(module, query, key, value, attention_mask, scaling=..., dropout=..., **kwargs)`. At that point the query
and key are final, whatever the architecture calls its projections (fused `qkv_proj`, q/k norms over the
head or the whole projection, RoPE), `key`/`value` are everything the layer attends over in this forward
(in a prefill: every prompt position, even on a sliding layer whose cache then keeps only its window), and
the kwargs carry the layer's `sliding_window`, `softcap` (Gemma2) and `s_aux` (attention sinks, gpt-oss).

`observe(model, fn)` routes one model's attention through a wrapper registered as `kvw|<implementation>`
(with the implementation's own mask function): each call is handed to `fn` as a `Call`, then the model's
own implementation (sdpa, eager, flash, flex) runs unchanged. Nothing here knows a module's attribute names.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

PREFIX = "kvw|"
_local = threading.local()  # per thread: the stack of active observers (the forward runs in the caller's thread)
_registered: set[str] = set()
_lock = threading.Lock()


@dataclass
class Call:
    """One layer's attention call, as the model made it."""

    layer: int  # the module's layer_idx (else the order of calls in this forward)
    module: torch.nn.Module
    query: torch.Tensor  # [B, Hq, q, D] after RoPE and norms
    key: torch.Tensor  # [B, Hkv, k, D]: every position the layer attends over in this forward
    value: torch.Tensor  # [B, Hkv, k, D]
    scaling: float  # the logit scale the layer uses (query_pre_attn_scalar and the like included)
    softcap: float | None  # logits -> softcap * tanh(logits / softcap) before the softmax (Gemma2)
    sliding_window: int | None  # a query at p sees keys p - sliding_window < t <= p; None: every earlier key
    sinks: torch.Tensor | None  # [Hq] logits of a per-head sink that takes softmax mass and gives nothing (gpt-oss)


def _inner(name: str, module: torch.nn.Module) -> Callable:
    """The implementation `name` as the model would call it; `eager` is the modeling file's own function
    (Gemma2's applies its softcap there, gpt-oss its sinks)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if name == "eager" or name not in ALL_ATTENTION_FUNCTIONS:
        fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        if fn is None:
            raise TypeError(f"{type(module).__name__}: its modeling file has no eager_attention_forward")
        return fn
    return ALL_ATTENTION_FUNCTIONS[name]


def _wrapper(inner_name: str) -> Callable:
    def attention(module, query, key, value, attention_mask, *args, **kwargs):
        observers = getattr(_local, "observers", None)
        if observers:
            obs = observers[-1]
            layer = getattr(module, "layer_idx", None)
            if layer is None:
                layer = obs.calls
            obs.calls += 1
            scaling = kwargs.get("scaling")
            obs.fn(
                Call(
                    layer=int(layer),
                    module=module,
                    query=query,
                    key=key,
                    value=value,
                    scaling=float(scaling) if scaling is not None else query.shape[-1] ** -0.5,
                    softcap=kwargs.get("softcap") or None,
                    sliding_window=kwargs.get("sliding_window") or None,
                    sinks=kwargs.get("s_aux"),
                )
            )
        # flash and kernel implementations look themselves up by the config's name: show them theirs meanwhile
        config = getattr(module, "config", None)
        shown = getattr(config, "_attn_implementation_internal", None)
        swap = isinstance(shown, str) and shown.startswith(PREFIX)
        if swap:
            config._attn_implementation_internal = inner_name
        try:
            return _inner(inner_name, module)(module, query, key, value, attention_mask, *args, **kwargs)
        finally:
            if swap:
                config._attn_implementation_internal = shown

    attention.__name__ = f"kvw_{inner_name}"
    return attention


def register(inner_name: str) -> str:
    """Register `kvw|<inner_name>` (attention and mask functions) once per process; returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    name = PREFIX + inner_name
    with _lock:
        if name not in _registered:
            AttentionInterface.register(name, _wrapper(inner_name))
            mask = ALL_MASK_ATTENTION_FUNCTIONS._global_mapping.get(inner_name)
            if mask is not None:  # an implementation without a mask function gets none, as unwrapped
                AttentionMaskInterface.register(name, mask)
            _registered.add(name)
    return name


def implementation(model: torch.nn.Module) -> str:
    """The attention implementation the model runs (without this module's wrapper)."""
    return str(model.config._attn_implementation or "eager").removeprefix(PREFIX)


@dataclass
class _Observer:
    fn: Callable[[Call], None]
    config: object
    calls: int = 0


@contextmanager
def observe(model: torch.nn.Module, fn: Callable[[Call], None]) -> Iterator[None]:
    """Within the block, every attention call of `model` made in this thread is handed to `fn` first."""
    config = model.config
    inner = implementation(model)
    before = config._attn_implementation
    config._attn_implementation = register(inner)
    stack = getattr(_local, "observers", None)
    if stack is None:
        stack = _local.observers = []
    stack.append(_Observer(fn, config))
    try:
        yield
    finally:
        stack.pop()
        if not any(o.config is config for o in stack):  # an outer block observing the same model keeps it
            config._attn_implementation = before


def visible(q_pos: torch.Tensor, k_len: int, sliding_window: int | None) -> torch.Tensor:
    """[q, k] bool: which keys 0..k_len-1 a query at each absolute position in `q_pos` attends to."""
    t = torch.arange(k_len, device=q_pos.device)
    ok = t[None] <= q_pos[:, None]
    if sliding_window:
        ok &= t[None] > q_pos[:, None] - sliding_window
    return ok


def probabilities(
    query: torch.Tensor,
    key: torch.Tensor,
    q_pos: torch.Tensor,
    scaling: float,
    softcap: float | None = None,
    sliding_window: int | None = None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """The layer's attention weights, computed as its eager implementation does, in float32.

    query [..., Hq, q, D] at absolute positions `q_pos` [q]; key [..., Hkv, k, D] at positions 0..k-1 ->
    [..., Hkv, Hq // Hkv, q, k]: each query head grouped under the KV head it reads.
    """
    *lead, hq, nq, d = query.shape
    hkv, k = key.shape[-3], key.shape[-2]
    q = query.float().reshape(*lead, hkv, hq // hkv, nq, d)
    scores = torch.einsum("...hgqd,...htd->...hgqt", q, key.float()) * scaling
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    scores.masked_fill_(~visible(q_pos.to(key.device), k, sliding_window), float("-inf"))
    if sinks is None:
        return scores.softmax(-1)
    sink = sinks.float().to(scores.device).reshape(hkv, hq // hkv, 1, 1).expand(*scores.shape[:-1], 1)
    return torch.cat([scores, sink], -1).softmax(-1)[..., :-1]
