"""The Python references of the policies: registry, validation, and literal given/expect cases."""

from __future__ import annotations

import numpy as np
import pytest

from transform.policies import REGISTRY, PolicyError, Stats, make, names
from transform.simple_evict import SimpleEvictConfig, build_simple_keep_token_idx


def stats(key_norm, value_norm=None, attn=None) -> Stats:
    k = np.asarray(key_norm, dtype=np.float64)
    k = k.reshape((1, 1, -1)) if k.ndim == 1 else k
    v = k if value_norm is None else np.asarray(value_norm, dtype=np.float64).reshape(k.shape)
    a = k if attn is None else np.asarray(attn, dtype=np.float64).reshape(k.shape)
    return Stats(k, v, a)


def kept(policy, s: Stats, layer=0, head=0) -> list[int]:
    return np.nonzero(policy.keep_mask(s)[layer, head])[0].tolist()


def test_every_policy_is_registered_with_a_module_of_its_own():
    assert names() == ["h2o", "knorm", "random", "sink_recent", "sink_recent_uniform", "snapkv", "vnorm"]
    assert len({cls.__module__ for cls in REGISTRY.values()}) == len(REGISTRY)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: make("lru", budget=4), "unknown policy 'lru'; known policies: h2o, knorm"),
        (lambda: make("knorm", budget=4, sinks=2), r"knorm: unknown parameter\(s\) \['sinks'\]"),
        (lambda: make("knorm", budget=0), "budget must be > 0"),
        (lambda: make("knorm", budget=-3), "budget must be > 0"),
        (lambda: make("knorm", budget=2.5), "counts tokens and must be whole"),
        (lambda: make("knorm", budget="half"), "parameter budget must be float | None"),
        (lambda: make("knorm", budget=4, per_head="yes"), "parameter per_head must be bool"),
        (lambda: make("knorm", budget=4, sink_tokens=-1), "sink_tokens must be >= 0"),
        (lambda: make("knorm", budget=4, sink_tokens=3, recent_tokens=2), "exceed the budget"),
        (lambda: make("snapkv", budget=64, kernel_size=4), "kernel_size must be odd"),
        (lambda: make("snapkv", budget=16), "exceed the budget"),  # the 32-token window does not fit
        (lambda: make("random", budget=4, seed=2**31), "seed must be below 2"),
        (lambda: make("sink_recent", sink_tokens=0, recent_tokens=0), "must be >= 1"),
        (lambda: make("sink_recent_uniform", budget=2048, uniform_stride=2), "give one of them"),
        (lambda: make("sink_recent_uniform", budget=512), "below sink_tokens"),
    ],
)
def test_bad_parameters_are_named(call, message):
    with pytest.raises(PolicyError, match=message):
        call()


def test_budget_against_a_sequence():
    with pytest.raises(PolicyError, match=r"budget of 100 tokens is larger than the sequence \(99 tokens\)"):
        make("knorm", budget=100).check(99)
    with pytest.raises(PolicyError, match="needs a budget"):
        make("knorm").check(99)
    make("knorm", budget=99).check(99)
    ratio = make("vnorm", budget=0.25)
    assert ratio.budget_unit == "ratio" and [ratio.tokens(n) for n in (1, 2, 6, 10, 2048)] == [1, 1, 2, 3, 512]
    assert make("knorm", budget=512.0).budget == 512 and make("knorm", budget=512).budget_unit == "tokens"
    with pytest.raises(PolicyError, match="forced tokens do not fit"):
        make("h2o", budget=0.1).check(100)  # 10 tokens, but 32 recent are forced


def test_policy_id_is_stable_and_covers_every_parameter():
    a, b = make("snapkv", budget=0.25), make("snapkv", budget=0.25, kernel_size=7)
    assert a.policy_id == b.policy_id and len(a.policy_id) == 12
    assert make("snapkv", budget=0.25, kernel_size=5).policy_id != a.policy_id
    assert make("knorm", budget=0.25).policy_id != make("vnorm", budget=0.25).policy_id
    assert a.label() == "snapkv(budget=0.25)"


def brief_keep(n: int, sink: int = 256, recent: int = 512, middle: int = 0, stride: int = 0, block_n: int = 128):
    """The brief (seeds/simple-kv-eviction.md) read directly, in numpy: [0, sink) and [n - recent, n); whole
    block_n-blocks strictly between them, every stride-th from the first, or middle // block_n of them evenly
    spaced (at least one when middle > 0), first and last included. Written apart from transform.simple_evict."""
    keep = np.zeros(n, dtype=bool)
    keep[: min(sink, n)] = True
    keep[max(0, n - recent) :] = True
    blocks = [b for b in range(n // block_n + 1) if b * block_n >= min(sink, n) and (b + 1) * block_n <= n - recent]
    if blocks and stride > 0:
        chosen = blocks[::stride]
    elif blocks and middle > 0:
        k = min(len(blocks), max(1, middle // block_n))
        chosen = (
            [blocks[0]] if k == 1 else [blocks[int(np.floor(x + 1e-9))] for x in np.linspace(0, len(blocks) - 1, k)]
        )
    else:
        chosen = []
    for b in chosen:
        keep[b * block_n : (b + 1) * block_n] = True
    return np.flatnonzero(keep).tolist()


def test_brief_keep_reproduces_the_briefs_own_examples():
    """The reference is right where the brief says what to expect (examples 1-3, 4096 tokens)."""
    assert brief_keep(4096) == [*range(256), *range(3584, 4096)]
    assert len(brief_keep(4096, middle=512)) == 1280
    assert sorted({i // 128 for i in brief_keep(4096, middle=512)}) == [0, 1, 2, 10, 18, 27, 28, 29, 30, 31]
    assert sorted({i // 128 for i in brief_keep(4096, stride=2)} - {0, 1, *range(28, 32)}) == list(range(2, 28, 2))


@pytest.mark.parametrize("n", [1, 5, 768, 769, 1000, 4096])
def test_position_policies_are_the_brief_functions(n):
    s = stats(np.ones(n))
    assert kept(make("sink_recent"), s) == brief_keep(n)
    assert kept(make("sink_recent_uniform", middle_budget_tokens=512), s) == brief_keep(n, middle=512)
    assert kept(make("sink_recent_uniform", uniform_stride=3), s) == brief_keep(n, stride=3)


def test_position_policies_and_the_brief_api_agree_with_the_reference_on_a_grid():
    """Odd lengths, sinks and blocks: wherever a block boundary, a budget or a stride could be off by one."""
    rng = np.random.default_rng(3)
    for _ in range(400):
        n, block_n = int(rng.integers(0, 700)), int(rng.choice([1, 3, 8, 16, 50]))
        sink, recent = int(rng.integers(0, 120)), int(rng.integers(0, 120))
        middle, stride = int(rng.integers(0, 300)), int(rng.choice([0, 0, 1, 2, 5]))
        want = brief_keep(n, sink, recent, middle, stride, block_n)
        cfg = SimpleEvictConfig(sink, recent, "uniform", middle, stride)
        assert build_simple_keep_token_idx(total_len=n, block_n=block_n, cfg=cfg).tolist() == want, (n, cfg, block_n)
        if n:
            p = make("sink_recent_uniform", sink_tokens=sink, recent_tokens=recent, block_n=block_n,
                     middle_budget_tokens=middle, uniform_stride=stride)  # fmt: skip
            assert kept(p, stats(np.ones(n))) == want, p.label()
            assert kept(make("sink_recent", sink_tokens=sink, recent_tokens=recent), stats(np.ones(n))) == (
                brief_keep(n, sink, recent)
            )


def test_sink_recent_with_a_budget_keeps_sink_then_recent():
    s = stats(np.ones(20))
    assert kept(make("sink_recent", budget=6, sink_tokens=2), s) == [0, 1, 16, 17, 18, 19]
    assert kept(make("sink_recent", budget=0.3, sink_tokens=4), s) == [0, 1, 2, 3, 18, 19]
    assert kept(make("sink_recent", budget=3, sink_tokens=4), s) == [0, 1, 2]


def test_uniform_with_a_budget_gives_the_rest_to_the_middle():
    s = stats(np.ones(100))
    p = make("sink_recent_uniform", budget=40, sink_tokens=4, recent_tokens=8, block_n=10)
    # middle budget 28 -> 2 blocks of 10, spread over whole blocks 1..8 -> blocks 1 and 8
    assert kept(p, s) == [0, 1, 2, 3, *range(10, 20), *range(80, 90), *range(92, 100)]


def test_knorm_keeps_the_lowest_norms_and_ties_go_to_later_positions():
    s = stats([5, 1, 3, 1, 9, 2])
    assert kept(make("knorm", budget=3), s) == [1, 3, 5]
    assert kept(make("knorm", budget=2), s) == [1, 3]
    assert kept(make("knorm", budget=1), s) == [3]  # tie 1 vs 1: the later one
    assert kept(make("knorm", budget=3, sink_tokens=1), s) == [0, 1, 3]
    assert kept(make("knorm", budget=3, recent_tokens=2), s) == [3, 4, 5]


def test_vnorm_keeps_the_largest_values_and_h2o_the_most_attended():
    s = stats([1, 1, 1, 1, 1, 1], value_norm=[4, 8, 1, 7, 2, 3], attn=[0.5, 0.0, 0.2, 0.1, 0.0, 0.2])
    assert kept(make("vnorm", budget=2), s) == [1, 3]
    assert kept(make("h2o", budget=3, recent_tokens=1), s) == [0, 2, 5]
    assert kept(make("h2o", budget=2, recent_tokens=0), s) == [0, 5]  # 0.2 at 2 and 5: the later one


def test_snapkv_pools_over_neighbours_and_keeps_its_window():
    attn = [0, 0, 0, 0.9, 0, 0, 0, 0, 0.5, 0, 0.1, 0.1]
    s = stats(np.ones(12), attn=attn)
    p = make("snapkv", budget=5, window=2, kernel_size=3)
    # prefix 0..9 pooled over +-1: 2,3,4 -> 0.9; 7,8,9 -> 0.5; window 10, 11 kept; the 3 best: 4, 3, 2
    assert kept(p, s) == [2, 3, 4, 10, 11]
    no_pool = make("snapkv", budget=4, window=2, kernel_size=1)
    assert kept(no_pool, s) == [3, 8, 10, 11]


def test_per_head_and_shared_selection():
    key_norm = np.array([[[1, 9, 9, 2], [9, 1, 2, 9]]], dtype=np.float64)  # 1 layer, 2 heads
    s = stats(key_norm)
    per_head = make("knorm", budget=2).keep_token_idx(s)
    assert per_head.tolist() == [[[0, 3], [1, 2]]]
    shared = make("knorm", budget=2, per_head=False).keep_token_idx(s)  # sums 10, 10, 11, 11
    assert shared.tolist() == [[[0, 1], [0, 1]]]


def test_random_is_seeded_and_spreads_over_the_sequence():
    s = stats(np.ones((2, 3, 1000)))
    a = make("random", budget=100).keep_token_idx(s)
    assert (a == make("random", budget=100).keep_token_idx(s)).all()
    assert (a == a[0, 0]).all()  # shared by default
    assert not (a == make("random", budget=100, seed=1).keep_token_idx(s)).all()
    per_head = make("random", budget=100, per_head=True).keep_token_idx(s)
    assert len({tuple(r) for r in per_head.reshape(6, -1).tolist()}) == 6
    counts = np.bincount(a[0, 0] // 100, minlength=10)
    assert counts.min() >= 3 and counts.max() <= 20  # about 10 per tenth of the sequence


@pytest.mark.parametrize("name", ["h2o", "knorm", "random", "snapkv", "vnorm"])
def test_score_policies_keep_exactly_the_budget_per_head(name):
    rng = np.random.default_rng(0)
    s = Stats(*(rng.random((3, 2, 300)) for _ in range(3)))
    for budget in (40, 0.5):
        idx = make(name, budget=budget).keep_token_idx(s)
        k = 40 if budget == 40 else 150
        assert idx.shape == (3, 2, k)
        assert (np.diff(idx, axis=-1) > 0).all() and idx.min() >= 0 and idx.max() < 300


def test_float_parameters_are_accepted_and_checked():
    """A policy may declare `alpha: float` (a weight, a temperature): ints widen, bad values are named."""
    from dataclasses import dataclass

    from transform.policies.base import ScorePolicy

    @dataclass(frozen=True)
    class Weighted(ScorePolicy):  # not registered: the registry stays the project's own
        name = "weighted_test"
        needs = ("key_norm", "attn")
        alpha: float = 0.5

        def score(self, stats):
            return self.alpha * stats.attn - (1 - self.alpha) * stats.key_norm

    p = Weighted(budget=0.5, alpha=1)
    assert p.alpha == 1.0 and isinstance(p.alpha, float) and p.params()["alpha"] == 1.0
    assert Weighted(budget=0.5, alpha=0.25).ranking_id != p.ranking_id, "alpha shapes the ranking"
    assert Weighted(budget=0.25, alpha=1).ranking_id == p.ranking_id, "the budget does not"
    for bad in ("high", True, float("nan"), float("inf")):
        with pytest.raises(PolicyError, match="alpha"):
            Weighted(budget=0.5, alpha=bad)
    assert kept(p, stats([3.0, 1.0, 2.0, 0.5], attn=[0.1, 0.2, 0.3, 0.4])) == [2, 3]
