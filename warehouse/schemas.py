"""Every warehouse table's schema, grain and partitioning, defined once.

Column names are a contract with the people who write SQL against them: rename
nothing without a migration note in the README. Sample-level tables carry
`model`, `task`, `run_id`, `sample_id` both as columns and as Hive partition
directories, so a single file is self-describing and DuckDB prunes by path.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class Table:
    """A warehouse table: its Arrow schema, grain (one row per ...), key and partitions."""

    name: str
    schema: pa.Schema
    grain: str
    key: tuple[str, ...]
    partitions: tuple[str, ...]

    @property
    def columns(self) -> list[str]:
        return self.schema.names


def _schema(*fields: tuple[str, pa.DataType], meta: dict[str, str] | None = None) -> pa.Schema:
    return pa.schema([pa.field(n, t, nullable=True) for n, t in fields], metadata=meta)


_STR = pa.string()
_DICT = pa.dictionary(pa.int8(), pa.string())  # low-cardinality labels (category, segment)
_F16 = pa.float16()  # per-token magnitudes: 3 significant digits are plenty, halves the bytes
_F32 = pa.float32()
_I16 = pa.int16()
_I32 = pa.int32()

SAMPLE_KEY = (("run_id", _STR), ("model", _STR), ("task", _STR), ("sample_id", _STR))
SAMPLE_PARTITIONS = ("model", "task", "run_id")

RUNS = Table(
    "runs",
    _schema(
        ("run_id", _STR),
        ("model", _STR),
        ("model_source", _STR),  # hub id, local path or gguf://package/file
        ("model_revision", _STR),
        ("dtype", _STR),
        ("device", _STR),
        ("attn_impl", _STR),
        ("parameters", _STR),  # JSON of the flow parameters that shaped the data
        ("versions", _STR),  # JSON {library: version}
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("finished_at", pa.timestamp("us", tz="UTC")),
        ("seconds", pa.float64()),  # summed over every invocation of this run
        ("invocations", _I32),
        ("samples", _I32),  # samples extracted so far (all invocations)
        ("tokens", pa.int64()),
        ("skipped", _I32),  # samples skipped with a recorded reason (see `skipped`)
        # the flow parameters that shape the data, as columns (`parameters` keeps the full JSON):
        ("max_tokens", _I32),  # prompt budget asked for
        ("max_tokens_effective", _I32),  # ... after the model's position limit: what prompts were truncated to
        ("attn_window", _I32),  # the `window` parameter: queries whose attention `attn_received` averages
        ("raw_kv", pa.bool_()),  # were raw key/value vectors stored (`kv`)?
        ("data_dirs", pa.list_(_STR)),  # every LongBench folder an invocation of this run read (see samples.source_dir)
    ),
    grain="one row per extraction run (a model + the parameters that shape the data)",
    key=("run_id",),
    partitions=("model", "run_id"),
)

LAYERS = Table(
    "layers",
    _schema(
        ("run_id", _STR),
        ("model", _STR),
        ("layer", _I16),
        ("attention", _STR),  # full | sliding: a sliding layer's query at p sees keys p - sliding_window < t <= p
        ("sliding_window", _I32),  # NULL for a full layer
        ("query_heads", _I16),
        ("kv_heads", _I16),
        ("head_dim", _I16),
        ("scaling", _F32),  # the logit scale the layer uses (1/sqrt(head_dim), or the model's own)
        ("softcap", _F32),  # attention logits -> softcap * tanh(logits / softcap) (Gemma2); NULL: none
        ("sinks", pa.bool_()),  # per-head attention sinks take softmax mass (gpt-oss)
    ),
    grain="one row per (run_id, layer): how each layer attends, as read at transformers' attention interface",
    key=("run_id", "layer"),
    partitions=("model", "run_id"),
)

SAMPLES = Table(
    "samples",
    _schema(
        *SAMPLE_KEY,
        ("language", _STR),
        ("answers", pa.list_(_STR)),
        ("all_classes", pa.list_(_STR)),
        ("length_words", _I32),  # LongBench's own `length` field
        ("n_tokens", _I32),  # tokens fed to the model (after truncation)
        ("n_tokens_original", _I32),  # tokens before truncation
        ("truncated", pa.bool_()),
        ("chat_template", pa.bool_()),  # wrapped in the model's chat template?
        ("instruction_start", _I32),  # token ranges are [start, end) positions
        ("instruction_end", _I32),
        ("context_start", _I32),
        ("context_end", _I32),
        ("question_start", _I32),  # start == end when the task has no question
        ("question_end", _I32),
        ("max_new_tokens", _I32),  # LongBench's dataset2maxlen for the task
        ("source", _STR),  # file:line the sample came from (short form of the four columns below)
        ("source_dir", _STR),  # the LongBench folder it was read from (absolute path)
        ("source_file", _STR),  # data file in that folder's data/, e.g. hotpotqa.jsonl
        ("source_line", _I32),  # 1-based line of the record in that file
        ("source_sha256", _STR),  # hex SHA-256 of the record's bytes (the line without its newline)
        ("prefill_seconds", pa.float64()),
        ("stats_seconds", pa.float64()),
        ("extracted_at", pa.timestamp("us", tz="UTC")),
    ),
    grain="one row per (run_id, task, sample_id); written last, so its presence marks the sample done",
    key=("run_id", "task", "sample_id"),
    partitions=SAMPLE_PARTITIONS,
)

TOKENS = Table(
    "tokens",
    _schema(
        *SAMPLE_KEY,
        ("position", _I32),
        ("token_id", _I32),
        ("token_text", _STR),
        ("category", _DICT),  # see warehouse.vocabulary.CATEGORIES
        ("segment", _DICT),  # see warehouse.vocabulary.SEGMENTS (chat | instruction | context | question)
    ),
    grain="one row per (run_id, task, sample_id, position)",
    key=("run_id", "task", "sample_id", "position"),
    partitions=SAMPLE_PARTITIONS,
)

TOKEN_STATS = Table(
    "token_stats",
    _schema(
        *SAMPLE_KEY,
        ("layer", _I16),
        ("kv_head", _I16),
        ("position", _I32),
        ("key_norm", _F16),  # L2 norm of the key vector (after RoPE; RoPE keeps norms)
        ("value_norm", _F16),
        ("key_absmean", _F16),  # mean |x| over head_dim
        ("value_absmean", _F16),
        ("key_absmax", _F16),  # max |x| over head_dim
        ("value_absmax", _F16),
        ("attn_received", _F32),  # mean attention paid to this position by the last `window` queries
        #                           (float32 range, float16's 3 significant digits: see extract.sample.round_mantissa)
        ("attn_received_context", _F32),  # the same from the `window` queries ending at context_end, over
        #                                   the keys before it (null after): what a question-agnostic policy sees
    ),
    grain="one row per (run_id, task, sample_id, layer, kv_head, position)",
    key=("run_id", "task", "sample_id", "layer", "kv_head", "position"),
    partitions=SAMPLE_PARTITIONS,
)

LAYER_STATS = Table(
    "layer_stats",
    _schema(
        *SAMPLE_KEY,
        ("layer", _I16),
        ("kv_head", _I16),
        ("key_sparsity", _F32),  # share of entries with |x| < sparsity_rel * RMS of the head
        ("value_sparsity", _F32),
        ("kv_correlation", _F32),  # Pearson r of key vs value entries (flattened)
        ("kv_norm_correlation", _F32),  # Pearson r of per-token key norm vs value norm
        ("key_std", _F32),
        ("value_std", _F32),
        ("key_absmean", _F32),
        ("value_absmean", _F32),
        ("key_absmax", _F32),
        ("value_absmax", _F32),
        ("key_int8_error", _F32),  # relative Frobenius error of a per-token symmetric round trip
        ("value_int8_error", _F32),
        ("key_int4_error", _F32),
        ("value_int4_error", _F32),
        ("key_fp8_error", _F32),  # float8 e4m3 round trip, per-token scaled; null without torch fp8
        ("value_fp8_error", _F32),
    ),
    grain="one row per (run_id, task, sample_id, layer, kv_head)",
    key=("run_id", "task", "sample_id", "layer", "kv_head"),
    partitions=SAMPLE_PARTITIONS,
)


def kv_schema(head_dim: int) -> pa.Schema:
    """Raw key/value vectors; the list size is the model's head_dim."""
    vec = pa.list_(_F16, head_dim)
    return _schema(
        *SAMPLE_KEY,
        ("layer", _I16),
        ("kv_head", _I16),
        ("position", _I32),
        ("key", vec),
        ("value", vec),
    )


KV = Table(
    "kv",
    kv_schema(64),  # the SmolLM2 shape; writers pass kv_schema(head_dim) for other models
    grain="one row per (run_id, task, sample_id, layer, kv_head, position) for the sampled subset",
    key=("run_id", "task", "sample_id", "layer", "kv_head", "position"),
    partitions=SAMPLE_PARTITIONS,
)

SKIPPED = Table(
    "skipped",
    _schema(
        *SAMPLE_KEY,
        ("source", _STR),  # file:line
        ("source_dir", _STR),  # the LongBench folder of that file
        ("reason", _STR),
        ("skipped_at", pa.timestamp("us", tz="UTC")),
    ),
    grain="one row per input record that was not extracted, with why",
    key=("run_id", "task", "source"),
    partitions=SAMPLE_PARTITIONS,
)

NEEDLES = Table(
    "needles",
    _schema(
        *SAMPLE_KEY,
        ("kind", _STR),  # passkey | single | multi (extract/needle.py)
        ("length_requested", _I32),  # context tokens asked for (approximate; context_tokens is what it got)
        ("depth_requested", _I16),  # percent of the haystack asked to precede the needle
        ("seed", _I32),
        ("depth_actual", _F32),  # percent of the haystack (needles aside) before the needle: the nearest sentence end
        ("needle", _STR),  # the value asked for: the answer, scored by exact match
        ("needle_text", _STR),  # the needle sentence as inserted
        ("needle_count", _I16),  # needle sentences in the context, distractors included
        ("context_tokens", _I32),  # context_end - context_start of the sample
        ("needle_start", _I32),  # token positions [start, end) of the needle sentence; NULL when truncation cut it
        ("needle_end", _I32),
        ("depth_tokens", _F32),  # percent of the other context tokens before needle_start
    ),
    grain="one row per needle sample (task needle) of a run: its grid cell and where the needle landed",
    key=("run_id", "task", "sample_id"),
    partitions=SAMPLE_PARTITIONS,
)

# --- eviction (transform/) -------------------------------------------------------------------------

POLICIES = Table(
    "policies",
    _schema(
        ("policy_id", _STR),  # stable hash of name + params + budget: one fully specified policy instance
        ("name", _STR),  # registry name, e.g. sink_recent, knorm, snapkv
        ("params", _STR),  # JSON of the policy's parameters (budget included)
        ("budget", pa.float64()),  # tokens kept (>= 1) or share kept (0 < budget < 1)
        ("budget_unit", _STR),  # tokens | ratio
        ("per_head", pa.bool_()),  # does the keep-set differ per (layer, kv_head)?
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("ranking_id", _STR),  # the `rankings` this policy reads: every budget of a policy shares one
        ("threshold", _STR),  # budget: keep the first k(budget, n) of the ranking | all: its fixed kept_count
        ("forced_first", _I32),  # the first positions of the cache, kept before any ranked one (sink)
        ("forced_last", _I32),  # the last positions of the cache, kept before any ranked one (recent, window)
    ),
    grain="one row per policy instance (name + parameters + budget)",
    key=("policy_id",),
    partitions=("policy_id",),
)

RANKINGS = Table(
    "rankings",
    _schema(
        *SAMPLE_KEY,
        ("ranking_id", _STR),  # policies.ranking_id: a policy and the parameters that shape its ranking
        ("setting", _STR),  # question_aware | question_agnostic: when the cache is evicted (transform/settings.py)
        ("layer", _I16),  # NULL (with kv_head): one ranking shared by every layer and KV head
        ("kv_head", _I16),
        ("n", _I32),  # positions in the cache at eviction: 0 .. n-1 are ranked
        ("positions", pa.list_(_I32)),  # those n positions, most worth keeping first (ties: the later one)
        ("kept_count", _I32),  # a fixed keep-set (threshold all): its first kept_count; NULL: the budget decides
        ("positions_from", _STR),  # NULL, or the setting whose positions this row reads, restricted to its n
        #                            (a score that does not depend on the setting is sorted once: no second list)
    ),
    grain="one row per (run_id, task, sample_id, ranking_id, setting, layer, kv_head); a budget is a threshold on it",
    key=("run_id", "task", "sample_id", "ranking_id", "setting", "layer", "kv_head"),
    partitions=SAMPLE_PARTITIONS,
)

QUALITY = Table(
    "quality",
    _schema(
        *SAMPLE_KEY,
        ("policy_id", _STR),
        ("setting", _STR),  # question_aware | question_agnostic
        ("budget", pa.float64()),  # as in `policies`
        ("metric", _STR),  # LongBench metric of the task: qa_f1, rouge, classification, ...
        ("score", pa.float64()),  # LongBench score x100 of the answer decoded with the evicted cache
        ("score_full", pa.float64()),  # ... with the full cache
        ("answer_nll", pa.float64()),  # teacher-forced mean NLL of the reference answer, evicted cache
        ("answer_nll_full", pa.float64()),
        ("kl", pa.float64()),  # mean KL(full || evicted) of next-token distributions over the answer
        ("kl_continuation", pa.float64()),  # ... over the full cache's greedy answer, teacher-forced (all steps)
        ("continuation_tokens", _I32),  # tokens of that greedy answer (prediction_full, EOS included)
        ("kept_tokens", _I32),  # per KV head of an evicted layer: kept prompt positions (+ those fed after eviction)
        ("evicted_layers", _I16),  # layers the keep-set applied to; the others are sliding layers that keep their
        #                            window, as the model does (transform/evict.py); NULL in rows before 2026-12
        ("n_tokens", _I32),  # cache length before eviction
        ("kv_bytes_kept", pa.int64()),  # K/V bytes every layer holds when decoding starts (sliding: its window)
        ("kv_bytes_full", pa.int64()),
        ("decode_seconds", pa.float64()),  # evict + feed the rest + greedy decode, its share of a batched decode
        ("decode_seconds_full", pa.float64()),  # the same with the full cache
        ("prefill_seconds", pa.float64()),  # the one prefill shared by every policy of the (sample, setting)
        ("new_tokens", _I32),  # tokens generated with the evicted cache (EOS included)
        ("answer_tokens", _I32),  # reference-answer tokens scored by answer_nll / kl (capped at max_new_tokens)
        ("prediction", _STR),
        ("prediction_full", _STR),
        ("evaluated_at", pa.timestamp("us", tz="UTC")),
    ),
    grain="one row per (run_id, task, sample_id, policy_id, setting)",
    key=("run_id", "task", "sample_id", "policy_id", "setting"),
    partitions=SAMPLE_PARTITIONS,
)

# --- model internals on short prompts (extract/demo.py; reports 14 and 15) ---------------------------------

DEMO_KEY = (("run_id", _STR), ("model", _STR))
DEMO_PARTITIONS = ("model", "run_id")
_TS = pa.timestamp("us", tz="UTC")

DEMO_TOKENS = Table(
    "demo_tokens",
    _schema(*DEMO_KEY, ("prompt", _STR), ("position", _I32), ("token_id", _I32), ("token_text", _STR)),
    grain="one row per (run_id, prompt, position); prompt = attention | decode (also the shared prefix context)",
    key=("run_id", "prompt", "position"),
    partitions=DEMO_PARTITIONS,
)

DEMO_PROJECTIONS = Table(
    "demo_projections",
    _schema(
        *DEMO_KEY,
        ("layer", _I16),
        ("kind", _STR),  # q | k | v (after q/k/v_proj, before RoPE) | o (per-head attention output, o_proj input)
        ("head", _I16),  # query head for q and o, KV head for k and v
        ("kv_head", _I16),  # the KV head this head reads (grouped-query attention); = head for k and v
        ("position", _I32),
        ("norm", _F32),  # L2 norm of the head's vector
        ("vector", pa.list_(_F16)),  # head_dim values
    ),
    grain="one row per (run_id, layer, kind, head, position) of the `attention` prompt",
    key=("run_id", "layer", "kind", "head", "position"),
    partitions=DEMO_PARTITIONS,
)

DEMO_ATTENTION = Table(
    "demo_attention",
    _schema(
        *DEMO_KEY,
        ("layer", _I16),
        ("q_head", _I16),
        ("kv_head", _I16),  # the KV head whose keys this query head attends with
        ("query_pos", _I32),
        ("key_pos", _I32),  # <= query_pos (causal): masked entries are not stored
        ("weight", _F32),  # softmax attention weight from eager attention
        ("created_at", _TS),
    ),
    grain="one row per (run_id, layer, q_head, query_pos, key_pos) of the `attention` prompt, key_pos <= query_pos",
    key=("run_id", "layer", "q_head", "query_pos", "key_pos"),
    partitions=DEMO_PARTITIONS,
)

DEMO_DECODE = Table(
    "demo_decode",
    _schema(
        *DEMO_KEY,
        ("step", _I32),  # 0 = the token predicted by the prefill
        ("length", _I32),  # tokens the step attends over (prompt + generated so far)
        ("token_id", _I32),  # greedy token with the cache
        ("token_text", _STR),
        ("token_id_no_cache", _I32),  # greedy token recomputing the whole sequence (same prefix fed)
        ("seconds_cache", pa.float64()),  # one forward of the new token with the cache
        ("seconds_no_cache", pa.float64()),  # one forward of the whole sequence without a cache
        ("max_abs_diff", _F32),  # max |logits(cache) - logits(no cache)| at this step
        ("created_at", _TS),
    ),
    grain="one row per (run_id, step) of greedy decoding on the `decode` prompt",
    key=("run_id", "step"),
    partitions=DEMO_PARTITIONS,
)

DEMO_PREFIX = Table(
    "demo_prefix",
    _schema(
        *DEMO_KEY,
        ("question_index", _I32),
        ("question", _STR),
        ("prefix_tokens", _I32),  # the shared context, prefilled once
        ("question_tokens", _I32),
        ("seconds_prefix", pa.float64()),  # the one prefill of the shared context (paid once for all questions)
        ("seconds_full", pa.float64()),  # prefill of context + question from scratch
        ("seconds_reuse", pa.float64()),  # prefill of the question alone on a copy of the cached context
        ("max_abs_diff", _F32),  # max |logits| difference at the last prompt position, full vs reuse
        ("answer_full", _STR),  # greedy answer, from scratch
        ("answer_reuse", _STR),  # greedy answer, reusing the cached context
        ("created_at", _TS),
    ),
    grain="one row per (run_id, question_index): one question asked on the shared `prefix` context",
    key=("run_id", "question_index"),
    partitions=DEMO_PARTITIONS,
)

DEMO_CACHE_ATTENTION = Table(
    "demo_cache_attention",
    _schema(
        *DEMO_KEY,
        ("layer", _I16),
        ("q_head", _I16),
        ("kv_head", _I16),
        ("query_pos", _I32),  # one of the last `cached_queries` positions of the `attention` prompt
        ("key_pos", _I32),  # 0..query_pos: the cached keys and the query's own
        ("weight", _F32),  # eager attention weight with the query fed alone against the KV cache
        ("created_at", _TS),
    ),
    grain="one row per (run_id, layer, q_head, query_pos, key_pos) of the last queries of the `attention` prompt, "
    "computed incrementally with the cache; the same key in demo_attention holds the weight without it",
    key=("run_id", "layer", "q_head", "query_pos", "key_pos"),
    partitions=DEMO_PARTITIONS,
)

DEMO_TIMING = Table(
    "demo_timing",
    _schema(
        *DEMO_KEY,
        ("length", _I32),  # tokens already in the sequence (cached, or recomputed without a cache)
        ("repeat", _I32),
        ("seconds_cache", pa.float64()),  # one forward of the next token against a cache of `length` tokens
        ("seconds_no_cache", pa.float64()),  # one forward of all length + 1 tokens without a cache
        ("attn_impl", _STR),
        ("source", _STR),  # task/sample_id of the LongBench context whose tokens were fed
        ("created_at", _TS),
    ),
    grain="one row per (run_id, length, repeat): the time of one generated token with and without the cache",
    key=("run_id", "length", "repeat"),
    partitions=DEMO_PARTITIONS,
)

DEMO_HEAD_STATS = Table(
    "demo_head_stats",
    _schema(
        *DEMO_KEY,
        ("layer", _I16),
        ("q_head", _I16),
        ("kv_head", _I16),  # the KV head this query head reads (grouped-query attention)
        ("sink_share", _F32),  # attention on the first 4 tokens, mean over queries
        ("previous_share", _F32),  # attention on the token just before the query
        ("local_share", _F32),  # attention on the 16 latest keys (the query's own included)
        ("mean_distance", _F32),  # attention-weighted query_pos - key_pos, in tokens
        ("entropy", _F32),  # attention entropy / ln(keys visible): 0 = one key, 1 = uniform
        ("share_by_distance", pa.list_(_F32)),  # [i]: attention at distance 0 (i = 0) or in [2^(i-1), 2^i)
        ("tokens", _I32),  # length of the text; queries at positions >= 32 are averaged
        ("source", _STR),  # task/sample_id of the LongBench context
        ("created_at", _TS),
    ),
    grain="one row per (run_id, layer, q_head): causal attention of every query head over a long LongBench context",
    key=("run_id", "layer", "q_head"),
    partitions=DEMO_PARTITIONS,
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        *(RUNS, LAYERS, SAMPLES, TOKENS, TOKEN_STATS, LAYER_STATS, KV, SKIPPED, NEEDLES, POLICIES, RANKINGS, QUALITY),
        *(DEMO_TOKENS, DEMO_PROJECTIONS, DEMO_ATTENTION, DEMO_DECODE, DEMO_PREFIX),
        *(DEMO_CACHE_ATTENTION, DEMO_TIMING, DEMO_HEAD_STATS),
    )
}
