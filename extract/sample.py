"""One LongBench sample -> the Arrow tables of the warehouse (tokens, token_stats, layer_stats, kv, samples)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import torch

from extract import needle, stats
from extract.capture import prefill
from extract.longbench import LongBench, Sample
from extract.model import Loaded
from extract.prompts import Prompt, build_prompt
from warehouse import schemas

# One sample at a time on the accelerator. Threads extracting several samples queue here for the prefill and
# the statistics, while tokenizing the next prompt and writing the last sample's Parquet overlap it: on a GPU
# those CPU steps cost 4-6x the prefill, so run one after the other they, not the model, set the pace.
DEVICE_LOCK = threading.Lock()


@dataclass(frozen=True)
class StatsConfig:
    """What to compute per sample. Changing any field changes the data, so it is part of the run id."""

    window: int = 32  # observation window: attention received is paid by the last `window` queries
    sparsity_rel: float = stats.SPARSITY_REL
    raw_kv: bool = False  # also store raw key/value vectors (the `kv` table)
    raw_kv_layers: tuple[int, ...] | None = None  # None = every layer
    raw_kv_heads: tuple[int, ...] | None = None  # None = every KV head
    raw_kv_positions: int = 256  # evenly spaced positions kept per sample

    def __post_init__(self):
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.raw_kv_positions < 1:
            raise ValueError(f"raw_kv_positions must be >= 1, got {self.raw_kv_positions}")


def _const(value: str, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.string()), n)


def _key_columns(run_id: str, model: str, sample: Sample, n: int) -> dict[str, pa.Array]:
    return {
        "run_id": _const(run_id, n),
        "model": _const(model, n),
        "task": _const(sample.task, n),
        "sample_id": _const(sample.sample_id, n),
    }


def _grid(L: int, H: int, T: int) -> dict[str, np.ndarray]:
    """layer, kv_head, position columns for a [L, H, T] tensor flattened in C order."""
    return {
        "layer": np.repeat(np.arange(L, dtype=np.int16), H * T),
        "kv_head": np.tile(np.repeat(np.arange(H, dtype=np.int16), T), L),
        "position": np.tile(np.arange(T, dtype=np.int32), L * H),
    }


def _np(t: torch.Tensor, dtype=np.float32) -> np.ndarray:
    return t.detach().float().cpu().numpy().astype(dtype, copy=False).reshape(-1)


def round_mantissa(x: np.ndarray, bits: int = 10) -> np.ndarray:
    """float32 rounded to `bits` mantissa bits (float16's 10 by default), keeping float32's exponent range.

    Attention received spans 1e-14..1, beyond float16; zeroing the noise bits lets zstd
    halve the column while keeping float16's 3 significant digits.
    """
    drop = 23 - bits
    u = x.astype(np.float32, copy=False).view(np.uint32)
    u = (u + np.uint32(1 << (drop - 1))) & np.uint32(~((1 << drop) - 1) & 0xFFFFFFFF)
    return u.view(np.float32)


def tokens_table(keys: dict, prompt: Prompt) -> pa.Table:
    n = prompt.n_tokens
    return pa.table(
        {
            **keys,
            "position": np.arange(n, dtype=np.int32),
            "token_id": prompt.input_ids.astype(np.int32),
            "token_text": pa.array(prompt.texts, pa.string()),
            "category": pa.array(prompt.categories, pa.string()).dictionary_encode(),
            "segment": pa.array(prompt.segments, pa.string()).dictionary_encode(),
        }
    )


def token_stats_table(keys: dict, ts: dict[str, torch.Tensor], attn: torch.Tensor, attn_ctx: torch.Tensor) -> pa.Table:
    L, H, T = attn.shape
    cols = {name: _np(t, np.float16) for name, t in ts.items()}
    ctx = round_mantissa(_np(attn_ctx))
    return pa.table(
        {
            **keys,
            **_grid(L, H, T),
            **cols,
            "attn_received": round_mantissa(_np(attn)),
            "attn_received_context": pa.array(ctx, mask=np.isnan(ctx)),
        }
    )


def layer_stats_table(keys: dict, ls: dict[str, torch.Tensor]) -> pa.Table:
    L, H = next(iter(ls.values())).shape
    grid = {"layer": np.repeat(np.arange(L, dtype=np.int16), H), "kv_head": np.tile(np.arange(H, dtype=np.int16), L)}
    return pa.table({**keys, **grid, **{name: _np(t) for name, t in ls.items()}})


def raw_kv_positions(n_tokens: int, k: int) -> np.ndarray:
    """Up to k positions spread evenly over the sequence, first and last included."""
    return np.unique(np.round(np.linspace(0, n_tokens - 1, min(k, n_tokens))).astype(np.int64))


def kv_table(run_id, model, sample, K, V, cfg: StatsConfig) -> pa.Table:
    L, H, T, D = K.shape
    layers = list(cfg.raw_kv_layers) if cfg.raw_kv_layers is not None else list(range(L))
    heads = list(cfg.raw_kv_heads) if cfg.raw_kv_heads is not None else list(range(H))
    bad = [x for x in layers if not 0 <= x < L] + [x for x in heads if not 0 <= x < H]
    if bad:
        raise ValueError(f"raw_kv layer/head index out of range: {bad} (model has {L} layers, {H} KV heads)")
    pos = raw_kv_positions(T, cfg.raw_kv_positions)
    sel = lambda x: x[layers][:, heads][:, :, pos]  # noqa: E731
    k, v = sel(K), sel(V)
    n = len(layers) * len(heads) * len(pos)
    grid = {
        "layer": np.repeat(np.asarray(layers, np.int16), len(heads) * len(pos)),
        "kv_head": np.tile(np.repeat(np.asarray(heads, np.int16), len(pos)), len(layers)),
        "position": np.tile(pos.astype(np.int32), len(layers) * len(heads)),
    }
    vec = lambda x: pa.FixedSizeListArray.from_arrays(pa.array(_np(x, np.float16)), D)  # noqa: E731
    return pa.table({**_key_columns(run_id, model, sample, n), **grid, "key": vec(k), "value": vec(v)})


def samples_table(
    keys: dict, sample: Sample, prompt: Prompt, lb: LongBench, prefill_s: float, stats_s: float
) -> pa.Table:
    row = {
        **{k: v[0].as_py() for k, v in keys.items()},
        "language": sample.language,
        "answers": sample.answers,
        "all_classes": sample.all_classes,
        "length_words": sample.length,
        "n_tokens": prompt.n_tokens,
        "n_tokens_original": prompt.n_original,
        "truncated": prompt.truncated,
        "chat_template": prompt.chat,
        **prompt.ranges(),
        "max_new_tokens": lb.maxlens.get(sample.task),
        "source": sample.source,
        "source_dir": sample.source_dir or str(lb.root),
        "source_file": sample.source_file,
        "source_line": sample.source_line,
        "source_sha256": sample.source_sha256 or None,
        "prefill_seconds": prefill_s,
        "stats_seconds": stats_s,
        "extracted_at": datetime.now(UTC),
    }
    return pa.Table.from_pylist([row], schema=schemas.SAMPLES.schema)


def extract_sample(
    loaded: Loaded, lb: LongBench, sample: Sample, run_id: str, max_tokens: int, cfg: StatsConfig
) -> dict[str, pa.Table]:
    """Prefill one sample and compute every table; nothing is written here."""
    prompt = build_prompt(loaded.tokenizer, lb.prompts[sample.task], sample, max_tokens)
    ranges = prompt.ranges()
    n = prompt.n_tokens
    kv = None
    with DEVICE_LOCK:  # the accelerator's part: prefill, then statistics reduced to small CPU tensors
        pf = prefill(loaded.model, torch.from_numpy(prompt.input_ids), cfg.window, ranges["context_end"])
        t0 = time.perf_counter()
        K, V = pf.keys, pf.values
        if K.shape[2] != n:
            raise RuntimeError(f"the prefill captured {K.shape[2]} key positions for a {n}-token prompt")
        L, H = K.shape[:2]
        ts, ls = stats.token_stats(K, V), stats.layer_stats(K, V, cfg.sparsity_rel)
        attn, attn_ctx = (None if t is None else t.float().cpu() for t in (pf.attn_received, pf.attn_received_context))
        if cfg.raw_kv:
            kv = kv_table(run_id, loaded.name, sample, K, V, cfg)
        prefill_s = pf.seconds
        del pf, K, V  # the cache goes back to the allocator before the next sample's prefill
    ts_keys = _key_columns(run_id, loaded.name, sample, L * H * n)
    tables = {
        "tokens": tokens_table(_key_columns(run_id, loaded.name, sample, n), prompt),
        "token_stats": token_stats_table(ts_keys, ts, attn, attn_ctx),
        "layer_stats": layer_stats_table(_key_columns(run_id, loaded.name, sample, L * H), ls),
    }
    if kv is not None:
        tables["kv"] = kv
    stats_s = time.perf_counter() - t0
    if sample.task == needle.TASK:  # where the needle landed, in tokens (extract/needle.py)
        tables["needles"] = needle.needles_table(_key_columns(run_id, loaded.name, sample, 1), lb, sample, prompt)
    tables["samples"] = samples_table(
        _key_columns(run_id, loaded.name, sample, 1), sample, prompt, lb, prefill_s, stats_s
    )
    return tables
