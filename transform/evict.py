"""Apply a keep-set to a live transformers `DynamicCache`: gather the kept positions of every layer and KV head.

A keep-set is an int array [layers, kv_heads, K] of sorted prompt positions, the same count K for every head
(what `transform.keep.keep_sets` returns). Positions shared by every head are sliced with `index_select`;
per-head sets are gathered head by head with `torch.gather`. Keys are cached after RoPE, so a kept key keeps
its original rotation: new tokens must be fed at their ORIGINAL absolute positions (see transform.decode).

Layer types are kept: a rebuilt cache has a sliding-window layer wherever the model's has one. Which layers a
keep-set evicts (`evicted_layers`): every full-attention layer, and a sliding layer whose window the sample
never outgrows (prompt + answer fit in it: the layer then attends like a full one, and evicting it is exact).
A sliding layer whose window does slide during the sample keeps what the model keeps, its last window - 1
positions, as kvpress leaves Gemma3's sliding layers uncompressed: the window is the model's own eviction,
and the layer's memory is bounded by it whatever the prompt's length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer


class KeepSetError(ValueError):
    """A keep-set does not fit the cache it is applied to."""


@dataclass
class LayerData:
    """What one rebuilt cache layer holds: keys/values [B, H_kv, n, D], its window, and positions it has seen."""

    keys: torch.Tensor
    values: torch.Tensor
    window: int | None = None  # a sliding layer's window; None: full attention
    seen: int = 0  # a sliding layer's cumulative length (what its masks count from); ignored for full layers


def held_by(layer, keys: torch.Tensor | None = None, values: torch.Tensor | None = None) -> LayerData:
    """What a live cache layer holds (or `keys`/`values` in its place: a copy, some batch rows), with its type
    and count."""
    keys = layer.keys if keys is None else keys
    return LayerData(keys, layer.values if values is None else values, window_of(layer), seen_of(layer))


def window_of(layer) -> int | None:
    return int(layer.sliding_window) if getattr(layer, "is_sliding", False) else None


def seen_of(layer) -> int:
    """Positions a layer has been fed (a sliding layer holds fewer)."""
    return int(layer.get_seq_length())


def make_layer(data: LayerData) -> DynamicLayer:
    """A cache layer of the right type holding `data`: DynamicLayer, or DynamicSlidingWindowLayer with its count."""
    layer = DynamicLayer() if data.window is None else DynamicSlidingWindowLayer(sliding_window=data.window)
    layer.lazy_initialization(data.keys, data.values)
    layer.keys, layer.values = data.keys, data.values
    if data.window is not None:
        layer.cumulative_length = data.seen
    return layer


def make_cache(layers: list) -> DynamicCache:
    """A DynamicCache of the given (already built) layers."""
    cache = DynamicCache(ddp_cache_data=[(None, None)] * len(layers))
    cache.layers[:] = layers
    return cache


def cache_shape(cache: DynamicCache) -> tuple[int, int, int, int]:
    """(layers, kv_heads, prompt positions seen, head_dim) of a batch-1 cache."""
    k = cache.layers[0].keys
    if k.shape[0] != 1:
        raise KeepSetError(f"eviction works on batch-1 caches, got batch {k.shape[0]}")
    return len(cache.layers), k.shape[1], max(seen_of(x) for x in cache.layers), k.shape[3]


def kv_bytes(n_layers: int, n_kv_heads: int, n_positions: float, head_dim: int, element_size: int) -> int:
    """Bytes of keys + values for `n_positions` cached positions per head."""
    return int(round(2 * n_layers * n_kv_heads * n_positions * head_dim * element_size))


def cache_bytes(cache: DynamicCache) -> int:
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)


def copy_cache(cache: DynamicCache) -> DynamicCache:
    """An independent copy with fresh storage: decoding appends to a cache, so each policy decodes its own."""
    return make_cache([make_layer(held_by(x, x.keys.clone(), x.values.clone())) for x in cache.layers])


def check_keep(keep: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Validate a keep-set against a cache shape; returns it as int64 [L, H, K]."""
    L, H, T, _ = shape
    keep = np.asarray(keep)
    if keep.ndim != 3 or keep.shape[:2] != (L, H):
        raise KeepSetError(f"keep-set shape {keep.shape} does not match the cache: expected ({L}, {H}, K)")
    if keep.shape[2] == 0:
        raise KeepSetError("keep-set is empty: a cache needs at least one kept position per head")
    if not np.issubdtype(keep.dtype, np.integer):
        raise KeepSetError(f"keep-set positions must be integers, got {keep.dtype}")
    if keep.min() < 0 or keep.max() >= T:
        raise KeepSetError(f"keep-set positions span {keep.min()}..{keep.max()}, the cache holds positions 0..{T - 1}")
    if keep.shape[2] > 1 and not (np.diff(keep, axis=2) > 0).all():
        raise KeepSetError("keep-set positions must be sorted and unique per (layer, kv_head)")
    return np.array(keep, dtype=np.int64)  # a writable copy (torch.from_numpy rejects read-only views)


def restrict(keep: np.ndarray, length: int) -> np.ndarray:
    """The part of a keep-set below `length` (e.g. the context prefix), still equal-sized per head."""
    keep = np.asarray(keep)
    mask = keep < length
    counts = mask.sum(axis=2)
    if counts.min() != counts.max():
        raise KeepSetError(
            f"keep-set keeps {counts.min()}..{counts.max()} positions below {length} depending on the head; "
            "a cache needs the same count per head"
        )
    return keep[mask].reshape(keep.shape[0], keep.shape[1], int(counts.flat[0]))


def evicted_layers(cache: DynamicCache, horizon: int | None = None) -> list[bool]:
    """Which layers a keep-set applies to (module docstring). `horizon`: the positions the sample will ever
    reach (prompt + answer); None = unknown, so every sliding layer keeps its window."""
    out = []
    for layer in cache.layers:
        window = window_of(layer)
        out.append(window is None or (horizon is not None and window >= horizon))
    return out


def gather(cache: DynamicCache, keep: np.ndarray, horizon: int | None = None) -> list[LayerData]:
    """The kept keys and values of every layer, [1, H_kv, K, D] each: what `evict` builds its cache from.
    Layers that `evicted_layers` leaves alone come back as they are."""
    keep = check_keep(keep, cache_shape(cache))
    device = cache.layers[0].keys.device
    evicted = evicted_layers(cache, horizon)
    shared = bool((keep == keep[:1, :1]).all())
    idx_shared = torch.from_numpy(keep[0, 0]).to(device) if shared else None
    idx_all = None if shared else torch.from_numpy(keep).to(device)
    data = []
    for i, layer in enumerate(cache.layers):
        if not evicted[i]:
            data.append(held_by(layer))
            continue
        if shared:
            k, v = layer.keys.index_select(2, idx_shared), layer.values.index_select(2, idx_shared)
        else:
            idx = idx_all[i][None, :, :, None].expand(1, -1, -1, layer.keys.shape[-1])
            k, v = layer.keys.gather(2, idx), layer.values.gather(2, idx)
        data.append(LayerData(k, v, window_of(layer), k.shape[2]))  # an evicted layer has seen what it holds
    return data


def evict(cache: DynamicCache, keep: np.ndarray, horizon: int | None = None) -> DynamicCache:
    """A compacted copy of `cache` holding only the kept positions of each (layer, kv_head); `cache` is unchanged."""
    return make_cache([make_layer(d) for d in gather(cache, keep, horizon)])


def evict_(cache: DynamicCache, keep: np.ndarray, horizon: int | None = None) -> DynamicCache:
    """Compact `cache` in place (the brief's `evict_dynamic_cache_inplace`); returns it."""
    cache.layers[:] = evict(cache, keep, horizon).layers
    return cache


def held(cache: DynamicCache, kept: int | None, horizon: int | None = None, rest: int = 0) -> list[int]:
    """Positions each layer holds once `rest` more prompt tokens are fed after evicting to `kept` per head
    (None = keep all): an evicted layer kept + rest, any other what the model keeps (a sliding layer at most
    its window - 1). What the K/V bytes of a quality row count."""
    out = []
    for layer, evicted in zip(cache.layers, evicted_layers(cache, horizon), strict=True):
        n = (kept if kept is not None and evicted else seen_of(layer)) + rest
        window = window_of(layer)
        out.append(n if window is None or (kept is not None and evicted) else min(n, window - 1))
    return out


def keep_all(n_layers: int, n_kv_heads: int, n_tokens: int) -> np.ndarray:
    """The keep-set that keeps everything (the full-cache reference)."""
    return np.broadcast_to(np.arange(n_tokens, dtype=np.int64), (n_layers, n_kv_heads, n_tokens))
