"""Apply a keep-set to a live transformers `DynamicCache`: gather the kept positions of every layer and KV head.

A keep-set is an int array [layers, kv_heads, K] of sorted cache positions, the same count K for every head
(what `transform.keep.keep_sets` returns). Positions shared by every head are sliced with `index_select`;
per-head sets are gathered head by head with `torch.gather`. Keys are cached after RoPE, so a kept key keeps
its original rotation: new tokens must be fed at their ORIGINAL absolute positions (see transform.decode).
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import DynamicCache


class KeepSetError(ValueError):
    """A keep-set does not fit the cache it is applied to."""


def cache_shape(cache: DynamicCache) -> tuple[int, int, int, int]:
    """(layers, kv_heads, seq_len, head_dim) of a batch-1 cache."""
    k = cache.layers[0].keys
    if k.shape[0] != 1:
        raise KeepSetError(f"eviction works on batch-1 caches, got batch {k.shape[0]}")
    return len(cache.layers), k.shape[1], k.shape[2], k.shape[3]


def kv_bytes(n_layers: int, n_kv_heads: int, n_positions: float, head_dim: int, element_size: int) -> int:
    """Bytes of keys + values for `n_positions` cached positions per head."""
    return int(round(2 * n_layers * n_kv_heads * n_positions * head_dim * element_size))


def cache_bytes(cache: DynamicCache) -> int:
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)


def copy_cache(cache: DynamicCache) -> DynamicCache:
    """An independent copy: decoding appends to a cache in place, so each policy decodes its own copy.

    `DynamicLayer.update` concatenates onto an empty tensor, so the new cache owns fresh storage
    (checked in tests/transform/test_evict.py).
    """
    return DynamicCache(ddp_cache_data=[(layer.keys, layer.values) for layer in cache.layers])


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


def evict(cache: DynamicCache, keep: np.ndarray) -> DynamicCache:
    """A compacted copy of `cache` holding only the kept positions of each (layer, kv_head); `cache` is unchanged."""
    return DynamicCache(ddp_cache_data=gather(cache, keep))


def gather(cache: DynamicCache, keep: np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The kept (keys, values) of every layer, [1, H_kv, K, D] each: what `evict` builds its cache from."""
    keep = check_keep(keep, cache_shape(cache))
    device = cache.layers[0].keys.device
    shared = bool((keep == keep[:1, :1]).all())
    data = []
    if shared:
        idx = torch.from_numpy(keep[0, 0]).to(device)
        data = [(layer.keys.index_select(2, idx), layer.values.index_select(2, idx)) for layer in cache.layers]
    else:
        idx_all = torch.from_numpy(keep).to(device)
        for i, layer in enumerate(cache.layers):
            idx = idx_all[i][None, :, :, None].expand(1, -1, -1, layer.keys.shape[-1])
            data.append((layer.keys.gather(2, idx), layer.values.gather(2, idx)))
    return data


def evict_(cache: DynamicCache, keep: np.ndarray) -> DynamicCache:
    """Compact `cache` in place (the brief's `evict_dynamic_cache_inplace`); returns it."""
    compact = evict(cache, keep)
    for layer, new in zip(cache.layers, compact.layers, strict=True):
        layer.keys, layer.values = new.keys, new.values
    return cache


def keep_all(n_layers: int, n_kv_heads: int, n_tokens: int) -> np.ndarray:
    """The keep-set that keeps everything (the full-cache reference)."""
    return np.broadcast_to(np.arange(n_tokens, dtype=np.int64), (n_layers, n_kv_heads, n_tokens))
