"""Tiny randomly initialised models of the attention architectures the field studies, built from transformers'
own config classes (no download, a few MB each). Windows are shorter than the test prompts, so sliding layers
really slide. `initializer_range=0.2`: at the default 0.02 outputs barely react to pruning (FACTS.md)."""

from __future__ import annotations

import torch
import transformers as tf

WINDOW = 128  # sliding window of the sliding architectures: shorter than the 300- and 512-token test prompts


def _common(vocab: int, **over) -> dict:
    """FACTS.md's unit-test shape (tests.conftest.TINY) at 4 layers, with token ids the tokenizers agree on."""
    from tests.conftest import TINY

    cfg = {**TINY, "vocab_size": vocab, "num_hidden_layers": 4, "bos_token_id": 1, "eos_token_id": 2}
    cfg.update(pad_token_id=2, **over)
    return {k: v for k, v in cfg.items() if v is not None}


def _configs(vocab: int) -> dict[str, tf.PretrainedConfig]:
    c = lambda **o: _common(vocab, **o)  # noqa: E731
    return {
        "llama": tf.LlamaConfig(**c(num_attention_heads=8, head_dim=8)),  # 8 query heads on 2 KV heads
        "qwen2": tf.Qwen2Config(**c()),  # q/k/v biases
        "qwen3": tf.Qwen3Config(**c(head_dim=48)),  # head_dim != hidden / heads; per-head q/k norms
        "mistral": tf.MistralConfig(**c(), sliding_window=WINDOW),  # every layer slides
        "gemma2": tf.Gemma2Config(  # sliding + global layers, attention softcapping, query_pre_attn_scalar
            **c(), sliding_window=WINDOW, attn_logit_softcapping=50.0, query_pre_attn_scalar=24
        ),
        "gemma3": tf.Gemma3TextConfig(  # 3 sliding + 1 global, one KV head
            **c(num_key_value_heads=1),
            sliding_window=WINDOW,
            layer_types=["sliding_attention"] * 3 + ["full_attention"],
        ),
        "phi3": tf.Phi3Config(**c(head_dim=None)),  # fused qkv_proj
        "olmo2": tf.Olmo2Config(**c(head_dim=None)),  # q/k norms over the whole projection
        "gptoss": tf.GptOssConfig(  # attention sinks, sliding + full layers, mixture of experts
            **c(),
            num_local_experts=4,
            num_experts_per_tok=2,
            sliding_window=WINDOW,
            layer_types=["sliding_attention", "full_attention"] * 2,
        ),
    }


SUPPORTED = ("llama", "qwen2", "qwen3", "mistral", "gemma2", "gemma3", "phi3", "olmo2", "gptoss")
EAGER_ONLY = {"gemma2", "gptoss"}  # transformers refuses sdpa for Gemma2 (softcapping) and gpt-oss (sinks)
# In the fast subset (`-m "not slow"`): full attention with GQA, sliding windows, both mixed. The others took
# 5-12 s each through eviction on the 2-core machine.
FAST = ("llama", "qwen2", "mistral", "gemma3")


def fast_or_slow(names) -> list:
    """pytest params of `names`, those outside FAST marked slow."""
    import pytest

    return [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in names]


def hybrid_config(vocab: int = 512) -> tf.PretrainedConfig:
    """LFM2: short convolutions between attention layers: a cache that is not per-position keys and values."""
    over = _common(vocab, head_dim=None, intermediate_size=None)
    return tf.Lfm2Config(**over, layer_types=["conv", "full_attention", "conv", "full_attention"])


def build(name: str, vocab: int = 512, seed: int = 0, attn: str | None = None) -> torch.nn.Module:
    """A tiny model of architecture `name` (SUPPORTED, or "lfm2"), in eval mode."""
    config = hybrid_config(vocab) if name == "lfm2" else _configs(vocab)[name]
    if attn:
        config._attn_implementation = attn
    torch.manual_seed(seed)
    return tf.AutoModelForCausalLM.from_config(config).eval()


def save(name: str, folder, tokenizer, seed: int = 0) -> str:
    """The model saved with `tokenizer` beside it (the default model's, vocab 49152): a local model folder."""
    build(name, vocab=len(tokenizer), seed=seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
