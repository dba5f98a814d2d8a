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
  of its cache versus from scratch -> `demo_prefix`;
- cached attention: the last few queries of the attention prompt fed one at a
  time against the cache, their attention rows kept -> `demo_cache_attention`
  (equal to the recomputed rows in `demo_attention` within float rounding);
- timing: at lengths up to 2K tokens of a LongBench context, one decode step
  with the cache vs one forward of the whole sequence without it, repeated
  (sdpa attention, as extraction runs) -> `demo_timing`;
- heads: the same long context once more, every query head's attention over
  every earlier token reduced to a few numbers (sink, previous token, local,
  distance, entropy) -> `demo_head_stats`, per query head where `token_stats`
  has only KV heads (report 5).
Token texts of the short prompts go to `demo_tokens`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import torch

from extract import attention
from extract import model as models
from warehouse import schemas
from warehouse.store import Store

DEMO_FORMAT = 2  # bump when prompts or measurements change
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
DEMO_TABLES = (
    "demo_tokens",
    "demo_projections",
    "demo_attention",
    "demo_decode",
    "demo_prefix",
    "demo_cache_attention",
    "demo_timing",
    "demo_head_stats",
)
LONG_TASK = "narrativeqa"  # LongBench task whose first context (~18K tokens each) gives the long text
SINK_TOKENS, LOCAL_TOKENS, MIN_QUERY = 4, 16, 32  # head statistics: sink = keys < 4, local = the 16 latest keys


@dataclass(frozen=True)
class DemoConfig:
    """What the demo measures; every field is part of its run id."""

    layer: int | None = None  # layer whose projections are kept; None = the middle layer
    new_tokens: int = 32  # greedy steps of the decode comparison
    answer_tokens: int = 8  # greedy answer length per question of the prefix comparison
    cached_queries: int = 4  # last queries of the attention prompt fed one at a time with the cache
    timing_lengths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)  # cache lengths timed
    timing_repeats: int = 3  # timings per length and mode (the report takes the median)
    head_tokens: int = 1024  # tokens of the long context behind the per-query-head statistics

    def __post_init__(self):
        object.__setattr__(self, "timing_lengths", tuple(sorted(set(int(n) for n in self.timing_lengths))))
        if not self.timing_lengths or self.timing_lengths[0] < 2:
            raise ValueError(f"timing_lengths must be one or more lengths >= 2, got {self.timing_lengths}")
        if self.timing_repeats < 1:
            raise ValueError(f"timing_repeats must be >= 1, got {self.timing_repeats}")
        if self.cached_queries < 1:
            raise ValueError(f"cached_queries must be >= 1, got {self.cached_queries}")
        if self.head_tokens <= MIN_QUERY:
            raise ValueError(f"head_tokens must be > {MIN_QUERY}, got {self.head_tokens}")
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


def _projection_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The attention modules with separate q/k/v/o projections, in layer order. Only the projections view
    (the brief's TinyLlama walk-through) looks modules up by name; everything else reads the attention
    interface (extract/attention.py)."""
    mods = [m for m in model.modules() if all(hasattr(m, f"{k}_proj") for k in "qkvo") and hasattr(m, "layer_idx")]
    if not mods:
        raise TypeError(f"{type(model).__name__}: no attention modules with separate q/k/v/o projections")
    return sorted(mods, key=lambda m: m.layer_idx)


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
    mod = _projection_modules(model)[layer]
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


@torch.inference_mode()
def cache_attention_run(model: torch.nn.Module, ids: torch.Tensor, k: int) -> list[dict]:
    """Attention rows of the last k queries computed incrementally: the prompt before them prefilled
    into the cache, then one token per forward against it (eager attention returns the weights)."""
    T = ids.shape[1]
    if not 0 < k < T:
        raise ValueError(f"cached_queries must be between 1 and {T - 1} for a {T}-token prompt, got {k}")
    kw, group = models.cache_kwarg(model), model.config.num_attention_heads // model.config.num_key_value_heads
    cache = models.cache_of(model(input_ids=ids[:, : T - k], use_cache=True, logits_to_keep=1))
    rows = []
    for q in range(T - k, T):
        out = model(input_ids=ids[:, q : q + 1], use_cache=True, output_attentions=True, logits_to_keep=1,
                    **{kw: cache})  # fmt: skip
        if not out.attentions or out.attentions[0] is None:
            raise RuntimeError("the model returned no attention weights: load it with attn='eager'")
        cache = models.cache_of(out)
        for layer, a in enumerate(out.attentions):
            w = a[0, :, -1].float().cpu().numpy()  # [Hq, q + 1]: this query over every cached key and itself
            rows += [
                {"layer": layer, "q_head": h, "kv_head": h // group, "query_pos": q, "key_pos": kp,
                 "weight": float(w[h, kp])}
                for h in range(w.shape[0]) for kp in range(q + 1)
            ]  # fmt: skip
    return rows


def long_ids(tok, n: int, task: str = LONG_TASK) -> tuple[torch.Tensor, str]:
    """The first n tokens of the first LongBench `task` context that long, and where it came from."""
    from extract import longbench

    lb = longbench.open_longbench()
    lb.check_tasks([task])
    for rec in longbench.read_task(lb, task):
        if isinstance(rec, longbench.Sample):
            ids = tok(rec.context[: 12 * n], add_special_tokens=False)["input_ids"]  # enough text, not all
            if len(ids) >= n:
                return torch.tensor([ids[:n]], dtype=torch.long), f"{task}/{rec.sample_id}"
    raise ValueError(f"no {task} context in {lb.root} has {n} tokens: lower timing_lengths / head_tokens")


@torch.inference_mode()
def timing_run(model: torch.nn.Module, ids: torch.Tensor, lengths: tuple[int, ...], repeats: int) -> list[dict]:
    """Per length L: one new token decoded against a cache of L tokens vs one forward over all L + 1 tokens
    without a cache (what each generated token costs either way), `repeats` times each, interleaved."""
    kw, rows = models.cache_kwarg(model), []
    for n in lengths:
        cache = models.cache_of(model(input_ids=ids[:, :n], use_cache=True, logits_to_keep=1))
        for r in range(repeats):
            _, t_full = _forward(model, input_ids=ids[:, : n + 1], use_cache=False)
            _, t_cache = _forward(model, input_ids=ids[:, n : n + 1], use_cache=True, **{kw: cache})
            cache.crop(-1)  # forget the decoded token: the next repeat decodes on the same L-token cache
            rows.append({"length": n, "repeat": r, "seconds_cache": t_cache, "seconds_no_cache": t_full})
    return rows


def _distance_bucket(d: torch.Tensor) -> torch.Tensor:
    """0 for the query itself, b for distances in [2^(b-1), 2^b)."""
    return torch.where(d > 0, torch.floor(torch.log2(d.clamp(min=1).float())).long() + 1, 0)


@torch.inference_mode()
def head_stats_run(model: torch.nn.Module, ids: torch.Tensor) -> list[dict]:
    """Every query head's causal attention over a long text, reduced per head: means over the queries
    at positions >= MIN_QUERY of the share on the sink, the previous token, the LOCAL_TOKENS latest
    keys, the mean distance attended, the entropy (over ln of the keys visible) and the share per
    power-of-two distance bucket. Queries are captured rotated, as capture.py does for token_stats."""
    T = ids.shape[1]
    calls: list[attention.Call] = []
    with attention.observe(model, calls.append):
        model(input_ids=ids, use_cache=True, logits_to_keep=1)
    qpos = torch.arange(MIN_QUERY, T)
    dist = qpos[:, None] - torch.arange(T)[None]  # [Q, T]
    causal = dist >= 0
    buckets = _distance_bucket(dist.clamp(min=0))
    n_buckets = int(buckets.max()) + 1
    onehot = torch.nn.functional.one_hot(buckets, n_buckets).float() * causal[..., None]  # [Q, T, B]
    visible = torch.log(qpos.float() + 1)  # ln(number of keys a query sees)
    rows = []
    for call in sorted(calls, key=lambda c: c.layer):
        q = call.query[0, :, MIN_QUERY:]  # [Hq, Q, D]: rotated and normed, as the layer scores them
        group = q.shape[0] // call.key.shape[1]
        p = attention.probabilities(q, call.key[0], qpos, call.scaling, call.softcap, call.sliding_window, call.sinks)
        w = p.reshape(q.shape[0], len(qpos), T)  # [Hq, Q, T]
        sink = w[..., :SINK_TOKENS].sum(-1)
        prev = w.gather(-1, (qpos - 1).expand(w.shape[0], -1)[..., None])[..., 0]
        local = (w * (dist < LOCAL_TOKENS)).sum(-1)
        distance = (w * dist.clamp(min=0)).sum(-1)
        entropy = -(w * torch.log(w.clamp(min=1e-12))).sum(-1) / visible
        by_bucket = torch.einsum("hqt,qtb->hb", w, onehot) / len(qpos)
        for h in range(w.shape[0]):
            rows.append(
                {
                    "layer": call.layer,
                    "q_head": h,
                    "kv_head": h // group,
                    "sink_share": float(sink[h].mean()),
                    "previous_share": float(prev[h].mean()),
                    "local_share": float(local[h].mean()),
                    "mean_distance": float(distance[h].mean()),
                    "entropy": float(entropy[h].mean()),
                    "share_by_distance": by_bucket[h].tolist(),
                }
            )
    return rows


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
    """Run the measurements and write the demo_* tables (rerun overwrites). Weights come from eager
    attention; timing and head statistics use sdpa (what extraction runs, and 3x faster at 2K)."""
    cfg = cfg or DemoConfig()
    t0 = time.perf_counter()
    loaded = models.load_cached(model, device, dtype, "eager")  # attention weights need eager attention
    lm, tok = loaded.model, loaded.tokenizer
    n_layers = lm.config.num_hidden_layers
    layer = n_layers // 2 if cfg.layer is None else cfg.layer
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} is out of range: {loaded.name} has layers 0..{n_layers - 1}")
    cfg = replace(cfg, layer=layer)
    run_id = demo_run_id(loaded, cfg)
    att_ids, ctx_ids = _ids(tok, ATTENTION_PROMPT), _ids(tok, PREFIX_CONTEXT)
    q_ids = [_ids(tok, q) for q in QUESTIONS]
    long, source = long_ids(tok, max(cfg.timing_lengths[-1] + 1, cfg.head_tokens))

    with torch.inference_mode():
        lm(input_ids=att_ids, use_cache=False, logits_to_keep=1)  # warm-up: the first call pays one-off setup
    attention, projections = attention_run(lm, att_ids, layer)
    decode = decode_run(lm, tok, ctx_ids, cfg.new_tokens)
    prefix = prefix_run(lm, tok, ctx_ids, q_ids, cfg.answer_tokens)
    cached = cache_attention_run(lm, att_ids, cfg.cached_queries)
    tokens = _tokens_rows(tok, "attention", att_ids) + _tokens_rows(tok, "decode", ctx_ids)  # decode = the context
    fast = models.load_cached(model, device, dtype, "sdpa").model
    with torch.inference_mode():
        fast(input_ids=long[:, :64], use_cache=False, logits_to_keep=1)  # warm-up, as above
    timing = [{**r, "attn_impl": "sdpa", "source": source} for r in
              timing_run(fast, long, cfg.timing_lengths, cfg.timing_repeats)]  # fmt: skip
    head_rows = head_stats_run(fast, long[:, : cfg.head_tokens])
    heads = [{**r, "tokens": cfg.head_tokens, "source": source} for r in head_rows]

    created = datetime.now(UTC)
    tables = {
        "demo_tokens": tokens,
        "demo_projections": projections,
        "demo_attention": attention,
        "demo_decode": decode,
        "demo_prefix": prefix,
        "demo_cache_attention": cached,
        "demo_timing": timing,
        "demo_head_stats": heads,
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
