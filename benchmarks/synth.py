"""A synthetic warehouse in the real schema and layout, drawn from a real extraction's fitted distributions.

Benchmarks of the store at 10M-10B token_stats rows cannot wait for a model to
prefill that many tokens, and tests that kill a long write need one that is
quick to start and the same on every run. `fit_profile` condenses a real
extraction into a small JSON of parameters (no raw data); `generate` writes N
rows of look-alike samples through the real `Store`, so encodings, file sizes
and atomic writes are the production ones.

    python benchmarks/synth.py fit /tmp/real/data benchmarks/profile_smollm2_135m.json
    python benchmarks/synth.py gen /tmp/synth --rows 10000000 [--profile P.json] [--seed 0]

Model of the data, per (layer, kv_head):
- magnitudes: log-normal per column (matched to the real mean), tied to key_norm / value_norm by a
  Gaussian copula; position 0 (the attention sink) has its own log means;
- attention received: log(attn * n_tokens) = a shift by distance from the end (which carries the
  observation window) and from the start + a residual drawn from its empirical quantiles, scaled per
  end-distance bin and correlated with key_norm; shifts are calibrated so each bin gets its real
  attention mass; positions 0..3 take their fitted (sink) shares and the rest is renormalised so each
  (sample, layer, head) sums to 1; `attn_received_context` is the same over [0, context_end), correlated
  with `attn_received`, and null after;
- samples: each task's prompt layout (instruction, context, question ranges) as in the real extraction.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from warehouse import schemas
from warehouse.store import Store

DEFAULT_PROFILE = Path(__file__).with_name("profile_smollm2_135m.json")
MAGNITUDES = ("key_norm", "value_norm", "key_absmean", "value_absmean", "key_absmax", "value_absmax")
# copula links: column i is drawn correlated with column LINKS[i] (value_norm with key_norm, ...)
LINKS = {1: 0, 2: 0, 4: 0, 3: 1, 5: 1}
SINKS = 4  # positions 0..3 keep fitted attention shares; the rest is drawn
Z_START, Z_STEP, Z_N = -4.5, 0.75, 13  # residual quantiles are stored at these normal scores
START_EDGES = (4, 8, 16, 32, 64, 128, 256, 512)  # position bins; the last one is the reference (shift 0)
CATEGORIES = ("special", "whitespace", "cjk", "digit", "punctuation", "code_symbol", "stopword", "word", "other")
SEGMENTS = ("chat", "instruction", "context", "question")
# a few surface forms per category: token text stays cheap and consistent with its category
VOCAB = {
    "special": ("<|im_start|>", "<|im_end|>"),
    "whitespace": (" ", "\n", "\n\n"),
    "cjk": ("的", "是", "在", "了", "中国"),
    "digit": (" 1", " 2019", "0", " 42"),
    "punctuation": (".", ",", "?", '"', ")"),
    "code_symbol": ("==", "->", "{", "}", "_"),
    "stopword": (" the", " of", " and", " to", " in"),
    "word": (" model", " data", " cache", " token", " attention", " key", " report", " river"),
    "other": (" x1", "_id", " v2"),
}
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)  # synthetic timestamps: fixed, so reruns write identical files


def end_edges(window: int) -> list[int]:
    """Distance-from-the-end bins: fine around the observation window, where attention drops."""
    w = window
    edges = {0, 1, 2, 4, 8, 16, w - 8, w, w + 2, w + 4, w + 8, w + 16, 2 * w, 4 * w, 8 * w, 16 * w, 32 * w}
    return sorted(e for e in edges if e >= 0)


def _bins(values: np.ndarray, edges) -> np.ndarray:
    return np.searchsorted(np.asarray(edges), values, side="right") - 1


def _r(x, digits: int = 4):
    """Round to `digits` significant digits, recursively: keeps the profile a few tens of KB."""
    if isinstance(x, dict):
        return {k: _r(v, digits) for k, v in x.items()}
    if isinstance(x, np.ndarray | np.generic):
        x = x.tolist()
    if isinstance(x, list | tuple):
        return [_r(v, digits) for v in x]
    if isinstance(x, float):
        return float(f"{float(x):.{digits}g}") if math.isfinite(x) else 0.0
    return x


def _d(x, digits: int, significant: bool = False) -> np.ndarray:
    """Fixed decimals for log-scale parameters (0.005 in a log is 0.5%), significant digits for shares."""
    x = np.asarray(x, np.float64)
    if not significant:
        return np.round(x, digits) + 0.0  # + 0.0: no "-0.0" in the JSON
    return np.vectorize(lambda v: float(f"{v:.{digits}g}"))(x) if x.size else x


def _norm_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Spearman r, as the Gaussian-copula Pearson r (2 sin(pi r / 6)): robust to heavy tails."""
    ra = np.argsort(np.argsort(a, axis=1), axis=1).astype(np.float64)
    rb = np.argsort(np.argsort(b, axis=1), axis=1).astype(np.float64)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    rs = (ra * rb).sum(1) / np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    return 2 * np.sin(np.pi * rs / 6)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):  # a constant row (one token) has no correlation: 0
        return np.nan_to_num((a * b).sum(1) / np.sqrt((a**2).sum(1) * (b**2).sum(1)))


# --- fitting ---------------------------------------------------------------------------------------------------


def _sample_rows(data_root: Path) -> list[dict]:
    glob = str(data_root / "samples" / "**" / "*.parquet")
    con = duckdb.connect()
    rel = con.sql(f"SELECT * FROM read_parquet('{glob}', hive_partitioning = false) ORDER BY task, sample_id")
    cols = rel.columns
    return [dict(zip(cols, row, strict=True)) for row in rel.fetchall()]


def _layout(rows: list[dict]) -> dict:
    """A task's prompt layout: medians of its token ranges (the template's shape, not any sample's text)."""
    med = lambda xs: int(round(float(np.median(xs))))  # noqa: E731
    chat = sum(bool(r["chat_template"]) for r in rows) * 2 >= len(rows)
    langs = [r["language"] or "en" for r in rows]
    return {
        "chat": chat,
        "language": max(set(langs), key=langs.count),
        "max_new_tokens": med([r["max_new_tokens"] or 64 for r in rows]),
        "classes": any(r["all_classes"] for r in rows),
        "instruction_start": med([r["instruction_start"] for r in rows]),
        "instruction_len": med([r["instruction_end"] - r["instruction_start"] for r in rows]),
        "gap": med([r["question_start"] - r["context_end"] for r in rows]),  # instruction between context and question
        "question_len": med([r["question_end"] - r["question_start"] for r in rows]),
        "after": med([r["n_tokens"] - r["question_end"] for r in rows]),  # answer prompt, chat tail
    }


def _calibrate(s_end, s_start, e_scale, quant, count, mass, rounds: int = 4):
    """Move the log shifts so each (head, end bin) and (head, start bin) gets its real attention mass.

    Log means alone are not enough: a heavy-tailed residual drawn where the real one is steady (a short bin
    near the window) would hold most of the mass, and normalising would then push every other position down.
    """
    zf = np.linspace(Z_START, Z_START + Z_STEP * (Z_N - 1), 1201)
    tail = float(_norm_cdf(np.array([Z_START]))[0])
    w = np.exp(-(zf**2) / 2)
    w *= (1 - 2 * tail) / w.sum()
    w[[0, -1]] += tail  # generation clamps z to the grid: the tails sit at its ends
    grid = Z_START + Z_STEP * np.arange(Z_N)
    R = np.stack([np.interp(zf, grid, q) for q in quant])  # [LH, zf]
    M = np.einsum("z,hbz->hb", w, np.exp(e_scale[:, :, None] * R[:, None, :]))  # E exp(scale * residual)
    s_end, s_start = s_end.copy(), s_start.copy()
    expected = lambda: count * np.exp(s_end[:, :, None] + s_start[:, None, :]) * M[:, :, None]  # noqa: E731
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(rounds):
            s_end += np.nan_to_num(np.log(mass.sum(2) / expected().sum(2)), nan=0.0, posinf=0.0, neginf=0.0)
            s_start += np.nan_to_num(np.log(mass.sum(1) / expected().sum(1)), nan=0.0, posinf=0.0, neginf=0.0)
    return s_end, s_start


def _read_token_stats(path: Path) -> tuple[int, int, dict[str, np.ndarray]]:
    """One sample's token_stats as [L*H, T] arrays (whatever the row order on disk)."""
    cols = ["layer", "kv_head", "position", *MAGNITUDES, "attn_received", "attn_received_context"]
    t = pq.read_table(path, columns=cols)
    layer = t["layer"].to_numpy().astype(np.int64)
    head = t["kv_head"].to_numpy().astype(np.int64)
    pos = t["position"].to_numpy().astype(np.int64)
    L, H, T = int(layer.max()) + 1, int(head.max()) + 1, int(pos.max()) + 1
    if t.num_rows != L * H * T:
        raise ValueError(f"{path}: {t.num_rows} rows is not a full (layer, kv_head, position) grid")
    idx = (layer * H + head) * T + pos
    out = {}
    for c in cols[3:]:
        v = np.full(L * H * T, np.nan, np.float64)
        v[idx] = t[c].to_numpy(zero_copy_only=False).astype(np.float64)  # nulls -> NaN
        out[c] = v.reshape(L * H, T)
    return L, H, out


def fit_profile(data_root: Path, max_samples: int = 64, window: int = 32) -> dict:
    """Fit the synthetic model's parameters to a real warehouse (up to `max_samples` token_stats files)."""
    data_root = Path(data_root)
    rows = _sample_rows(data_root)
    if not rows:
        raise ValueError(f"{data_root}: no samples")
    info = {(r["model"], r["task"], r["run_id"], r["sample_id"]): r for r in rows}
    files = []
    for f in Store(data_root).files("token_stats"):
        parts = dict(p.split("=", 1) for p in f.parent.relative_to(data_root / "token_stats").parts)
        key = (parts["model"], parts["task"], parts["run_id"], f.stem)
        if key in info:  # a token_stats file without its samples row is an unfinished sample
            files.append((f, info[key]))
    if not files:
        raise ValueError(f"{data_root}: no token_stats file has a samples row")
    pick = np.unique(np.linspace(0, len(files) - 1, min(max_samples, len(files))).round().astype(int))
    files = [files[i] for i in pick]

    E = end_edges(window)
    logs = {c: [] for c in MAGNITUDES}  # positions >= 1, concatenated over samples along axis 1
    pos0 = {c: [] for c in MAGNITUDES}
    x_a, binsE_a, binsS_a, lkn_a, sink_a = [], [], [], [], []
    ctx_parts, sink_c = [], []  # (column offset of the sample in x_a, log ctx, end bins, start bins)
    shape, offset = None, 0
    for f, s in files:
        L, H, d = _read_token_stats(f)
        if shape not in (None, (L, H)):
            raise ValueError(f"{f}: shape {(L, H)} differs from {shape}; fit one model at a time")
        shape = (L, H)
        T, ce = d["attn_received"].shape[1], min(int(s["context_end"]), d["attn_received"].shape[1])
        if T <= SINKS:
            continue
        for c in MAGNITUDES:
            lv = np.log(np.maximum(d[c], 1e-6))
            logs[c].append(lv[:, 1:])
            pos0[c].append(lv[:, 0])
        a, ctx = d["attn_received"], d["attn_received_context"]
        sink_a.append(a[:, :SINKS])
        p = np.arange(SINKS, T)
        x_a.append(np.log(np.maximum(a[:, SINKS:], 1e-30) * T))
        binsE_a.append(_bins(T - 1 - p, E))
        binsS_a.append(_bins(p, START_EDGES))
        lkn_a.append(np.log(np.maximum(d["key_norm"][:, SINKS:], 1e-6)))
        if ce > SINKS:
            sink_c.append(ctx[:, :SINKS])
            pc = np.arange(SINKS, ce)
            xc = np.log(np.maximum(ctx[:, SINKS:ce], 1e-30) * ce)
            ctx_parts.append((offset, xc, _bins(ce - 1 - pc, E), _bins(pc, START_EDGES)))
        offset += T - SINKS
    if not x_a:
        raise ValueError(f"{data_root}: every sample is shorter than {SINKS + 1} tokens")
    L, H = shape
    LH = L * H

    # magnitudes: log-normal matched to the mean; correlations of logs along the copula links
    mag = {c: np.concatenate(logs[c], axis=1) for c in MAGNITUDES}
    sd = np.stack([mag[c].std(1) for c in MAGNITUDES], 1)  # [LH, 6]
    mean_lin = np.stack([np.exp(mag[c]).mean(1) for c in MAGNITUDES], 1)
    mu = np.log(mean_lin) - sd**2 / 2
    rho = np.stack([_pearson_rows(mag[MAGNITUDES[i]], mag[MAGNITUDES[j]]) for i, j in LINKS.items()], 1)
    p0 = np.stack([np.stack(pos0[c], 1) for c in MAGNITUDES], 1)  # [LH, 6, samples]
    mu0 = np.log(np.exp(p0).mean(2)) - p0.std(2) ** 2 / 2
    sd0 = np.median(p0.std(2), axis=0)  # one spread per column: few samples per head
    del mag

    # attention: additive position shifts (backfitted), then residual quantiles at fixed normal scores
    xa = np.concatenate(x_a, axis=1)
    be, bs = np.concatenate(binsE_a), np.concatenate(binsS_a)
    ne, ns = len(E), len(START_EDGES)
    s_end, s_start = np.zeros((LH, ne)), np.zeros((LH, ns))
    cnt_e, cnt_s = np.maximum(np.bincount(be, minlength=ne), 1), np.maximum(np.bincount(bs, minlength=ns), 1)
    for _ in range(4):
        rest = xa - s_start[:, bs]
        s_end = np.stack([np.bincount(be, weights=rest[i], minlength=ne) / cnt_e for i in range(LH)])
        rest = xa - s_end[:, be]
        s_start = np.stack([np.bincount(bs, weights=rest[i], minlength=ns) / cnt_s for i in range(LH)])
        s_end += s_start[:, -1:]
        s_start -= s_start[:, -1:]
    resid = xa - s_end[:, be] - s_start[:, bs]
    cell = be * ns + bs
    count = np.bincount(cell, minlength=ne * ns).reshape(ne, ns)
    mass = np.stack([np.bincount(cell, weights=np.exp(xa[i]), minlength=ne * ns) for i in range(LH)]).reshape(
        LH, ne, ns
    )
    del xa
    # spread grows with distance from the end (the window's own keys are steady): a scale per (head, end bin)
    var_e = np.stack([np.bincount(be, weights=resid[i] ** 2, minlength=ne) / cnt_e for i in range(LH)])
    e_scale = np.sqrt(np.maximum(var_e, 1e-6) / np.maximum((resid**2).mean(1, keepdims=True), 1e-6))
    resid /= e_scale[:, be]
    probs = _norm_cdf(Z_START + Z_STEP * np.arange(Z_N))
    quant = np.quantile(resid, probs, axis=1).T  # [LH, Z_N]
    rho_kn = _spearman_rows(resid, np.concatenate(lkn_a, axis=1))
    quant, e_scale = np.round(quant, 2), np.round(np.maximum(e_scale, 0.01), 2)  # as stored
    s_end, s_start = _calibrate(s_end, s_start, e_scale, quant, count, mass)
    # context attention: its residual against the same shifts, correlated with attn_received's at the same position
    ra = [resid[:, off : off + xc.shape[1]] for off, xc, _, _ in ctx_parts]
    rc = [(xc - s_end[:, bec] - s_start[:, bsc]) / e_scale[:, bec] for _, xc, bec, bsc in ctx_parts]
    rho_ctx = _spearman_rows(np.concatenate(ra, 1), np.concatenate(rc, 1)) if rc else np.zeros(LH)
    del resid
    sa = np.stack(sink_a, 2)  # [LH, 4, samples]
    sc = np.stack(sink_c, 2) if sink_c else sa
    logit = np.log(np.clip(sa[:, 0], 1e-9, 1 - 1e-9)) - np.log1p(-np.clip(sa[:, 0], 1e-9, 1 - 1e-9))

    grid = lambda x: np.asarray(x).reshape(L, H, *np.asarray(x).shape[1:])  # noqa: E731
    n_tokens = np.array([r["n_tokens"] for r in rows], float)
    ratio = np.array([r["context_end"] / r["n_tokens"] for r in rows])
    by_task: dict[str, list[dict]] = {}
    for r in rows:
        by_task.setdefault(r["task"], []).append(r)
    q = [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95]  # interpolated, never a single sample's value
    n_orig = np.array([(r["n_tokens_original"] or r["n_tokens"]) / r["n_tokens"] for r in rows])
    words = [r["length_words"] / r["n_tokens_original"] for r in rows if r["length_words"] and r["n_tokens_original"]]
    secs = [(r["prefill_seconds"] or 0) / r["n_tokens"] for r in rows]
    stats_secs = [(r["stats_seconds"] or 0) / r["n_tokens"] for r in rows]
    con = duckdb.connect()
    cats = {}
    if Store(data_root).files("tokens"):
        glob = str(data_root / "tokens" / "**" / "*.parquet")
        for cat, share in con.sql(
            f"SELECT category, count(*) / sum(count(*)) OVER () FROM read_parquet('{glob}', hive_partitioning = false)"
            " GROUP BY 1 ORDER BY 1"
        ).fetchall():
            cats[str(cat)] = share
    layer_stats = {}
    if Store(data_root).files("layer_stats"):
        glob = str(data_root / "layer_stats" / "**" / "*.parquet")
        cols = [f.name for f in schemas.LAYER_STATS.schema if f.type == pa.float32()]
        sel = ", ".join(f"avg({c}), stddev_samp({c})" for c in cols)
        vals = con.sql(f"SELECT {sel} FROM read_parquet('{glob}', hive_partitioning = false)").fetchall()[0]
        layer_stats = {c: [vals[2 * i] or 0.0, vals[2 * i + 1] or 0.0] for i, c in enumerate(cols)}
    null_share = sum(r["n_tokens"] - r["context_end"] for r in rows) / sum(r["n_tokens"] for r in rows)
    return _r(
        {
            "version": 1,
            "source": {
                "model": sorted({r["model"] for r in rows}),
                "run_id": sorted({r["run_id"] for r in rows}),
                "samples": len(rows),
                "samples_fitted": len(files),
            },
            "layers": L,
            "kv_heads": H,
            "window": window,
            "magnitudes": {
                "columns": list(MAGNITUDES),
                "links": {MAGNITUDES[i]: MAGNITUDES[j] for i, j in LINKS.items()},
                "mu": grid(_d(mu, 3)),  # [layer][head][column]: log-normal location (mean-matched)
                "sd": grid(_d(sd, 3)),
                "rho": grid(_d(rho, 3)),  # [layer][head][link] in the order of `links`
                "mu0": grid(_d(mu0, 3)),  # position 0
                "sd0": _d(sd0, 3),
            },
            "attention": {
                "z": [Z_START, Z_STEP, Z_N],
                "quantiles": grid(_d(quant, 2)),  # log(attn * n_tokens) residual at normal scores z
                "end_edges": E,
                "end_shift": grid(_d(s_end, 2)),
                "end_scale": grid(_d(e_scale, 2)),  # residual spread per end bin
                "start_edges": list(START_EDGES),
                "start_shift": grid(_d(s_start, 2)),
                "sink": grid(_d(sa.mean(2), 3, significant=True)),  # mean share at positions 0..3
                "sink_logit_sd": grid(_d(logit.std(1), 2)),
                "sink_context": grid(_d(sc.mean(2), 3, significant=True)),
                "rho_key_norm": grid(_d(rho_kn, 3)),
                "rho_context": grid(_d(rho_ctx, 3)),
            },
            "samples": {
                "quantiles_at": q,
                "n_tokens": np.quantile(n_tokens, q),
                "context_ratio": np.quantile(ratio, q),
                "context_null_share": null_share,
                "original_ratio": np.quantile(n_orig, q),
                "words_per_token": float(np.median(words)) if words else 0.6,
                "prefill_seconds_per_token": float(np.median(secs)),
                "stats_seconds_per_token": float(np.median(stats_secs)),
                "tasks": {t: _layout(rs) for t, rs in by_task.items()},
            },
            "categories": cats,
            "layer_stats": layer_stats,
        }
    )


def save_profile(profile: dict, path: Path) -> None:
    """One top-level key per line: small, and diffs stay readable."""
    body = ",\n".join(
        f"{json.dumps(k)}: {json.dumps(v, separators=(',', ':'), ensure_ascii=False)}" for k, v in profile.items()
    )
    Path(path).write_text("{\n" + body + "\n}\n", encoding="utf-8")


def load_profile(path: Path | None = None) -> dict:
    return json.loads(Path(path or DEFAULT_PROFILE).read_text(encoding="utf-8"))


# --- generation --------------------------------------------------------------------------------------------------


def round_mantissa(x: np.ndarray, bits: int = 10) -> np.ndarray:
    """float32 kept to float16's precision, as the real writer stores attention (zstd then halves the column)."""
    drop = 23 - bits
    u = x.astype(np.float32, copy=False).view(np.uint32)
    u = (u + np.uint32(1 << (drop - 1))) & np.uint32(~((1 << drop) - 1) & 0xFFFFFFFF)
    return u.view(np.float32)


def _const(value: str, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.string()), n)


def _table(columns: dict, schema: pa.Schema, n: int) -> pa.Table:
    """Columns in the schema's order; one the generator does not know (added later) is left null."""
    return pa.Table.from_arrays([columns.get(f.name, pa.nulls(n, f.type)) for f in schema], schema=schema)


def _task_names(profile: dict, tasks: int) -> list[tuple[str, str]]:
    """(name, layout task) pairs: the profile's LongBench tasks, cycled with a suffix beyond them."""
    base = list(profile["samples"]["tasks"]) or ["synthetic"]
    names = []
    for k in range(tasks):
        b = base[k % len(base)]
        names.append((b if k < len(base) else f"{b}-{k // len(base)}", b))
    return names


class _Model:
    """The profile as float32 arrays, plus everything that depends only on n_tokens: computed once per run."""

    def __init__(self, profile: dict, n_tokens: int):
        self.L, self.H, self.T = int(profile["layers"]), int(profile["kv_heads"]), int(n_tokens)
        LH = self.LH = self.L * self.H
        arr = lambda x: np.asarray(x, np.float32).reshape(LH, -1)  # noqa: E731
        m, a = profile["magnitudes"], profile["attention"]
        self.mu, self.sd, self.rho, self.mu0 = arr(m["mu"]), arr(m["sd"]), arr(m["rho"]), arr(m["mu0"])
        self.sd0 = np.asarray(m["sd0"], np.float32)
        self.links = [(MAGNITUDES.index(c), MAGNITUDES.index(p)) for c, p in m["links"].items()]
        self.z0, self.zstep, self.zn = float(a["z"][0]), float(a["z"][1]), int(a["z"][2])
        self.q = arr(a["quantiles"]).ravel()
        self.qrow = (np.arange(LH, dtype=np.intp) * self.zn)[:, None]
        self.end_edges, self.s_end, self.s_start = a["end_edges"], arr(a["end_shift"]), arr(a["start_shift"])
        self.e_scale = arr(a["end_scale"])
        self.sink, self.sink_c = arr(a["sink"]), arr(a["sink_context"])
        self.sink_sd = arr(a["sink_logit_sd"])
        self.r_kn, self.r_ctx = arr(a["rho_key_norm"]), arr(a["rho_context"])
        self.shift_T = self.shift(self.T)
        self._shifts: dict[int, tuple[np.ndarray, np.ndarray]] = {self.T: self.shift_T}
        T = self.T
        self.layer = pa.array(np.repeat(np.arange(self.L, dtype=np.int16), self.H * T))
        self.kv_head = pa.array(np.tile(np.repeat(np.arange(self.H, dtype=np.int16), T), self.L))
        self.position = pa.array(np.tile(np.arange(T, dtype=np.int32), LH))
        s = profile["samples"]
        self.qat = np.asarray(s["quantiles_at"])
        self.samples = s
        cats = {c: v for c, v in (profile.get("categories") or {}).items() if c in VOCAB} or {"word": 1.0}
        entries = [(c, t) for c in CATEGORIES for t in VOCAB[c]]
        w = np.array([cats.get(c, 0.0) / len(VOCAB[c]) for c, _ in entries])
        self.vocab_p = w / w.sum()
        self.vocab_text = pa.array([t for _, t in entries], pa.string())
        self.vocab_id = np.array([1000 + 7 * i for i in range(len(entries))], np.int32)
        self.vocab_cat = np.array([CATEGORIES.index(c) for c, _ in entries], np.int8)
        self.layer_stats = profile.get("layer_stats") or {}

    def shift(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Location and spread [LH, n - SINKS] of log attention at positions SINKS..n-1 of n."""
        p = np.arange(SINKS, n)
        be = _bins(n - 1 - p, self.end_edges)
        return self.s_end[:, be] + self.s_start[:, _bins(p, START_EDGES)], self.e_scale[:, be]

    def residual(self, z: np.ndarray) -> np.ndarray:
        """Residual log attention at normal scores z, linear between the stored quantiles."""
        pos = (z - self.z0) / self.zstep
        np.clip(pos, 0, self.zn - 1.0001, out=pos)
        i = pos.astype(np.intp)
        w = pos - i
        i += self.qrow
        q0 = self.q[i]
        return q0 + w * (self.q[i + 1] - q0)

    def attention(self, z: np.ndarray, shift: tuple[np.ndarray, np.ndarray], sinks: np.ndarray, n: int) -> np.ndarray:
        """[LH, n] shares summing to 1 per row: sinks at 0..3, drawn values after."""
        out = np.empty((self.LH, n), np.float32)
        k = min(SINKS, n)
        out[:, :k] = sinks[:, :k]
        if n <= SINKS:
            out /= out.sum(1, keepdims=True)
            return out
        x = self.residual(z) * shift[1] + shift[0]
        x -= x.max(1, keepdims=True)
        w = np.exp(x)
        w *= (1 - sinks.sum(1, keepdims=True)) / w.sum(1, keepdims=True)
        out[:, SINKS:] = w
        return out

    def sinks(self, base: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """Sink shares for one sample: position 0 jittered on the logit scale, the total kept below 0.98."""
        s = base.copy()
        a0 = np.clip(s[:, 0], 1e-7, 1 - 1e-4)
        sd = self.sink_sd[:, 0]
        lg = np.log(a0) - np.log1p(-a0) - sd * sd / 2 * (1 - 2 * a0) + sd * eps  # keeps the mean share near a0
        s[:, 0] = 1 / (1 + np.exp(-lg))
        total = s.sum(1)
        over = total > 0.98
        s[over] *= (0.98 / total[over])[:, None]
        return s

    def layout(self, task: str, n: int, rng: np.random.Generator) -> dict:
        """Token ranges of one prompt: the task's template shape, jittered, fitted into n tokens."""
        lay = self.samples["tasks"].get(task)
        if lay is None:  # a task the profile never saw: context share from the global distribution
            ratio = float(np.interp(rng.random(), self.qat, self.samples["context_ratio"]))
            tail = n - int(round(ratio * n))
            lay = dict(chat=False, instruction_start=0, instruction_len=16, gap=tail // 4, question_len=tail // 4)
            lay["after"] = tail - lay["gap"] - lay["question_len"]
        jit = lambda v: int(round(v * rng.uniform(0.8, 1.2)))  # noqa: E731
        head = [lay["instruction_start"] if lay["chat"] else 0, lay["instruction_len"]]
        tail = [jit(lay["gap"]), jit(lay["question_len"]), lay["after"]]
        room = n - 1  # at least one context token
        if sum(head) + sum(tail) > room // 2:
            f = (room // 2) / max(sum(head) + sum(tail), 1)
            head, tail = [int(v * f) for v in head], [int(v * f) for v in tail]
        i0, i1 = head[0], head[0] + head[1]
        ce = n - sum(tail)
        qs, qe = ce + tail[0], ce + tail[0] + tail[1]
        return dict(
            instruction_start=i0,
            instruction_end=i1,
            context_start=i1,
            context_end=ce,
            question_start=qs,
            question_end=qe,
        )

    def sample(self, rng: np.random.Generator, ce: int) -> dict[str, np.ndarray]:
        """One sample's token_stats columns, [LH, T] each, from one seeded generator."""
        LH, T = self.LH, self.T
        Z = rng.standard_normal((len(MAGNITUDES), LH, T), dtype=np.float32)
        for k, (c, parent) in enumerate(self.links):
            r = self.rho[:, k : k + 1]
            Z[c] = r * Z[parent] + np.sqrt(np.maximum(1 - r * r, 0)) * Z[c]
        cols = {}
        for c, name in enumerate(MAGNITUDES):
            v = np.exp(self.mu[:, c : c + 1] + self.sd[:, c : c + 1] * Z[c])
            v[:, 0] = np.exp(self.mu0[:, c] + self.sd0[c] * Z[c][:, 0])
            cols[name] = v
        for kind in ("key", "value"):  # keep absmean <= absmax <= norm, as real vectors do
            am = cols[f"{kind}_absmax"]
            np.maximum(am, cols[f"{kind}_absmean"], out=am)
            np.minimum(am, cols[f"{kind}_norm"], out=am)
        eps = rng.standard_normal((2, LH, T), dtype=np.float32)
        za = self.r_kn * Z[0][:, SINKS:] + np.sqrt(1 - self.r_kn**2) * eps[0][:, SINKS:]
        jitter = rng.standard_normal(LH).astype(np.float32)
        cols["attn_received"] = self.attention(za, self.shift_T, self.sinks(self.sink, jitter), T)
        if ce not in self._shifts:
            self._shifts[ce] = self.shift(ce)
        zc = self.r_ctx * za[:, : max(ce - SINKS, 0)] + np.sqrt(1 - self.r_ctx**2) * eps[1][:, SINKS:ce]
        ctx = np.zeros((LH, T), np.float32)
        ctx[:, :ce] = self.attention(zc, self._shifts[ce], self.sinks(self.sink_c, jitter), ce)
        cols["attn_received_context"] = ctx
        return cols


def _sample_tables(model: _Model, i: int, seed: int, task: str, base_task: str, k: int, keys: dict) -> dict:
    """Every table of synthetic sample i: tokens, token_stats, layer_stats, samples (in the real write order)."""
    rng = np.random.default_rng([seed, i])
    T, LH = model.T, model.LH
    lay = model.samples["tasks"].get(base_task, {})
    rng_lay = np.random.default_rng([seed, i, 1])  # ranges do not shift when the value model changes
    ranges = model.layout(base_task, T, rng_lay)
    ce = ranges["context_end"]
    cols = model.sample(rng, ce)
    n = LH * T
    key = lambda m: {c: _const(v, m) for c, v in keys.items()}  # noqa: E731
    mask = np.zeros((LH, T), bool)
    mask[:, ce:] = True
    ts = _table(
        {
            **key(n),
            "layer": model.layer,
            "kv_head": model.kv_head,
            "position": model.position,
            **{c: pa.array(cols[c].astype(np.float16).ravel()) for c in MAGNITUDES},
            "attn_received": pa.array(round_mantissa(cols["attn_received"].ravel())),
            "attn_received_context": pa.array(round_mantissa(cols["attn_received_context"].ravel()), mask=mask.ravel()),
        },
        schemas.TOKEN_STATS.schema,
        n,
    )
    # tokens: category drawn by the real shares; segment from the ranges
    idx = rng_lay.choice(len(model.vocab_p), size=T, p=model.vocab_p)
    seg = np.full(T, SEGMENTS.index("instruction"), np.int8)
    seg[: ranges["instruction_start"]] = SEGMENTS.index("chat")
    seg[ranges["context_start"] : ce] = SEGMENTS.index("context")
    seg[ranges["question_start"] : ranges["question_end"]] = SEGMENTS.index("question")
    if lay.get("chat", False):
        seg[max(ranges["question_end"], T - 5) :] = SEGMENTS.index("chat")
        idx[0] = 0  # <|im_start|>
    tokens = _table(
        {
            **key(T),
            "position": pa.array(np.arange(T, dtype=np.int32)),
            "token_id": pa.array(model.vocab_id[idx]),
            "token_text": model.vocab_text.take(pa.array(idx)),
            "category": pa.DictionaryArray.from_arrays(pa.array(model.vocab_cat[idx]), pa.array(CATEGORIES)),
            "segment": pa.DictionaryArray.from_arrays(pa.array(seg), pa.array(SEGMENTS)),
        },
        schemas.TOKENS.schema,
        T,
    )
    # layer_stats: per-head aggregates of the drawn tokens where they exist, fitted spreads elsewhere
    ls_schema = schemas.LAYER_STATS.schema
    ls = {"layer": np.repeat(np.arange(model.L, dtype=np.int16), model.H)}
    ls["kv_head"] = np.tile(np.arange(model.H, dtype=np.int16), model.L)
    for name, (mean, sd) in model.layer_stats.items():
        v = mean + sd * rng_lay.standard_normal(LH)
        ls[name] = np.clip(v, -1, 1) if "correlation" in name else np.abs(v)
    for kind in ("key", "value"):
        ls[f"{kind}_absmean"] = cols[f"{kind}_absmean"].mean(1)
        ls[f"{kind}_absmax"] = cols[f"{kind}_absmax"].max(1)
    ls["kv_norm_correlation"] = _pearson_rows(np.log(cols["key_norm"]), np.log(cols["value_norm"]))
    ls_cols = {f.name: pa.array(ls[f.name], f.type) for f in ls_schema if f.name in ls}
    layer_stats = _table({**key(LH), **ls_cols}, ls_schema, LH)
    s = model.samples
    orig = max(T, int(round(T * float(np.interp(rng_lay.random(), model.qat, s["original_ratio"])))))
    row = {
        **keys,
        "language": lay.get("language", "en"),
        "answers": [""],
        "all_classes": ["class_a", "class_b", "class_c"] if lay.get("classes") else None,
        "length_words": int(orig * s["words_per_token"]),
        "n_tokens": T,
        "n_tokens_original": orig,
        "truncated": orig > T,
        "chat_template": bool(lay.get("chat", False)),
        **ranges,
        "max_new_tokens": int(lay.get("max_new_tokens", 64)),
        "source": f"{base_task}.jsonl:{k + 1}",
        "prefill_seconds": s["prefill_seconds_per_token"] * T * float(rng_lay.uniform(0.9, 1.1)),
        "stats_seconds": s["stats_seconds_per_token"] * T * float(rng_lay.uniform(0.9, 1.1)),
        "extracted_at": EPOCH + timedelta(seconds=i),
    }
    samples = pa.Table.from_pylist([row], schema=schemas.SAMPLES.schema)
    return {"tokens": tokens, "token_stats": ts, "layer_stats": layer_stats, "samples": samples}


def generate(
    root: Path,
    rows: int,
    profile: dict | None = None,
    seed: int = 0,
    tasks: int = 21,
    n_tokens: int | None = None,
    model: str = "synthetic",
    run_id: str = "synth",
    *,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write rows // (L * H * n_tokens) synthetic samples (at least one) under the data root `root`.

    Sample i depends only on (seed, i), so a rerun, or a run killed and restarted, writes the same files.
    Tables are written in the real order (samples last: a sample's done marker), the `runs` row at the end.
    """
    t0 = time.perf_counter()
    profile = profile or load_profile()
    n = int(n_tokens or 2048)
    m = _Model(profile, n)
    per_sample = m.LH * n
    count = max(1, int(rows) // per_sample)
    names = _task_names(profile, max(1, int(tasks)))
    store = Store(root)
    nbytes = 0
    fake_seconds = 0.0
    for i in range(count):
        task, base = names[i % len(names)]
        keys = {"run_id": run_id, "model": model, "task": task, "sample_id": f"synth-{i:06d}"}
        tables = _sample_tables(m, i, seed, task, base, i // len(names), keys)
        for name in ("tokens", "token_stats", "layer_stats", "samples"):
            nbytes += store.write(name, tables[name], keys["sample_id"]).stat().st_size
        row = tables["samples"].to_pylist()[0]
        fake_seconds += row["prefill_seconds"] + row["stats_seconds"]
        if progress:
            progress(i + 1, count)
    params = {
        "max_tokens": n,
        "max_tokens_effective": n,
        "rows": count * per_sample,
        "seed": seed,
        "tasks": [t for t, _ in names],
        "window": profile.get("window", 32),
        "synthetic": True,
        "profile_model": profile.get("source", {}).get("model"),
    }
    run = {
        "run_id": run_id,
        "model": model,
        "model_source": "synthetic:" + ",".join(profile.get("source", {}).get("model") or ["profile"]),
        "model_revision": f"synthetic-seed{seed}",
        "dtype": "float32",
        "device": "cpu",
        "attn_impl": "synthetic",
        "parameters": json.dumps(params, sort_keys=True),
        "versions": json.dumps({"numpy": np.__version__, "pyarrow": pa.__version__}, sort_keys=True),
        "started_at": EPOCH,
        "finished_at": EPOCH + timedelta(seconds=fake_seconds),
        "seconds": fake_seconds,
        "invocations": 1,
        "samples": count,
        "tokens": count * n,
        "skipped": 0,
    }
    nbytes += store.write("runs", pa.Table.from_pylist([run], schema=schemas.RUNS.schema), "run").stat().st_size
    return {"samples": count, "rows": count * per_sample, "seconds": time.perf_counter() - t0, "bytes": nbytes}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit", help="fit a profile to a real warehouse's data root")
    f.add_argument("data_root", type=Path)
    f.add_argument("out", type=Path)
    f.add_argument("--max-samples", type=int, default=64)
    f.add_argument("--window", type=int, default=32, help="the extraction's observation window")
    g = sub.add_parser("gen", help="write a synthetic warehouse under a data root")
    g.add_argument("root", type=Path)
    g.add_argument("--rows", type=int, required=True, help="token_stats rows wanted (rounded down to whole samples)")
    g.add_argument("--profile", type=Path, default=DEFAULT_PROFILE)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--tasks", type=int, default=21)
    g.add_argument("--n-tokens", type=int, default=None)
    g.add_argument("--model", default="synthetic")
    g.add_argument("--run-id", default="synth")
    g.add_argument("--progress", action="store_true", help="print one line per sample written")
    a = ap.parse_args(argv)
    if a.cmd == "fit":
        profile = fit_profile(a.data_root, a.max_samples, a.window)
        save_profile(profile, a.out)
        print(f"{a.out}: {a.out.stat().st_size} bytes, {profile['layers']} layers x {profile['kv_heads']} kv heads")
        return 0
    show = (lambda i, n: print(f"sample {i}/{n}", flush=True)) if a.progress else None
    out = generate(
        a.root, a.rows, load_profile(a.profile), a.seed, a.tasks, a.n_tokens, a.model, a.run_id, progress=show
    )
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
