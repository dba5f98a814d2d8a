"""Batched decoding of many compacted caches (transform.decode_batch) against the per-policy reference
(transform.decode): same greedy tokens, logits within float rounding, keep-all equal to `model.generate`;
on the tiny random Llama and on the real default model with real LongBench prompts and real policies."""

import numpy as np
import pytest
import torch

from extract.capture import prefill as capture_prefill
from extract.longbench import open_longbench, read_task
from extract.prompts import build_prompt
from tests.conftest import FIXTURE_LONGBENCH, generate
from transform import decode
from transform import decode_batch as db
from transform.evaluate import stop_ids
from transform.evict import KeepSetError
from transform.policies import Stats, make

ATOL = 1e-4  # batched vs batch-1 matmuls may round differently in the last bits, no more


def single(model, prefix, keeps, n, eos=frozenset(), min_new=0):
    """The reference: each keep-set resumed and decoded alone, with each step's logits."""
    out = []
    for keep in keeps:
        scores: list = []
        tokens = decode.greedy(model, decode.resume(model, prefix, keep), n, eos, min_new, scores=scores)
        out.append((tokens, torch.stack(scores)))
    return out


def batched(model, prefix, keeps, n, eos=frozenset(), min_new=0, max_batch=8):
    """Every keep-set, grouped by cache length, each group decoded as one batch."""
    out: list = [None] * len(keeps)
    for rows in db.groups(prefix, keeps, max_batch):
        batch = db.resume_batch(model, prefix, [keeps[i] for i in rows], rows)
        scores: list = []
        tokens = db.greedy_batch(model, batch, n, eos, min_new, scores=scores)
        for row, tok, sc in zip(rows, tokens, scores, strict=True):
            out[row] = (tok, sc)
    return out


def assert_same(got, want, atol=ATOL):
    assert [t for t, _ in got] == [t for t, _ in want]
    for (_, a), (_, b) in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=atol, rtol=0)


def random_keeps(rng, length, shape, sizes, per_head):
    """Keep-sets of the given sizes: the same positions in every head, or independent ones per head."""
    L, H = shape
    out = []
    for k in sizes:
        if per_head:
            out.append(np.sort(np.stack([[rng.choice(length, k, replace=False) for _ in range(H)] for _ in range(L)])))
        else:
            out.append(np.broadcast_to(np.sort(rng.choice(length, k, replace=False)), (L, H, k)).copy())
    return out


@pytest.mark.slow  # 11-15 s per setting on the 2-core machine
@pytest.mark.parametrize("setting", decode.SETTINGS)
def test_batched_greedy_equals_single_tiny(tiny_llama, setting):
    torch.manual_seed(5)
    ids = torch.randint(0, 512, (160,))
    prefix = decode.prefill(tiny_llama, ids, setting, context_end=110)
    rng = np.random.default_rng(0)
    keeps = [None] + random_keeps(rng, prefix.length, (2, 2), [40, 40, 64, 40], per_head=True)
    keeps += random_keeps(rng, prefix.length, (2, 2), [40, 64], per_head=False)
    assert db.groups(prefix, keeps) == [[0], [1, 2, 4, 5], [3, 6]]
    assert db.groups(prefix, keeps, max_batch=3) == [[0], [1, 2, 4], [5], [3, 6]]
    want = single(tiny_llama, prefix, keeps, 20)
    assert len({tuple(t) for t, _ in want}) > 3  # the policies really decode differently
    assert_same(batched(tiny_llama, prefix, keeps, 20), want)
    assert_same(batched(tiny_llama, prefix, keeps, 20, max_batch=3), want)


def test_rows_leave_the_batch_at_eos_tiny(tiny_llama, monkeypatch):
    torch.manual_seed(6)
    ids = torch.randint(0, 512, (120,))
    prefix = decode.prefill(tiny_llama, ids, "question_aware", 120)
    keeps = random_keeps(np.random.default_rng(1), 120, (2, 2), [30] * 6, per_head=True)
    free = single(tiny_llama, prefix, keeps, 16)
    # stop at tokens some rows produce early: rows finish at different steps
    eos = frozenset({free[0][0][2], free[1][0][5], free[2][0][1]})
    want = single(tiny_llama, prefix, keeps, 16, eos, min_new=2)
    lengths = sorted(len(t) for t, _ in want)
    assert lengths[0] < lengths[-1]  # rows really stop at different steps
    sizes = []
    real = db.forward_batch
    monkeypatch.setattr(db, "forward_batch", lambda m, x, *a, **k: sizes.append(x.shape[0]) or real(m, x, *a, **k))
    assert_same(batched(tiny_llama, prefix, keeps, 16, eos, min_new=2), want)
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 6 and sizes[-1] < 6  # finished rows dropped
    assert sizes == [sum(len(t) > s for t, _ in want) for s in range(1, len(sizes) + 1)]


@pytest.mark.parametrize("setting", decode.SETTINGS)
def test_keep_all_batch_reproduces_generate_tiny(tiny_llama, setting):
    torch.manual_seed(2)
    ids = torch.randint(0, 512, (150,))
    want = generate(tiny_llama, ids, 24, pad_token_id=0, eos_token_id=None)
    prefix = decode.prefill(tiny_llama, ids, setting, context_end=100)
    got = batched(tiny_llama, prefix, [None, None, None], 24)
    assert [t for t, _ in got] == [want] * 3


def test_cache_grows_past_its_spare_room(tiny_llama):
    """More new tokens than the batch cache's spare room (db.ROOM): it grows and stays exact."""
    torch.manual_seed(7)
    ids = torch.randint(0, 512, (100,))
    prefix = decode.prefill(tiny_llama, ids, "question_agnostic", 60)  # the 40-token rest uses room too
    keeps = random_keeps(np.random.default_rng(2), 60, (2, 2), [20, 20], per_head=True)
    n = db.ROOM + 30
    assert_same(batched(tiny_llama, prefix, keeps, n), single(tiny_llama, prefix, keeps, n))


def test_batched_teacher_forcing_equals_single_tiny(tiny_llama):
    torch.manual_seed(4)
    ids, answer = torch.randint(0, 512, (80,)), [7, 8, 9, 10, 11]
    prefix = decode.prefill(tiny_llama, ids, "question_agnostic", 60)
    keeps = [None] + random_keeps(np.random.default_rng(3), 60, (2, 2), [24, 24], per_head=True)
    want = [decode.answer_logprobs(tiny_llama, decode.resume(tiny_llama, prefix, k), answer) for k in keeps]
    batch = db.resume_batch(tiny_llama, prefix, keeps[1:], rows=[1, 2])
    copy = db.fork(batch)
    got = db.answer_logprobs_batch(tiny_llama, batch, answer)
    assert got.shape == (2, 5, 512)
    for i in (0, 1):
        torch.testing.assert_close(got[i], want[i + 1], atol=ATOL, rtol=0)
    # the fork is independent: its cache did not grow, and a single row of it forces the same
    assert copy.cache.get_seq_length() == 24 + 20 and batch.cache.get_seq_length() == 24 + 20 + 4
    part = db.select(copy, [1])
    assert part.rows == [2]
    torch.testing.assert_close(db.answer_logprobs_batch(tiny_llama, part, answer)[0], want[2], atol=ATOL, rtol=0)
    (full,) = db.answer_logprobs_batch(tiny_llama, db.resume_batch(tiny_llama, prefix, [None]), answer)
    torch.testing.assert_close(full, want[0], atol=ATOL, rtol=0)


def test_bad_input_is_named(tiny_llama):
    prefix = decode.prefill(tiny_llama, torch.arange(40), "question_aware", 40)
    a, b = (np.broadcast_to(np.arange(k), (2, 2, k)).copy() for k in (10, 12))
    with pytest.raises(KeepSetError, match=r"caches of one batch need the same length, got lengths \[10, 12\]"):
        db.resume_batch(tiny_llama, prefix, [a, b])
    with pytest.raises(ValueError, match="no keep-sets to resume"):
        db.resume_batch(tiny_llama, prefix, [])
    with pytest.raises(ValueError, match="2 row labels for 1 keep-sets"):
        db.resume_batch(tiny_llama, prefix, [a], rows=[0, 1])
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        db.groups(prefix, [a], max_batch=0)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        db.greedy_batch(tiny_llama, db.resume_batch(tiny_llama, prefix, [a]), 0)
    with pytest.raises(KeepSetError, match=r"keep-set shape \(3, 2, 10\) does not match the cache"):
        db.resume_batch(tiny_llama, prefix, [a, np.broadcast_to(np.arange(10), (3, 2, 10)).copy()])


# -- the real default model, real prompts, real policies ------------------------------------------------------


@pytest.fixture(scope="module", params=["qasper", "samsum"])
def real_case(request, smol):
    """A real LongBench prompt at 384 tokens and 5 real policies' keep-sets (shared and per-head) per setting."""
    lb = open_longbench(FIXTURE_LONGBENCH)
    task = request.param
    prompt = build_prompt(smol.tokenizer, lb.prompts[task], next(iter(read_task(lb, task, 1))), 384)
    ids = torch.from_numpy(prompt.input_ids)
    end = prompt.ranges()["context_end"]
    pf = capture_prefill(smol.model, ids, context_end=end)
    k, v = pf.keys.norm(dim=-1).double().numpy(), pf.values.norm(dim=-1).double().numpy()
    aware = Stats(k, v, pf.attn_received.double().numpy())
    agnostic = Stats(k[..., :end], v[..., :end], pf.attn_received_context[..., :end].double().numpy())
    specs = [("sink_recent", {"sink_tokens": 4}), ("knorm", {}), ("h2o", {}), ("snapkv", {}), ("random", {})]
    keeps = {
        "question_aware": [make(name, budget=96, **params).keep_token_idx(aware) for name, params in specs],
        "question_agnostic": [make(name, budget=64, **params).keep_token_idx(agnostic) for name, params in specs],
    }
    assert {k.shape[2] for k in keeps["question_aware"]} == {96}
    assert {k.shape[2] for k in keeps["question_agnostic"]} == {64}
    stops = stop_ids(smol.tokenizer, smol.model, task)
    return {"task": task, "ids": ids, "context_end": end, "keeps": keeps, "stops": stops}


@pytest.mark.model
def test_real_model_batched_greedy_equals_single(smol, real_case):
    c = real_case
    prefix = decode.prefill(smol.model, c["ids"], "question_aware", len(c["ids"]))
    min_new = 1 if c["task"] == "samsum" else 0
    keeps = [None] + c["keeps"]["question_aware"]
    assert db.groups(prefix, keeps) == [[0], [1, 2, 3, 4, 5]]
    want = single(smol.model, prefix, keeps, 8, c["stops"], min_new)
    assert_same(batched(smol.model, prefix, keeps, 8, c["stops"], min_new), want)


@pytest.mark.model
def test_real_model_batched_agnostic_and_teacher_forcing(smol, real_case):
    """question_agnostic: the question is fed to every row at once after eviction; then teacher forcing."""
    c = real_case
    prefix = decode.prefill(smol.model, c["ids"], "question_agnostic", c["context_end"])
    keeps = c["keeps"]["question_agnostic"]  # the policies saw the context only
    assert all(k.max() < prefix.length for k in keeps) and prefix.length < len(c["ids"])
    want = single(smol.model, prefix, keeps, 6, c["stops"])
    assert_same(batched(smol.model, prefix, keeps, 6, c["stops"]), want)
    answer = smol.tokenizer.encode(" The answer is unknown.", add_special_tokens=False)
    ref = [decode.answer_logprobs(smol.model, decode.resume(smol.model, prefix, k), answer) for k in keeps]
    got = db.answer_logprobs_batch(smol.model, db.resume_batch(smol.model, prefix, keeps), answer)
    for g, r in zip(got, ref, strict=True):
        torch.testing.assert_close(g, r, atol=ATOL, rtol=0)


@pytest.mark.model
@pytest.mark.parametrize("setting", decode.SETTINGS)
def test_real_model_keep_all_batch_reproduces_generate(smol, real_case, setting):
    c = real_case
    eos = smol.tokenizer.eos_token_id
    want = generate(smol.model, c["ids"], 8, pad_token_id=eos, eos_token_id=eos)
    prefix = decode.prefill(smol.model, c["ids"], setting, c["context_end"])
    got = batched(smol.model, prefix, [None, None], 8, {eos})
    assert [t for t, _ in got] == [want, want]
