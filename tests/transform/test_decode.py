"""Prefill once, continue from a (compacted) copy: keep-all reproduces `model.generate` token for token,
on the tiny random Llama and on the real default model with a real LongBench prompt, in both settings."""

import numpy as np
import pytest
import torch

from extract.longbench import open_longbench, read_task
from extract.prompts import build_prompt
from tests.conftest import FIXTURE_LONGBENCH, generate
from transform import decode


@pytest.mark.parametrize("setting", decode.SETTINGS)
def test_keep_all_reproduces_generate_tiny(tiny_llama, setting):
    torch.manual_seed(2)
    ids = torch.randint(0, 512, (150,))
    want = generate(tiny_llama, ids, 24, pad_token_id=0, eos_token_id=None)
    prefix = decode.prefill(tiny_llama, ids, setting, context_end=100)
    assert prefix.length == (150 if setting == "question_aware" else 100)
    assert decode.greedy(tiny_llama, decode.resume(tiny_llama, prefix, None), 24) == want


def test_eos_stops_and_min_new_tokens_match_generate(tiny_llama):
    torch.manual_seed(3)
    ids = torch.randint(0, 512, (64,))
    free = generate(tiny_llama, ids, 12, pad_token_id=0, eos_token_id=None)
    eos = free[3]  # a token greedy decoding produces: stop there
    prefix = decode.prefill(tiny_llama, ids, "question_aware", 64)
    got = decode.greedy(tiny_llama, decode.resume(tiny_llama, prefix, None), 12, {eos})
    assert got == free[: free.index(eos) + 1]
    first = free[0]  # suppressing EOS on the first token, as generate's min_new_tokens does
    got = decode.greedy(tiny_llama, decode.resume(tiny_llama, prefix, None), 12, {first}, min_new_tokens=1)
    assert got == generate(tiny_llama, ids, 12, pad_token_id=0, eos_token_id=first, min_new_tokens=1)
    assert got[0] != first


def test_teacher_forcing_equals_one_forward_over_prompt_and_answer(tiny_llama):
    torch.manual_seed(4)
    ids, answer = torch.randint(0, 512, (80,)), [7, 8, 9, 10, 11]
    prefix = decode.prefill(tiny_llama, ids, "question_agnostic", 60)
    lp = decode.answer_logprobs(tiny_llama, decode.resume(tiny_llama, prefix, None), answer)
    with torch.inference_mode():
        logits = tiny_llama(torch.cat([ids, torch.tensor(answer)])[None]).logits[0, 79:84].float()
    torch.testing.assert_close(lp, logits.log_softmax(-1), atol=1e-4, rtol=1e-4)
    nll = decode.nll(lp, answer)
    assert nll == pytest.approx(float(-logits.log_softmax(-1)[torch.arange(5), answer].mean()), rel=1e-5)
    assert decode.mean_kl(lp, lp) == pytest.approx(0.0, abs=1e-7)
    keep = np.broadcast_to(np.r_[0:4, 40:60], (2, 2, 24)).copy()
    evicted = decode.answer_logprobs(tiny_llama, decode.resume(tiny_llama, prefix, keep), answer)
    assert decode.mean_kl(lp, evicted) > 1e-3  # agnostic eviction changes every answer position


def test_fork_gives_independent_caches(tiny_llama):
    ids = torch.arange(40)
    prefix = decode.prefill(tiny_llama, ids, "question_aware", 40)
    a = decode.resume(tiny_llama, prefix, None)
    b = decode.fork(a)
    decode.greedy(tiny_llama, a, 5)
    assert a.cache.get_seq_length() == 44 and b.cache.get_seq_length() == 40 == prefix.cache.get_seq_length()


def test_bad_settings_are_named(tiny_llama):
    with pytest.raises(decode.SettingError, match="unknown setting 'sideways'"):
        decode.prefill(tiny_llama, torch.arange(10), "sideways", 5)
    with pytest.raises(decode.SettingError, match="0 < context_end <= 10"):
        decode.prefill(tiny_llama, torch.arange(10), "question_agnostic", 0)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        decode.greedy(
            tiny_llama,
            decode.resume(tiny_llama, decode.prefill(tiny_llama, torch.arange(10), "question_aware", 10), None),
            0,
        )  # noqa: E501


@pytest.fixture(scope="module")
def trec_prompt(smol):
    lb = open_longbench(FIXTURE_LONGBENCH)
    sample = next(iter(read_task(lb, "trec", 1)))
    return build_prompt(smol.tokenizer, lb.prompts["trec"], sample, 256)


@pytest.mark.model
@pytest.mark.parametrize("setting", decode.SETTINGS)
def test_keep_all_reproduces_generate_real_model(smol, trec_prompt, setting):
    ids = torch.from_numpy(trec_prompt.input_ids)
    eos = smol.tokenizer.eos_token_id
    want = generate(smol.model, ids, 10, pad_token_id=eos, eos_token_id=eos)
    prefix = decode.prefill(smol.model, ids, setting, trec_prompt.ranges()["context_end"])
    assert decode.greedy(smol.model, decode.resume(smol.model, prefix, None), 10, {eos}) == want


@pytest.mark.model
def test_real_model_evicted_cache_equals_masked_full_cache(smol, trec_prompt):
    ids = torch.from_numpy(trec_prompt.input_ids)
    T = len(ids)
    prefix = decode.prefill(smol.model, ids, "question_aware", T)
    pos = np.r_[0:16, T - 64 : T]
    keep = np.broadcast_to(pos, (30, 3, len(pos))).copy()
    new = torch.tensor(smol.tokenizer.encode(" Location", add_special_tokens=False))
    state = decode.resume(smol.model, prefix, keep)
    with torch.inference_mode():
        got = decode.forward(smol.model, new, state.cache, T, logits_to_keep=0)
        q = len(new)
        mask = torch.full((1, 1, q, T + q), float("-inf"))
        mask[..., torch.from_numpy(pos)] = 0
        mask[0, 0, :, T:] = torch.zeros(q, q).masked_fill(
            ~torch.tril(torch.ones(q, q, dtype=torch.bool)), float("-inf")
        )
        cache = decode.resume(smol.model, prefix, None).cache
        positions = torch.arange(T, T + q)[None]
        out = smol.model(
            input_ids=new[None], position_ids=positions, cache=cache, attention_mask=mask, logits_to_keep=0
        )
        full = out.logits[0].float()
    torch.testing.assert_close(got, full, atol=2e-3, rtol=1e-3)
