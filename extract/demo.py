"""Model internals on short prompts, for the attention (14) and caching (15) reports.

The KV-caching brief shows what happens inside one attention layer and what
the cache buys. Three small runs of the default model produce that as
warehouse tables, so those reports read DuckDB like every other:

- attention: one short prompt through eager attention, keeping every layer's
  attention weights and the q/k/v projections and per-head attention output
  (the input of o_proj) of one layer -> `demo_attention`, `demo_projections`;
- decode: greedy decoding twice over, feeding one token at a time with the
  cache and recomputing the whole sequence without it, timing both and
  comparing their logits at every step -> `demo_decode`;
- prefix: one context prefilled once, then several questions asked on a copy
  of its cache versus from scratch -> `demo_prefix`.
Token texts of all three prompts go to `demo_tokens`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import torch

from extract import model as models
from extract.capture import attention_modules
from warehouse import schemas
from warehouse.store import Store

DEMO_FORMAT = 1  # bump when prompts or measurements change
ATTENTION_PROMPT = "The capital of France is Paris. The capital of Germany is"
PREFIX_CONTEXT = (
    "Marie Curie was a physicist and chemist who did pioneering research on radioactivity. "
    "She was the first woman to win a Nobel Prize, the first person to win it twice, and the only "
    "person to win it in two sciences. She was born in Warsaw in 1867 and moved to Paris in 1891, "
    "where she met Pierre Curie. Together they discovered polonium and radium."
)
QUESTIONS = (
    "\nQuestion: Where was Marie Curie born?\nAnswer:",
    "\nQuestion: Which elements did the Curies discover?\nAnswer:",
    "\nQuestion: How many Nobel Prizes did she win?\nAnswer:",
)
DEMO_TABLES = ("demo_tokens", "demo_projections", "demo_attention", "demo_decode", "demo_prefix")


@dataclass(frozen=True)
class DemoConfig:
    """What the demo measures; every field is part of its run id."""

    layer: int | None = None  # layer whose projections are kept; None = the middle layer
    new_tokens: int = 32  # greedy steps of the decode comparison
    answer_tokens: int = 8  # greedy answer length per question of the prefix comparison

    def __post_init__(self):
        if self.new_tokens < 2:
            raise ValueError(f"new_tokens must be >= 2, got {self.new_tokens}")
        if self.answer_tokens < 1:
            raise ValueError(f"answer_tokens must be >= 1, got {self.answer_tokens}")


@dataclass(frozen=True)
class DemoResult:
    run_id: str
    rows: dict[str, int]  # table -> rows written
    seconds: float


def demo_run_id(loaded: models.Loaded, cfg: DemoConfig) -> str:
    shape = {"model": loaded.name, "rev": loaded.revision, "dtype": loaded.dtype, "v": DEMO_FORMAT, **asdict(cfg)}
    return "demo-" + hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:12]


def _ids(tok, text: str) -> torch.Tensor:
    return torch.tensor([tok(text, add_special_tokens=False)["input_ids"]], dtype=torch.long)


def _forward(model: torch.nn.Module, **kwargs) -> tuple[object, float]:
    """One forward pass (last position's logits only) and its wall time."""
    t0 = time.perf_counter()
    out = model(logits_to_keep=1, **kwargs)
    return out, time.perf_counter() - t0


def _tokens_rows(tok, prompt: str, ids: torch.Tensor) -> list[dict]:
    return [
        {"prompt": prompt, "position": i, "token_id": int(t), "token_text": tok.decode([int(t)])}
        for i, t in enumerate(ids[0].tolist())
    ]


@torch.inference_mode()
def attention_run(model: torch.nn.Module, ids: torch.Tensor, layer: int) -> tuple[list[dict], list[dict]]:
    """Eager attention weights of every layer, and one layer's projections per head."""
    mod = attention_modules(model)[layer]
    cfg = model.config
    hq, hkv = cfg.num_attention_heads, cfg.num_key_value_heads
    d = getattr(cfg, "head_dim", None) or cfg.hidden_size // hq
    group = hq // hkv
    seen: dict[str, torch.Tensor] = {}
    hooks = [getattr(mod, f"{k}_proj").register_forward_hook(_keep(seen, k)) for k in "qkv"]
    hooks.append(mod.o_proj.register_forward_pre_hook(lambda m, args: seen.__setitem__("o", args[0].detach())))
    try:
        out = model(input_ids=ids, output_attentions=True, use_cache=False, logits_to_keep=1)
    finally:
        for h in hooks:
            h.remove()
    if not out.attentions or out.attentions[0] is None:
        raise RuntimeError("the model returned no attention weights: load it with attn='eager'")
    T = ids.shape[1]
    qi, ki = np.tril_indices(T)
    att = []
    for li, a in enumerate(out.attentions):
        w = a[0].float().cpu().numpy()  # [Hq, T, T]
        for h in range(hq):
            att += [
                {
                    "layer": li,
                    "q_head": h,
                    "kv_head": h // group,
                    "query_pos": int(q),
                    "key_pos": int(k),
                    "weight": float(x),
                }
                for q, k, x in zip(qi, ki, w[h, qi, ki], strict=True)
            ]
    proj = []
    for kind, heads in (("q", hq), ("k", hkv), ("v", hkv), ("o", hq)):
        x = seen[kind][0].float().view(T, heads, d).cpu()  # [T, heads, D]
        norms = x.norm(dim=-1).numpy()
        for h in range(heads):
            kvh = h // group if kind in ("q", "o") else h
            proj += [
                {"layer": layer, "kind": kind, "head": h, "kv_head": kvh, "position": p, "norm": float(norms[p, h]),
                 "vector": x[p, h].numpy().astype(np.float16).tolist()}
                for p in range(T)
            ]  # fmt: skip
    return att, proj


def _keep(store: dict, key: str):
    def hook(module, args, output):
        store[key] = output.detach()

    return hook


@torch.inference_mode()
def decode_run(model: torch.nn.Module, tok, ids: torch.Tensor, steps: int) -> list[dict]:
    """Greedy decoding with the cache vs recomputing the sequence, fed the same tokens, step by step."""
    kw = models.cache_kwarg(model)
    out, t_cache = _forward(model, input_ids=ids, use_cache=True)
    ref, t_full = _forward(model, input_ids=ids, use_cache=False)
    cache, seq, rows = models.cache_of(out), ids, []
    logits, logits_ref = out.logits[0, -1], ref.logits[0, -1]
    for step in range(steps):
        token = int(logits.argmax())
        rows.append(
            {
                "step": step,
                "length": seq.shape[1],
                "token_id": token,
                "token_text": tok.decode([token]),
                "token_id_no_cache": int(logits_ref.argmax()),
                "seconds_cache": t_cache,
                "seconds_no_cache": t_full,
                "max_abs_diff": float((logits.float() - logits_ref.float()).abs().max()),
            }
        )
        if step == steps - 1:
            break
        nxt = torch.tensor([[token]], dtype=torch.long)
        seq = torch.cat([seq, nxt], dim=1)
        out, t_cache = _forward(model, input_ids=nxt, use_cache=True, **{kw: cache})
        ref, t_full = _forward(model, input_ids=seq, use_cache=False)
        cache, logits, logits_ref = models.cache_of(out), out.logits[0, -1], ref.logits[0, -1]
    return rows


def _greedy(model, tok, cache, logits: torch.Tensor, n: int) -> str:
    kw, out_ids = models.cache_kwarg(model), []
    for _ in range(n):
        token = int(logits.argmax())
        if token == tok.eos_token_id:
            break
        out_ids.append(token)
        out = model(input_ids=torch.tensor([[token]]), use_cache=True, logits_to_keep=1, **{kw: cache})
        cache, logits = models.cache_of(out), out.logits[0, -1]
    return tok.decode(out_ids)


@torch.inference_mode()
def prefix_run(model: torch.nn.Module, tok, context: torch.Tensor, questions: list[torch.Tensor], n: int) -> list[dict]:
    """One prefilled context reused by several questions, against prefilling context + question each time."""
    kw = models.cache_kwarg(model)
    base, t_prefix = _forward(model, input_ids=context, use_cache=True)
    rows = []
    for i, q in enumerate(questions):
        full, t_full = _forward(model, input_ids=torch.cat([context, q], 1), use_cache=True)
        t0 = time.perf_counter()
        cache = copy.deepcopy(models.cache_of(base))  # decoding mutates a cache: each question gets a copy (timed too)
        part, _ = _forward(model, input_ids=q, use_cache=True, **{kw: cache})
        t_reuse = time.perf_counter() - t0
        a, b = full.logits[0, -1].float(), part.logits[0, -1].float()
        rows.append(
            {
                "question_index": i,
                "question": tok.decode(q[0]),
                "prefix_tokens": context.shape[1],
                "question_tokens": q.shape[1],
                "seconds_prefix": t_prefix,
                "seconds_full": t_full,
                "seconds_reuse": t_reuse,
                "max_abs_diff": float((a - b).abs().max()),
                "answer_full": _greedy(model, tok, models.cache_of(full), a, n),
                "answer_reuse": _greedy(model, tok, models.cache_of(part), b, n),
            }
        )
    return rows


def _table(name: str, rows: list[dict], run_id: str, model: str, created: datetime | None) -> pa.Table:
    spec = schemas.TABLES[name]
    extra = {"run_id": run_id, "model": model}
    if "created_at" in spec.columns:
        extra["created_at"] = created
    return pa.Table.from_pylist([{**extra, **r} for r in rows], schema=spec.schema)


def run_demo(
    store: Store,
    model: str = models.DEFAULT_MODEL,
    cfg: DemoConfig | None = None,
    device: str | None = "cpu",
    dtype: str | None = "float32",
) -> DemoResult:
    """Run the three measurements with eager attention and write the demo_* tables (rerun overwrites)."""
    cfg = cfg or DemoConfig()
    t0 = time.perf_counter()
    loaded = models.load_cached(model, device, dtype, "eager")  # attention weights need eager attention
    lm, tok = loaded.model, loaded.tokenizer
    n_layers = lm.config.num_hidden_layers
    layer = n_layers // 2 if cfg.layer is None else cfg.layer
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} is out of range: {loaded.name} has layers 0..{n_layers - 1}")
    run_id = demo_run_id(loaded, DemoConfig(layer, cfg.new_tokens, cfg.answer_tokens))
    att_ids, ctx_ids = _ids(tok, ATTENTION_PROMPT), _ids(tok, PREFIX_CONTEXT)
    q_ids = [_ids(tok, q) for q in QUESTIONS]

    with torch.inference_mode():
        lm(input_ids=att_ids, use_cache=False, logits_to_keep=1)  # warm-up: the first call pays one-off setup
    attention, projections = attention_run(lm, att_ids, layer)
    decode = decode_run(lm, tok, ctx_ids, cfg.new_tokens)
    prefix = prefix_run(lm, tok, ctx_ids, q_ids, cfg.answer_tokens)
    tokens = _tokens_rows(tok, "attention", att_ids) + _tokens_rows(tok, "decode", ctx_ids)  # decode = the context

    created = datetime.now(UTC)
    tables = {
        "demo_tokens": tokens,
        "demo_projections": projections,
        "demo_attention": attention,
        "demo_decode": decode,
        "demo_prefix": prefix,
    }
    for name, rows in tables.items():
        store.write(name, _table(name, rows, run_id, loaded.name, created), "demo")
    return DemoResult(run_id, {k: len(v) for k, v in tables.items()}, time.perf_counter() - t0)


def demo_missing(con, model_name: str) -> list[str]:
    """The demo tables with no rows for this model (a catalog connection; empty views count as missing)."""
    missing = []
    for table in DEMO_TABLES:
        rows = con.execute(f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE model = $m LIMIT 1)", {"m": model_name})
        if rows.fetchall()[0][0] == 0:
            missing.append(table)
    return missing
