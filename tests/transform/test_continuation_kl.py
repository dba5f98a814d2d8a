"""The reference-free measure: KL(full || evicted) along the full cache's own greedy continuation, teacher-forced
through each evicted cache (transform.evaluate._run), on the tiny random Llama: 0 for keep-all, > 0 for an
eviction that changes the answer, equal to a direct per-policy computation with transform.decode, and step 0
identical by construction in question_aware."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from transform import decode
from transform.evaluate import Reference, _run


class Tok:
    """Just enough tokenizer for _run: token ids as text."""

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def evict_most(prefix, kept: int) -> np.ndarray:
    """Keep the first and last kept/2 positions of the evicted prefix, in every layer and head."""
    L, H = len(prefix.cache.layers), prefix.cache.layers[0].keys.shape[1]
    pos = np.r_[0 : kept // 2, prefix.length - kept // 2 : prefix.length]
    return np.broadcast_to(pos, (L, H, len(pos))).copy()


def full_and_policies(model, setting, keeps, answer=(5, 17, 33)):
    torch.manual_seed(11)
    ids = torch.randint(0, 512, (150,))
    prefix = decode.prefill(model, ids, setting, context_end=100)
    sample = SimpleNamespace(task="qasper", max_new_tokens=12)
    (full,) = _run(model, Tok(), prefix, [None], sample, frozenset(), list(answer))
    ref = Reference(full.logprobs, full.tokens, full.continuation_logprobs)
    return prefix, full, _run(model, Tok(), prefix, [k(prefix) for k in keeps], sample, frozenset(), list(answer), ref)


@pytest.mark.parametrize("setting", decode.SETTINGS)
def test_keep_all_is_zero_and_an_answer_changing_eviction_is_not(tiny_llama, setting):
    prefix, full, (same, evicted) = full_and_policies(tiny_llama, setting, [lambda p: None, lambda p: evict_most(p, 8)])
    assert full.continuation_logprobs.shape == (len(full.tokens), 512) and len(full.tokens) == 12
    # keep-all decodes in a batch with another row, the full cache alone: equal up to float rounding
    assert same.tokens == full.tokens and same.kl_continuation < 1e-6 and same.kl < 1e-6
    assert evicted.tokens != full.tokens, "the eviction must change the answer for the test to mean anything"
    assert evicted.kl_continuation > 1e-3 and evicted.kl > 0


@pytest.mark.parametrize("setting", decode.SETTINGS)
def test_continuation_kl_equals_a_direct_computation(tiny_llama, setting):
    """One policy at a time with transform.decode: resume, teacher-force the full cache's greedy tokens, KL."""
    prefix, full, (got,) = full_and_policies(tiny_llama, setting, [lambda p: evict_most(p, 40)])
    keep = evict_most(prefix, 40)
    lp_full = decode.answer_logprobs(tiny_llama, decode.resume(tiny_llama, prefix, None), full.tokens)
    lp = decode.answer_logprobs(tiny_llama, decode.resume(tiny_llama, prefix, keep), full.tokens)
    steps = decode.kl_steps(lp_full, lp)
    assert got.kl_continuation == pytest.approx(float(steps.mean()), rel=1e-4, abs=1e-7)
    if setting == "question_aware":
        # the first continuation token is predicted by the full prefill under every policy: exactly 0,
        # which is why quality_samples averages over the steps after it in this setting
        assert float(steps[0]) == 0.0 and float(steps[1:].mean()) > 0
    else:
        assert float(steps[0]) > 0
