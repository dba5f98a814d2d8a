"""The brief's position-based API (seeds/simple-kv-eviction.md): its examples, exactly."""

from __future__ import annotations

import pytest
import torch

from transform.simple_evict import (
    BLOCK_N,
    SimpleEvictConfig,
    build_eviction_config,
    build_simple_keep_token_idx,
    spread,
)


def blocks_of(idx: torch.Tensor, block_n: int = 128) -> list[int]:
    return sorted(set((idx // block_n).tolist()))


def test_example_1_sink_recent_keeps_first_256_and_last_512():
    cfg = SimpleEvictConfig(sink_tokens=256, recent_tokens=512, middle_strategy="none")
    idx = build_simple_keep_token_idx(total_len=4096, block_n=128, cfg=cfg)
    assert idx.dtype == torch.long
    assert idx.tolist() == list(range(0, 256)) + list(range(3584, 4096))
    assert len(idx) == 768


def test_example_2_uniform_budget_keeps_1280_tokens_in_whole_spread_blocks():
    cfg = SimpleEvictConfig(256, 512, "uniform", middle_budget_tokens=512, uniform_stride=0)
    idx = build_simple_keep_token_idx(total_len=4096, block_n=128, cfg=cfg)
    assert len(idx) == 256 + 512 + 512 == 1280
    # middle = blocks 2..27 (26 blocks); 512 // 128 = 4 of them spread evenly, first and last included
    assert blocks_of(idx) == [0, 1, 2, 10, 18, 27, 28, 29, 30, 31]
    assert cfg.cache_target == 1280


def test_example_3_stride_keeps_every_second_middle_block():
    cfg = SimpleEvictConfig(sink_tokens=256, recent_tokens=512, middle_strategy="uniform", uniform_stride=2)
    idx = build_simple_keep_token_idx(total_len=4096, block_n=128, cfg=cfg)
    middle = [b for b in blocks_of(idx) if 2 <= b < 28]
    assert middle == list(range(2, 28, 2))  # blocks 2, 4, 6, ..., 26
    assert all(len([i for i in idx.tolist() if i // 128 == b]) == 128 for b in middle)  # whole blocks


def test_stride_overrides_budget_and_blocks_align_to_absolute_positions():
    by_stride = SimpleEvictConfig(100, 200, "uniform", middle_budget_tokens=10_000, uniform_stride=3)
    idx = build_simple_keep_token_idx(total_len=2000, block_n=128, cfg=by_stride)
    # sink ends at 100 -> first whole middle block is 1 (128..255); recent starts at 1800 -> blocks < 14
    assert blocks_of(torch.tensor([i for i in idx.tolist() if 100 <= i < 1800])) == [1, 4, 7, 10, 13]


@pytest.mark.parametrize("total_len", [0, 1, 767, 768])
def test_short_sequences_keep_everything(total_len):
    for cfg in (SimpleEvictConfig(), SimpleEvictConfig(256, 512, "uniform", 512)):
        assert build_simple_keep_token_idx(total_len=total_len, cfg=cfg).tolist() == list(range(total_len))


def test_769_tokens_evict_exactly_one():
    idx = build_simple_keep_token_idx(total_len=769, cfg=SimpleEvictConfig())
    assert 256 not in idx.tolist() and len(idx) == 768


def test_build_eviction_config_speaks_the_brief_cli():
    assert build_eviction_config("sink_recent", 4, 60) == SimpleEvictConfig(4, 60, "none")
    assert build_eviction_config("sink_recent_uniform", 4, 60, 256, 2) == SimpleEvictConfig(4, 60, "uniform", 256, 2)
    keep_all = build_eviction_config(no_eviction=True)
    assert build_simple_keep_token_idx(total_len=5000, cfg=keep_all).tolist() == list(range(5000))
    with pytest.raises(ValueError, match="strategy"):
        build_eviction_config("h2o")
    with pytest.raises(ValueError, match="middle_strategy"):
        SimpleEvictConfig(middle_strategy="random")
    with pytest.raises(ValueError, match="sink_tokens"):
        SimpleEvictConfig(sink_tokens=-1)
    assert BLOCK_N == 128


SPREAD_BY_HAND = {  # floor(i * (n - 1) / (k - 1)), worked out on paper
    (1, 1): [0],
    (5, 1): [0],
    (100, 2): [0, 99],
    (5, 3): [0, 2, 4],
    (8, 3): [0, 3, 7],  # 3.5 -> 3
    (10, 4): [0, 3, 6, 9],
    (11, 4): [0, 3, 6, 10],  # 3.33 -> 3, 6.67 -> 6
    (26, 4): [0, 8, 16, 25],  # 8.33, 16.67
    (6, 6): [0, 1, 2, 3, 4, 5],
    (17, 15): [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 16],  # i * 8/7: 7 -> exactly 8
}


@pytest.mark.parametrize(("n", "k"), sorted(SPREAD_BY_HAND))
def test_spread_matches_hand_computed_cases(n, k):
    assert spread(n, k) == SPREAD_BY_HAND[n, k]


def test_spread_is_even_and_agrees_with_torch_where_torch_is_exact():
    """Properties that hold for any exact spread, without restating its formula."""
    for n in range(1, 60):
        for k in range(1, n + 1):
            got = spread(n, k)
            assert got == sorted(set(got)) and len(got) == k and got[0] == 0 and got[-1] == (n - 1 if k > 1 else 0)
            gaps = {b - a for a, b in zip(got, got[1:], strict=False)}
            assert not gaps or max(gaps) - min(gaps) <= 1, (n, k, got)  # evenly spread
    assert spread(17, 15)[7] == 8  # float32 torch.linspace gives 7.9999 -> 7 here on some CPUs
    assert torch.linspace(0, 25, 4).long().tolist() == spread(26, 4) == [0, 8, 16, 25]
