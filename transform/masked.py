"""Masked sweep decoding: every policy of a sample decodes in one batch over ONE copy of the full cache.

Attention restricted to the kept positions is eviction: a softmax over the kept keys only, RoPE positions
untouched. So the rows of a batch (one per policy x budget) share the prefill's keys and values, read once
per step for every row, and differ by a keep mask [rows, kv_heads, positions] per layer. Each row owns only
what it appends itself (the question in question_agnostic, generated and teacher-forced tokens), in a small
buffer of its own. Rows may keep different counts per head and per layer; nothing is compacted or copied.

The attention runs through transformers' attention interface (registered as `kvw_masked`, without a mask
function, so the model builds no mask): `SharedCache.attending(model)` switches the model to it for one
forward, and each layer's call finds its shared keys, mask and own keys in the active cache by `layer_idx`.
The math is the eager implementation's (scaling, softcap, sliding window, sinks, float32 softmax), with the
shared keys folded into one [kv_heads, rows x queries, positions] matmul so they are read once per layer.
transform.decode_batch's compacted copies stay the reference (tests/transform/test_masked.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from transform.decode import Prefix, forward_batch
from transform.decode_batch import ROOM, Batch, RoomyLayer
from transform.evict import check_keep, evicted_layers, make_cache, seen_of, window_of

NAME = "kvw_masked"
FLOOR = -87.0  # softmax scores below the top one by more than this count as exp(-87): see _block
GROW = 16  # positions a row's own buffer grows by when a forward appends more than it was sized for
SCORE_BYTES = 16 << 20  # attention scores computed per block of rows: bounds a layer's transient memory
_local = threading.local()
_lock = threading.Lock()


class SharedLayer(RoomyLayer):
    """One layer: the prefill's keys/values [1, H, P, D] shared by every row, each row's keep mask over them
    [rows, H, P] (None: every row keeps all), and each row's own appended keys/values [rows, H, a, D]."""

    grow = GROW  # its buffers are sized to the horizon: growing is the exception

    def __init__(
        self, keys, values, window: int | None, end: int, mask: torch.Tensor | None, rows: int, room: int = ROOM
    ):
        DynamicLayer.__init__(self)  # RoomyLayer's own __init__ sizes a batch cache; these buffers are the rows'
        self.lazy_initialization(keys, values)
        self.shared_keys, self.shared_values = keys, values
        self.window, self.end, self.mask = window, end, mask  # shared positions are end - P .. end - 1
        self.is_sliding = window is not None
        if window is not None:
            self.sliding_window = window
        _, h, _, d = keys.shape
        self._keys = keys.new_empty(rows, h, room, d)  # `room`: the positions the rows will append
        self._values = values.new_empty(rows, h, room, d)
        self._n = 0
        self._views()

    def get_seq_length(self) -> int:
        return self.end + self._n  # absolute: what the model counts positions from

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.end + self._n + query_length, 0

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        if self.mask is not None:
            self.mask = self.mask.index_select(0, indices)

    def rows(self, idx: Sequence[int]) -> SharedLayer:
        """A copy holding some rows (their own positions copied; the shared keys are not)."""
        index = torch.tensor(list(idx), dtype=torch.long, device=self._keys.device)
        mask = None if self.mask is None else self.mask.index_select(0, index)
        room = self._keys.shape[2]
        out = SharedLayer(self.shared_keys, self.shared_values, self.window, self.end, mask, len(idx), room)
        out.update(self.keys.index_select(0, index), self.values.index_select(0, index))
        return out

    def own_bytes(self) -> int:
        """Its rows' own positions and masks (and, once attention has run, the mask as scores and as indices)."""
        extra = [self.mask, getattr(self, "_bias", None), *getattr(self, "_kept", ())]
        return self._keys.nbytes + self._values.nbytes + sum(t.nbytes for t in extra if t is not None)

    def bias(self) -> torch.Tensor:
        """The keep mask as float32 scores to add, [H, rows, 1, P]: 0 kept, -inf evicted (computed once per mask)."""
        if getattr(self, "_bias_for", None) is not self.mask:
            drop = ~self.mask.transpose(0, 1)[:, :, None]
            self._bias = torch.zeros(drop.shape, device=drop.device).masked_fill_(drop, float("-inf"))
            self._bias_for = self.mask
        return self._bias

    def kept(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's kept shared positions, first to last, padded to the most any row keeps: index
        [rows, H, K] into the shared keys, and which entries are real [rows, H, K] (computed once per mask)."""
        if getattr(self, "_kept_for", None) is not self.mask:
            mask = self.mask
            counts = mask.sum(-1)
            k = max(1, int(counts.max()))
            order = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True)[..., :k]
            self._kept = order, torch.arange(k, device=mask.device)[None, None] < counts[..., None]
            self._kept_for = mask
        return self._kept


class SharedCache(DynamicCache):
    """A DynamicCache of SharedLayers; `attending(model)` is how a forward reads it (transform.decode.forward_batch)."""

    @classmethod
    def of(cls, layers: list[SharedLayer]) -> SharedCache:
        cache = make_cache(layers)
        cache.__class__ = cls
        return cache

    @contextmanager
    def attending(self, model) -> Iterator[None]:
        """Within the block, `model`'s attention in this thread is the masked attention over this cache."""
        config = model.config
        before = config._attn_implementation
        config._attn_implementation = _register()
        previous = getattr(_local, "cache", None)
        _local.cache = self
        try:
            yield
        finally:
            _local.cache = previous
            config._attn_implementation = before

    def rows(self, idx: Sequence[int]) -> SharedCache:
        return SharedCache.of([layer.rows(idx) for layer in self.layers])

    def own_bytes(self) -> int:
        """Memory this cache holds beyond the shared prefill: each row's positions and masks."""
        return sum(layer.own_bytes() for layer in self.layers)


def _register() -> str:
    from transformers import AttentionInterface

    with _lock:
        if NAME not in AttentionInterface._global_mapping:
            AttentionInterface.register(NAME, attention)
    return NAME


def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The layer's attention over its shared keys (masked per row and head) and each row's own keys.

    query [N, Hq, q, D] at the q positions before the cache's end; key/value [N, Hkv, a, D]: each row's own
    positions (this forward's included). Returns [N, q, Hq, D], as transformers' implementations do.
    """
    cache = getattr(_local, "cache", None)
    layer_idx = getattr(module, "layer_idx", None)
    if cache is None or layer_idx is None:
        raise RuntimeError("kvw_masked attention runs only inside SharedCache.attending, on modules with layer_idx")
    if attention_mask is not None:
        raise RuntimeError("kvw_masked attention builds its own masks; the model passed one")
    layer: SharedLayer = cache.layers[layer_idx]
    n, hq, q, d = query.shape
    a, p = key.shape[2], layer.shared_keys.shape[2]
    scaling = d**-0.5 if scaling is None else scaling
    window = kwargs.get("sliding_window") or layer.window
    softcap, sinks = kwargs.get("softcap") or None, kwargs.get("s_aux")
    per_row = max(1, SCORE_BYTES // max(1, hq * q * (p + a) * 4))
    # several queries per row (the rest of the prompt, teacher forcing): each row's kept keys gathered and one
    # fused sdpa over them beats scoring every shared position; one query per row (a decode step): reading the
    # shared keys once for every row beats copying each row's kept ones
    gather = q > 1 and layer.mask is not None and softcap is None and sinks is None
    blocks = []
    for j in range(0, n, per_row):
        rows = slice(j, j + per_row)
        if gather:
            blocks.append(_gathered(layer, query[rows], key[rows], value[rows], j, scaling, window))
        else:
            blocks.append(_block(layer, query[rows], key[rows], value[rows], j, scaling, softcap, sinks, window))
    return torch.cat(blocks) if len(blocks) > 1 else blocks[0], None


def _block(layer: SharedLayer, query, key, value, first: int, scaling, softcap, sinks, window):
    """Attention of rows first.. of the batch; scores in float32 (the eager implementations' softmax dtype)."""
    n, hq, q, d = query.shape
    hkv, a, p = key.shape[1], key.shape[2], layer.shared_keys.shape[2]
    g, device = hq // hkv, query.device
    qg = (query * scaling).reshape(n, hkv, g * q, d)  # rows of a KV head's block: (query head in group, query)
    # the shared keys, read once for every row: [Hkv, N * g * q, D] @ [Hkv, D, P]
    shared = torch.bmm(qg.transpose(0, 1).reshape(hkv, n * g * q, d), layer.shared_keys[0].transpose(1, 2))
    shared = shared.view(hkv, n, g * q, p).float()
    own = torch.matmul(qg, key.transpose(2, 3)).float()  # [N, Hkv, g * q, a]
    if softcap:
        shared.div_(softcap).tanh_().mul_(softcap)
        own.div_(softcap).tanh_().mul_(softcap)
    if layer.mask is not None:
        shared.add_(layer.bias()[:, first : first + n])
    q_pos = layer.end + a - q + torch.arange(q, device=device)
    if window and int(q_pos[-1]) - window >= layer.end - p:  # some shared positions slid out of the window
        gone = torch.arange(layer.end - p, layer.end, device=device)[None] <= q_pos[:, None] - window
        shared.masked_fill_(gone.repeat(g, 1), float("-inf"))
    if q > 1 or window:
        k_pos = layer.end + torch.arange(a, device=device)
        hidden = k_pos[None] > q_pos[:, None]
        if window:
            hidden |= k_pos[None] <= q_pos[:, None] - window
        own.masked_fill_(hidden.repeat(g, 1), float("-inf"))
    top = torch.maximum(shared.amax(-1).transpose(0, 1), own.amax(-1))  # [N, Hkv, g * q]
    if sinks is not None:
        sink = sinks.float().reshape(1, hkv, g, 1).expand(n, hkv, g, q).reshape(n, hkv, g * q)
        top = torch.maximum(top, sink)
    # masked scores are -inf, and exp of -inf or of anything below ~-87 (a denormal) takes 5-25x longer on a CPU
    # than of a normal number: floor them at FLOOR, whose exp (1.6e-38) is below float32's resolution of any sum
    # that includes the top score's exp(0) = 1
    shared.sub_(top.transpose(0, 1)[..., None]).clamp_min_(FLOOR).exp_()
    own.sub_(top[..., None]).clamp_min_(FLOOR).exp_()
    total = shared.sum(-1).transpose(0, 1) + own.sum(-1)
    if sinks is not None:
        total += (sink - top).exp()
    dtype = value.dtype
    out = torch.bmm(shared.to(dtype).view(hkv, n * g * q, p), layer.shared_values[0])
    out = out.view(hkv, n, g * q, d).transpose(0, 1) + torch.matmul(own.to(dtype), value)
    out = out / total[..., None].to(dtype)
    return out.reshape(n, hq, q, d).transpose(1, 2).contiguous()


def _gathered(layer: SharedLayer, query, key, value, first: int, scaling, window):
    """Rows first.. : each row's kept shared keys gathered next to its own, one sdpa call (no softcap, no sinks)."""
    n, hq, q, d = query.shape
    hkv, a = key.shape[1], key.shape[2]
    g, device = hq // hkv, query.device
    order, real = (t[first : first + n] for t in layer.kept())
    p = layer.shared_keys.shape[2]
    rows = (order + torch.arange(hkv, device=device)[None, :, None] * p).flatten()  # into [H * P, D]
    k = order.shape[2]
    keys = torch.cat([layer.shared_keys[0].reshape(hkv * p, d).index_select(0, rows).view(n, hkv, k, d), key], 2)
    values = torch.cat([layer.shared_values[0].reshape(hkv * p, d).index_select(0, rows).view(n, hkv, k, d), value], 2)
    q_pos = layer.end + a - q + torch.arange(q, device=device)
    own_pos = layer.end + torch.arange(a, device=device)
    own = own_pos[None] <= q_pos[:, None]  # [q, a]
    if window:
        own &= own_pos[None] > q_pos[:, None] - window
        shared_pos = layer.end - layer.shared_keys.shape[2] + order  # [n, H, K]
        shared = real[:, :, None] & (shared_pos[:, :, None] > q_pos[None, None, :, None] - window)  # [n, H, q, K]
        shared = shared.repeat(1, 1, g, 1)
    else:
        shared = real[:, :, None].expand(-1, -1, g * q, -1)
    allowed = torch.cat([shared, own.repeat(g, 1)[None, None].expand(n, hkv, -1, -1)], -1)
    qg = query.reshape(n, hkv, g * q, d)
    out = F.scaled_dot_product_attention(qg, keys, values, attn_mask=allowed, scale=scaling)
    return out.reshape(n, hq, q, d).transpose(1, 2).contiguous()


def masks(prefix: Prefix, keeps: Sequence[np.ndarray | None]) -> list[torch.Tensor | None]:
    """Per layer, each row's keep mask [rows, H, positions held] (None where every row keeps the layer whole:
    keep-all rows, layers a keep-set leaves alone). Positions from the prefix's end on (question_agnostic's rest)
    are each row's own and always kept."""
    cache = prefix.cache
    shape = (len(cache.layers), cache.layers[0].keys.shape[1], prefix.n_tokens, 0)
    arrays = [None if keep is None else check_keep(keep, shape) for keep in keeps]
    length, out = prefix.length, []
    for i, (layer, evicted) in enumerate(zip(cache.layers, evicted_layers(cache, prefix.horizon), strict=True)):
        if not evicted or all(k is None for k in arrays):
            out.append(None)
            continue
        held = layer.keys.shape[2]  # an evicted layer holds every prefix position: held == length
        m = torch.ones(len(keeps), shape[1], held + 1, dtype=torch.bool)
        for r, keep in enumerate(arrays):
            if keep is not None:
                m[r] = False
                m[r].scatter_(1, torch.from_numpy(np.where(keep[i] < length, keep[i] - (length - held), held)), True)
        out.append(m[..., :held].contiguous().to(layer.keys.device))
    return out


@torch.inference_mode()
def resume(model, prefix: Prefix, keeps: Sequence[np.ndarray | None], rows: Sequence[int] | None = None) -> Batch:
    """A batch with one row per keep-set (None = keep all) over the prefill's cache, the rest of the prompt fed
    through each row's masked context (question_agnostic), ready to decode with transform.decode_batch."""
    if not keeps:
        raise ValueError("no keep-sets to resume")
    labels = list(range(len(keeps))) if rows is None else list(rows)
    if len(labels) != len(keeps):
        raise ValueError(f"{len(labels)} row labels for {len(keeps)} keep-sets")
    # room for what the rows append: the rest of the prompt and the answer (prefix.horizon counts both)
    room = (prefix.horizon or prefix.n_tokens + ROOM) - prefix.length
    layers = [
        SharedLayer(x.keys, x.values, window_of(x), seen_of(x), m, len(keeps), room)
        for x, m in zip(prefix.cache.layers, masks(prefix, keeps), strict=True)
    ]
    cache = SharedCache.of(layers)
    n = len(keeps)
    if len(prefix.rest):
        logits = forward_batch(model, prefix.rest[None].expand(n, -1), cache, prefix.length)[:, -1]
    else:
        logits = prefix.logits[None].expand(n, -1)
    return Batch(cache, logits, prefix.n_tokens, labels)


ROW_BYTES = 1 << 30  # activation memory a masked forward may take (CPU); on a GPU a quarter of what is free


def max_rows(model, prefix: Prefix, budget: int | None = None) -> int:
    """How many rows one masked batch may hold: the widest forward (the rest of the prompt, fed to every row at
    once) must fit `budget` bytes of activations next to the shared cache (each row's own cache is small)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    param = next(model.parameters())
    if budget is None:
        budget = ROW_BYTES
        if param.device.type == "cuda":
            budget = torch.cuda.mem_get_info(param.device)[0] // 4
    q = max(1, len(prefix.rest))
    hidden = int(config.hidden_size)
    inner = int(getattr(config, "intermediate_size", None) or 4 * hidden)
    heads = int(config.num_attention_heads)
    per_row = q * (4 * hidden + 3 * inner + heads * (prefix.length + q)) * param.element_size()
    return max(1, int(budget // per_row))
