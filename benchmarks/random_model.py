"""Randomly initialised models of real shapes: speed figures where no weights can be fetched (the GPU machine).

Speed and memory depend on the shape, not the weights, so a random Llama-3-8B prefills and decodes as fast as
the real one. Nothing here is downloaded: the tokenizer comes from a local folder (or the default model's).
"""

from __future__ import annotations

import torch

from extract import model as models

# Real shapes from the public config.json files, as (model_type, config). Positions raised to 32K where lower:
# a random model has no trained context limit, and the GPU check prefills 16K tokens. "llama3-8b" is kept as the
# name older figures were measured under (Llama-3.1-8B has the same shape).
_LLAMA3_8B = dict(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=32768,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)
_TINY = dict(  # FACTS.md's unit-test shape with the default tokenizer's vocabulary: CPU smoke tests of the scripts
    vocab_size=49152,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=32768,
    initializer_range=0.2,
    tie_word_embeddings=True,
)
SHAPES: dict[str, tuple[str, dict]] = {
    "llama3-8b": ("llama", _LLAMA3_8B),
    "llama3.1-8b": ("llama", _LLAMA3_8B),
    "qwen2.5-7b": (  # q/k/v biases, 7 query heads per KV head
        "qwen2",
        dict(
            vocab_size=152064,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            max_position_embeddings=32768,
            rope_theta=1000000.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=False,
        ),
    ),
    "gemma2-9b": (  # sliding (4096) and global layers alternating, attention softcapping: eager attention
        "gemma2",
        dict(
            vocab_size=256000,
            hidden_size=3584,
            intermediate_size=14336,
            num_hidden_layers=42,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=256,
            query_pre_attn_scalar=256,
            sliding_window=4096,
            attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0,
            max_position_embeddings=32768,
            rope_theta=10000.0,
        ),
    ),
    "tiny": ("llama", dict(_TINY, rope_theta=1e5)),
    "tiny-qwen2": ("qwen2", _TINY),
    "tiny-gemma2": ("gemma2", dict(_TINY, sliding_window=128, attn_logit_softcapping=50.0, query_pre_attn_scalar=16)),
}


def tokenizer(path: str | None):
    """The tokenizer at `path`, or the default model's (its ids are < 49152, inside every shape's vocabulary)."""
    if path:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)
    return models.load_cached(models.DEFAULT_MODEL, "cpu").tokenizer


def random_model(shape: str, device: str = "auto", dtype: str = "auto", tok=None, attn: str = "auto") -> models.Loaded:
    """A `Loaded` of random weights in `shape`, built directly on the device in the chosen dtype. `attn` auto:
    flash attention where installed, else the model's default (sdpa; eager for Gemma2)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from extract import capture

    model_type, params = SHAPES[shape]
    dev = models.pick_device(device)
    cfg = AutoConfig.for_model(model_type, **params)
    torch_dtype = models.pick_dtype(dev, dtype)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)  # 16 GB of bf16 weights, never a 32 GB float32 copy first
    try:
        with torch.device(dev):
            lm = AutoModelForCausalLM.from_config(cfg, attn_implementation=models.pick_attn(dev, attn)).eval()
    finally:
        torch.set_default_dtype(default)
    return models.Loaded(
        lm, tok, f"random-{shape}", f"random:{shape}", "random", dev, str(torch_dtype).removeprefix("torch."),
        str(lm.config._attn_implementation), capture.probe(lm),
    )  # fmt: skip
