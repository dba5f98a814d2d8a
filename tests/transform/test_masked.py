"""Masked sweep decoding (transform.masked) against the compacted-cache reference (transform.decode, one
cache per policy): the same greedy tokens and logits within float rounding, for keep-sets shared by every head,
per head, of different sizes in one batch, and keep-all = the full cache; on the tiny Llama, on every supported
architecture (sliding windows that slide, softcaps, sinks), and on the real default model with real LongBench
prompts and every built-in policy. The shared cache is the prefill's own tensors: nothing is copied per row."""

import numpy as np
import pytest
import torch

from extract.capture import prefill as capture_prefill
from extract.longbench import Sample as Record
from extract.longbench import open_longbench, read_task
from extract.prompts import build_prompt
from tests.architectures import SUPPORTED, build
from tests.conftest import FIXTURE_LONGBENCH
from tests.transform.test_decode_batch import random_keeps
from transform import decode, masked
from transform import decode_batch as db
from transform.evaluate_run import DEFAULT_BUDGETS, DEFAULT_POLICIES, parse_policies
from transform.evict import KeepSetError
from transform.policies import PolicyError, Stats

# float32: a softmax over masked positions vs one over compacted ones sums in another order: logits agree to
# 2e-5 + 1e-4 x |logit| (the random weights of the tiny architectures give logits of up to ~10)
ATOL, RTOL = 2e-5, 1e-4


def reference(model, prefix, keeps, n, eos=frozenset(), min_new=0):
    """Each keep-set on its own compacted copy, batch 1: tokens and each step's logits."""
    out = []
    for keep in keeps:
        scores: list = []
        tokens = decode.greedy(model, decode.resume(model, prefix, keep), n, eos, min_new, scores=scores)
        out.append((tokens, torch.stack(scores)))
    return out


def masked_run(model, prefix, keeps, n, eos=frozenset(), min_new=0):
    """Every keep-set as one row of one masked batch."""
    scores: list = []
    tokens = db.greedy_batch(model, masked.resume(model, prefix, keeps), n, eos, min_new, scores=scores)
    return list(zip(tokens, scores, strict=True))


def assert_same(got, want, atol=ATOL, of_scale: float | None = None):
    """Same tokens; logits within atol + RTOL x |logit|, or within `of_scale` x the largest |logit| of the step."""
    assert [t for t, _ in got] == [t for t, _ in want]
    for (_, a), (_, b) in zip(got, want, strict=True):
        if of_scale is None:
            torch.testing.assert_close(a, b, atol=atol, rtol=RTOL)
        else:
            assert ((a - b).abs().amax(-1) <= of_scale * b.abs().amax(-1)).all(), float((a - b).abs().max())


@pytest.mark.parametrize("setting", decode.SETTINGS)
def test_masked_equals_compacted_tiny(tiny_llama, setting):
    torch.manual_seed(5)
    ids = torch.randint(0, 512, (160,))
    prefix = decode.prefill(tiny_llama, ids, setting, context_end=110)
    rng = np.random.default_rng(0)
    keeps = [None] + random_keeps(rng, prefix.length, (2, 2), [40, 64, 8, 100], per_head=True)
    keeps += random_keeps(rng, prefix.length, (2, 2), [40, 1], per_head=False)
    want = reference(tiny_llama, prefix, keeps, 20)
    assert len({tuple(t) for t, _ in want}) > 3  # the policies really decode differently
    got = masked_run(tiny_llama, prefix, keeps, 20)
    assert_same(got, want)
    assert got[0][0] == want[0][0]  # keep-all is the full cache


def test_keep_sets_spanning_the_whole_prompt_keep_the_rest_as_own_positions(tiny_llama):
    """A question_agnostic keep-set over every prompt position (as rankings give them): positions after the
    context are each row's own, fed after eviction, whatever the keep-set says of them."""
    torch.manual_seed(7)
    ids = torch.randint(0, 512, (150,))
    prefix = decode.prefill(tiny_llama, ids, "question_agnostic", context_end=100)
    rng = np.random.default_rng(1)
    (inside,) = random_keeps(rng, 100, (2, 2), [30], per_head=True)
    spanning = np.concatenate([inside, np.broadcast_to(np.arange(100, 150), (2, 2, 50))], axis=2)
    assert_same(masked_run(tiny_llama, prefix, [spanning], 10), reference(tiny_llama, prefix, [inside], 10))


def test_rows_stop_at_their_own_eos_and_leave_the_batch(tiny_llama):
    torch.manual_seed(6)
    ids = torch.randint(0, 512, (120,))
    prefix = decode.prefill(tiny_llama, ids, "question_aware", context_end=120)
    rng = np.random.default_rng(2)
    keeps = [None] + random_keeps(rng, prefix.length, (2, 2), [20, 30, 60, 90], per_head=True)
    free = reference(tiny_llama, prefix, keeps, 12)
    # an EOS that some rows produce early and others never: each row stops at its own
    counts: dict[int, int] = {}
    for tokens, _ in free:
        for t in set(tokens[2:8]):
            counts[t] = counts.get(t, 0) + 1
    eos = frozenset([min(counts, key=lambda t: (counts[t] == len(keeps), -counts[t]))])
    want = reference(tiny_llama, prefix, keeps, 12, eos)
    got = masked_run(tiny_llama, prefix, keeps, 12, eos)
    assert_same(got, want)
    assert len({len(t) for t, _ in got}) > 1  # rows really stopped at different steps
    # min_new_tokens suppresses EOS at the first step in every row, as transform.decode does
    assert_same(masked_run(tiny_llama, prefix, keeps, 6, frozenset([got[0][0][0]]), 1),
                reference(tiny_llama, prefix, keeps, 6, frozenset([got[0][0][0]]), 1))  # fmt: skip


def test_teacher_forcing_and_forked_rows_equal_the_reference(tiny_llama):
    torch.manual_seed(8)
    ids = torch.randint(0, 512, (140,))
    for setting in decode.SETTINGS:
        prefix = decode.prefill(tiny_llama, ids, setting, context_end=90)
        rng = np.random.default_rng(3)
        keeps = [None, *random_keeps(rng, prefix.length, (2, 2), [10, 50, 80], per_head=True)]
        answer = [5, 17, 99, 3, 250, 7]
        want = [decode.answer_logprobs(tiny_llama, decode.resume(tiny_llama, prefix, k), answer) for k in keeps]
        batch = masked.resume(tiny_llama, prefix, keeps)
        part = db.select(batch, [3, 1])  # some rows, copied: forcing them leaves the batch as it was
        got = db.answer_logprobs_batch(tiny_llama, part, answer)
        torch.testing.assert_close(got, torch.stack([want[3], want[1]]), atol=ATOL, rtol=RTOL)
        assert batch.cache.layers[0].keys.shape[2] == len(prefix.rest)  # the batch's own positions: unchanged
        got = db.answer_logprobs_batch(tiny_llama, batch, answer)
        torch.testing.assert_close(got, torch.stack(want), atol=ATOL, rtol=RTOL)


def test_the_full_cache_is_shared_not_copied(tiny_llama):
    torch.manual_seed(9)
    ids = torch.randint(0, 512, (200,))
    prefix = decode.prefill(tiny_llama, ids, "question_aware", context_end=180, horizon=208)
    keeps = random_keeps(np.random.default_rng(4), prefix.length, (2, 2), [50] * 12, per_head=True)
    batch = masked.resume(tiny_llama, prefix, keeps)
    for src, layer in zip(prefix.cache.layers, batch.cache.layers, strict=True):
        assert layer.shared_keys.data_ptr() == src.keys.data_ptr()
        assert layer.shared_values.data_ptr() == src.values.data_ptr()
    # what the 12 rows hold beyond the shared cache: room for their own 8 answer positions and a keep mask of one
    # byte per (layer, head, prefix position); once decoding ran, the mask as float32 scores too. Nothing grows
    # with the budget, nothing is a copy of the prefix
    L, H, D = 2, 2, prefix.cache.layers[0].keys.shape[3]
    assert batch.cache.own_bytes() == 12 * L * (2 * H * 8 * D * 4 + H * 200)
    db.greedy_batch(tiny_llama, batch, 8)
    assert batch.cache.own_bytes() == 12 * L * (2 * H * 8 * D * 4 + H * 200 * 5)
    assert batch.cache.layers[0]._keys.shape[2] == 8  # decoding to the horizon never grew the buffers
    assert prefix.cache.layers[0].keys.shape[2] == 200  # the prefill's cache is never written


@pytest.mark.parametrize("name", SUPPORTED)
def test_masked_equals_compacted_on_every_architecture(name):
    """Sliding windows shorter than the prompt (they slide during decoding), Gemma2's softcap and scaling,
    Gemma3's single KV head, gpt-oss's sinks: the masked batch decodes what each compacted copy decodes."""
    model = build(name)
    T, new = 300, 10
    ids = torch.randint(3, 512, (T,), generator=torch.Generator().manual_seed(11))
    L, H = model.config.num_hidden_layers, model.config.num_key_value_heads
    rng = np.random.default_rng(5)
    for setting in decode.SETTINGS:
        prefix = decode.prefill(model, ids, setting, 260, horizon=T + new)
        keeps = [None, *random_keeps(rng, prefix.length, (L, H), [30, 120, 200], per_head=True)]
        keeps += random_keeps(rng, prefix.length, (L, H), [60], per_head=False)
        # gpt-oss's random experts and sinks give the largest logits here: 5e-5 absolute
        assert_same(masked_run(model, prefix, keeps, new), reference(model, prefix, keeps, new), atol=5e-5)


def test_bad_keep_sets_are_named(tiny_llama):
    ids = torch.randint(0, 512, (60,), generator=torch.Generator().manual_seed(1))
    prefix = decode.prefill(tiny_llama, ids, "question_aware", context_end=60)
    with pytest.raises(KeepSetError, match="does not match the cache"):
        masked.resume(tiny_llama, prefix, [np.zeros((3, 2, 4), dtype=np.int64)])
    with pytest.raises(KeepSetError, match="0..59"):
        masked.resume(tiny_llama, prefix, [np.broadcast_to(np.array([1, 60]), (2, 2, 2)).copy()])
    with pytest.raises(KeepSetError, match="sorted"):
        masked.resume(tiny_llama, prefix, [np.broadcast_to(np.array([5, 1]), (2, 2, 2)).copy()])


def test_rows_per_batch_follow_the_memory_budget(tiny_llama):
    ids = torch.randint(0, 512, (200,), generator=torch.Generator().manual_seed(2))
    agnostic = decode.prefill(tiny_llama, ids, "question_agnostic", context_end=100)
    aware = decode.prefill(tiny_llama, ids, "question_aware", context_end=100)
    budget = 8 << 20
    assert masked.max_rows(tiny_llama, agnostic, budget) < masked.max_rows(tiny_llama, aware, budget)
    assert masked.max_rows(tiny_llama, agnostic, 1) == 1  # never zero
    assert masked.max_rows(tiny_llama, agnostic, 4 * budget) > masked.max_rows(tiny_llama, agnostic, budget)


@pytest.fixture(scope="module")
def real_prompts(smol):
    lb = open_longbench(FIXTURE_LONGBENCH)
    out = []
    for task, n in (("qasper", 512),):
        record = next(x for x in read_task(lb, task, 1) if isinstance(x, Record))
        prompt = build_prompt(smol.tokenizer, lb.prompts[task], record, n)
        out.append((task, prompt.input_ids, prompt.ranges()["context_end"]))
    return out


def test_every_builtin_policy_masked_equals_compacted_on_the_default_model(smol, real_prompts):
    """The default sweep's policies (every built-in one) at two budgets, both settings, real prompts."""
    model = smol.model
    for task, ids, context_end in real_prompts:
        pf = capture_prefill(model, torch.from_numpy(ids), context_end=context_end)
        f64 = lambda t: t.double().numpy()  # noqa: E731
        norms = f64(pf.keys.norm(dim=-1)), f64(pf.values.norm(dim=-1))
        attn = {"question_aware": f64(pf.attn_received), "question_agnostic": f64(pf.attn_received_context)}
        for setting in decode.SETTINGS:
            prefix = decode.prefill(model, ids, setting, context_end, horizon=len(ids) + 8)
            n = prefix.length
            stats = Stats(norms[0][..., :n], norms[1][..., :n], attn[setting][..., :n])
            keeps, names = [None], set()
            for policy in parse_policies(list(DEFAULT_POLICIES), [DEFAULT_BUDGETS[0], DEFAULT_BUDGETS[-2]]):
                try:
                    policy.check(n)
                except PolicyError:
                    continue
                keeps.append(policy.keep_token_idx(stats))
                names.add(policy.name)
            assert len(names) == len(DEFAULT_POLICIES)  # every built-in policy took part
            want = reference(model, prefix, keeps, 8)
            assert len({tuple(t) for t, _ in want}) > 2, (task, setting)
            # 30 layers of float32 rounding in another order: typically 3e-5 on logits of ~35 (1e-6 of the scale);
            # a cache without its attention sink (vnorm at 15%) is the most sensitive: up to 4e-4
            assert_same(masked_run(model, prefix, keeps, 8), want, of_scale=2e-5)
