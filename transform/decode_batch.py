"""Decode the policies of one prefill together: one forward per step serves every compacted cache of equal length.

After one prefill, each policy's cache is a compacted copy of the same prompt. Copies holding the same number
of positions (policies sharing a budget: per-head ones keep exactly K per head, shared ones K too) are stacked
along the batch dim of one DynamicCache. Every row is fed at the SAME original absolute positions (RoPE
continues from the prompt's length, never the compacted one) with no attention mask: each row attends to its
whole cache, which is why a batch needs equal lengths and copies of other lengths go to other batches (`groups`).
Decoding is memory- and overhead-bound at batch 1 on CPU, so a step for 8 rows costs little more than for one.

A batched matmul may round differently from batch 1 in the last float bits: logits agree to ~1e-5 and greedy
tokens equal transform.decode's per-policy loop unless two logits tie that closely. The single-policy functions
in transform.decode stay the reference (tests/transform/test_decode_batch.py compares the two).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from transform.decode import Prefix, forward_batch
from transform.evict import KeepSetError, LayerData, gather, held_by, make_cache, make_layer, restrict

ROOM = 128  # positions of spare room a batch cache grows by at a time


class RoomyLayer(DynamicLayer):
    """A DynamicLayer that writes new positions into spare room instead of concatenating its whole cache.

    DynamicLayer copies every layer's cache at each step (torch.cat); at batch 8 that took a third of a
    decode step. Here `keys`/`values` are views of buffers grown by `grow` positions at a time.
    """

    grow = ROOM

    def __init__(self, batch: int, like: torch.Tensor, length: int):
        super().__init__()
        self.lazy_initialization(like, like)
        b, h, _, d = like.shape
        self._keys = like.new_empty(batch, h, length + ROOM, d)
        self._values = like.new_empty(batch, h, length + ROOM, d)
        self._n = length
        self._views()

    def _views(self) -> None:
        self.keys, self.values = self._keys[:, :, : self._n], self._values[:, :, : self._n]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self._n + key_states.shape[-2]
        if end > self._keys.shape[-2]:
            grown = [t.new_empty(*t.shape[:2], end + self.grow, t.shape[-1]) for t in (self._keys, self._values)]
            grown[0][:, :, : self._n], grown[1][:, :, : self._n] = self.keys, self.values
            self._keys, self._values = grown
        self._keys[:, :, self._n : end], self._values[:, :, self._n : end] = key_states, value_states
        self._n = end
        self._views()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._keys, self._values = self._keys.index_select(0, indices), self._values.index_select(0, indices)
        self._views()


def stack(rows: Sequence[Sequence[LayerData]]) -> DynamicCache:
    """One cache whose batch rows are the given per-layer data [1, H, n, D] (transform.evict.LayerData); a layer
    holds the same count in every row. Full layers get spare room (RoomyLayer); sliding ones keep their type."""
    layers = []
    for i in range(len(rows[0])):
        parts = [row[i] for row in rows]
        lengths = sorted({p.keys.shape[2] for p in parts})
        if len(lengths) != 1:
            raise KeepSetError(f"caches of one batch need the same length, got lengths {lengths} in layer {i}")
        first = parts[0]
        if first.window is None:
            layer = RoomyLayer(len(rows), first.keys, lengths[0])
            for b, p in enumerate(parts):
                layer._keys[b, :, : lengths[0]], layer._values[b, :, : lengths[0]] = p.keys[0], p.values[0]
        else:
            keys = torch.cat([p.keys for p in parts]) if len(parts) > 1 else first.keys
            values = torch.cat([p.values for p in parts]) if len(parts) > 1 else first.values
            layer = make_layer(LayerData(keys, values, first.window, first.seen))
        layers.append(layer)
    return make_cache(layers)


@dataclass
class Batch:
    """Caches of equal length stacked on dim 0, ready to generate: each row's next-token logits, one position."""

    cache: DynamicCache  # [B, H_kv, K, D] per layer
    logits: torch.Tensor  # [B, vocab] float32
    position: int  # absolute position of the next token, the same for every row
    rows: list[int]  # each row's index in the caller's list (e.g. of keep-sets)

    def __len__(self) -> int:
        return len(self.rows)


def kept_length(prefix: Prefix, keep: np.ndarray | None) -> int:
    """Positions a keep-set (None = keep all) leaves in the prefix cache."""
    return prefix.length if keep is None else restrict(keep, prefix.length).shape[2]


def groups(prefix: Prefix, keeps: Sequence[np.ndarray | None], max_batch: int = 8) -> list[list[int]]:
    """Indices into `keeps` whose caches have equal length, in first-seen order, at most `max_batch` per group."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    by_length: dict[int, list[int]] = {}
    for i, keep in enumerate(keeps):
        by_length.setdefault(kept_length(prefix, keep), []).append(i)
    return [rows[j : j + max_batch] for rows in by_length.values() for j in range(0, len(rows), max_batch)]


@torch.inference_mode()
def resume_batch(model, prefix: Prefix, keeps: Sequence[np.ndarray | None], rows: Sequence[int] | None = None) -> Batch:
    """Evict a copy of the prefix cache per keep-set (None = keep all; equal lengths), stack them, then feed the
    rest of the prompt (question_agnostic) once for every row. `rows` labels the rows (default 0..B-1)."""
    if not keeps:
        raise ValueError("no keep-sets to resume")
    labels = list(range(len(keeps))) if rows is None else list(rows)
    if len(labels) != len(keeps):
        raise ValueError(f"{len(labels)} row labels for {len(keeps)} keep-sets")
    full = [held_by(x) for x in prefix.cache.layers]
    cache = stack(
        [full if k is None else gather(prefix.cache, restrict(k, prefix.length), prefix.horizon) for k in keeps]
    )
    n = len(keeps)
    if len(prefix.rest):
        logits = forward_batch(model, prefix.rest[None].expand(n, -1), cache, prefix.length)[:, -1]
    else:
        logits = prefix.logits[None].expand(n, -1)
    return Batch(cache, logits, prefix.n_tokens, labels)


def select(batch: Batch, idx: Sequence[int]) -> Batch:
    """An independent copy of some rows (by place in the batch): decoding and teacher forcing extend a cache."""
    idx = list(idx)
    if hasattr(batch.cache, "rows"):  # a transform.masked.SharedCache copies its rows' own positions only
        return Batch(batch.cache.rows(idx), batch.logits[idx], batch.position, [batch.rows[i] for i in idx])
    layers = batch.cache.layers
    cache = stack([[held_by(x, x.keys[i : i + 1], x.values[i : i + 1]) for x in layers] for i in idx])
    return Batch(cache, batch.logits[idx], batch.position, [batch.rows[i] for i in idx])


def fork(batch: Batch) -> Batch:
    return select(batch, range(len(batch)))


@torch.inference_mode()
def greedy_batch(
    model,
    batch: Batch,
    max_new_tokens: int,
    eos_ids: set[int] | frozenset[int] = frozenset(),
    min_new_tokens: int = 0,
    scores: list | None = None,
) -> list[list[int]]:
    """Greedy tokens of every row, in row order, as transform.decode.greedy gives them one by one.

    A row stops at an EOS (included) or `max_new_tokens` and leaves the batch (its cache rows are dropped), so
    finished rows cost nothing. Consumes `batch.cache`. Given a list, `scores` receives each row's logits
    [new tokens, vocab] as computed (before the `min_new_tokens` EOS suppression).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    out: list[list[int]] = [[] for _ in batch.rows]
    steps: list[list[torch.Tensor]] = [[] for _ in batch.rows]
    live = list(range(len(batch)))  # places in `out` of the cache's rows, in cache order
    logits, pos, cache = batch.logits, batch.position, batch.cache
    eos = torch.tensor(sorted(eos_ids), dtype=torch.long, device=logits.device)
    step = 0
    while True:
        if scores is not None:
            for j, row in enumerate(live):
                steps[row].append(logits[j])
        if step < min_new_tokens and len(eos):
            logits = logits.index_fill(1, eos, float("-inf"))
        tokens = logits.argmax(-1).tolist()
        step += 1
        for row, token in zip(live, tokens, strict=True):
            out[row].append(token)
        going = [j for j, token in enumerate(tokens) if token not in eos_ids]
        if step >= max_new_tokens or not going:
            break
        if len(going) < len(live):
            index = torch.tensor(going, dtype=torch.long, device=logits.device)
            for layer in cache.layers:
                layer.batch_select_indices(index)
            live, tokens = [live[j] for j in going], [tokens[j] for j in going]
        logits = forward_batch(model, torch.tensor(tokens)[:, None], cache, pos)[:, -1]
        pos += 1
    if scores is not None:
        scores.extend(torch.stack(s) for s in steps)
    return out


@torch.inference_mode()
def answer_logprobs_batch(model, batch: Batch, answer_ids: list[int] | np.ndarray) -> torch.Tensor:
    """Teacher forcing of one answer in every row: log-probabilities [B, m, vocab]; extends `batch.cache`.

    Row i of each block is transform.decode.answer_logprobs of that row's cache.
    """
    ids = torch.as_tensor(np.asarray(answer_ids), dtype=torch.long)
    if ids.numel() == 0:
        raise ValueError("answer has no tokens")
    parts = [batch.logits[:, None]]
    if ids.numel() > 1:
        parts.append(
            forward_batch(model, ids[:-1][None].expand(len(batch), -1), batch.cache, batch.position, logits_to_keep=0)
        )
    return torch.cat(parts, 1).log_softmax(-1)
