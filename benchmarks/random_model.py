"""Randomly initialised models of real shapes: speed figures where no weights can be fetched (the GPU machine).

Speed and memory depend on the shape, not the weights, so a random Llama-3-8B prefills and decodes as fast as
the real one. Nothing here is downloaded: the tokenizer comes from a local folder (or the default model's).
"""

from __future__ import annotations

import torch

from extract import model as models

# Llama-3-8B's shape (from its public config.json). Positions raised to 32K: a random model has no trained
# context limit, and the GPU check prefills 16K tokens (Llama-3.1-8B, the same shape, takes 128K).
SHAPES = {
    "llama3-8b": dict(
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
    ),
    # FACTS.md's unit-test shape with the default tokenizer's vocabulary: a CPU smoke test of the GPU scripts
    "tiny": dict(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=32768,
        rope_theta=1e5,
        initializer_range=0.2,
        tie_word_embeddings=True,
    ),
}


def tokenizer(path: str | None):
    """The tokenizer at `path`, or the default model's (its ids are < 49152, inside every shape's vocabulary)."""
    if path:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)
    return models.load_cached(models.DEFAULT_MODEL, "cpu").tokenizer


def random_model(shape: str, device: str = "auto", dtype: str = "auto", tok=None, attn: str = "auto") -> models.Loaded:
    """A `Loaded` of random weights in `shape`, built directly on the device in the chosen dtype."""
    from transformers import LlamaConfig, LlamaForCausalLM

    dev = models.pick_device(device)
    cfg = LlamaConfig(**SHAPES[shape], attn_implementation=models.pick_attn(dev, attn))
    torch_dtype = models.pick_dtype(dev, dtype)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)  # 16 GB of bf16 weights, never a 32 GB float32 copy first
    try:
        with torch.device(dev):
            lm = LlamaForCausalLM(cfg).eval()
    finally:
        torch.set_default_dtype(default)
    return models.Loaded(
        lm, tok, f"random-{shape}", f"random:{shape}", "random", dev, str(torch_dtype).removeprefix("torch."),
        cfg._attn_implementation,
    )  # fmt: skip
