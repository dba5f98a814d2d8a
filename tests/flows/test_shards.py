"""Shard arithmetic and worker pinning, without Prefect: literal inputs, exact outputs."""

import pytest

from extract.longbench import Sample, open_longbench, read_task
from flows.shards import Shard, counts_by_task, lost_work, make_shards, owned
from flows.worker import slots, worker_command
from tests.conftest import FIXTURE_LONGBENCH


def test_shards_cover_every_sample_once_and_empty_tasks_get_one():
    shards = make_shards({"qasper": 5, "trec": 2, "lcc": 0}, 2)
    assert [(s.task, s.start, s.stop, s.last) for s in shards] == [
        ("qasper", 0, 2, False), ("qasper", 2, 4, False), ("qasper", 4, 5, True),
        ("trec", 0, 2, True), ("lcc", 0, 0, True),
    ]  # fmt: skip
    with pytest.raises(ValueError, match="shard_size must be >= 1"):
        make_shards({"trec": 1}, 0)
    assert counts_by_task(["trec", "qasper", "trec"]) == {"trec": 2, "qasper": 1}


def test_each_bad_record_is_owned_by_exactly_one_shard():
    items = ["bad0", 1, 2, "bad2", 3, "bad-tail"]  # ints are good samples, strings bad records, in file order
    good = lambda x: isinstance(x, int)  # noqa: E731
    parts = [owned(items, s, good) for s in make_shards({"t": 3}, 2)]
    assert parts == [([1, 2], ["bad0"]), ([3], ["bad2", "bad-tail"])]
    assert owned(["bad"], Shard("t", 0, 0, True), good) == ([], ["bad"])


def test_shards_of_a_real_task_rebuild_the_plan_in_order():
    lb = open_longbench(FIXTURE_LONGBENCH)
    items = list(read_task(lb, "qasper", None))
    whole = [i.sample_id for i in items if isinstance(i, Sample)]
    split = [
        i.sample_id
        for s in make_shards({"qasper": len(whole)}, 1)
        for i in owned(items, s, lambda x: isinstance(x, Sample))[0]
    ]
    assert split == whole and len(whole) == 2


def test_lost_work_counts_and_shortens():
    assert lost_work(["a", "b"], 9, "shards") == "2 of 9 shards failed: a; b"
    assert lost_work(list("abcde"), 5, "samples") == "5 of 5 samples failed: a; b; c; +2 more"


def test_one_worker_per_gpu_or_per_cpu_slice():
    gpus = slots(["0", "1", "7"], None, 4, "node")
    assert [(s.name, s.env["CUDA_VISIBLE_DEVICES"], s.env["KVW_TORCH_THREADS"]) for s in gpus] == [
        ("node-gpu0", "0", "4"), ("node-gpu1", "1", "4"), ("node-gpu7", "7", "4"),
    ]  # fmt: skip
    assert slots(["0"] * 64, None, None, "big")[0].env["OMP_NUM_THREADS"] == "1"  # never 0 threads
    assert [s.name for s in slots(["0", "0", "1"], None, None, "n")] == ["n-gpu0-0", "n-gpu0-1", "n-gpu1"]
    three = slots(["0", "1"], None, None, "n", per_gpu=3)  # names unique per worker, GPUs in order
    assert [(s.name, s.env["CUDA_VISIBLE_DEVICES"]) for s in three] == [
        ("n-gpu0-0", "0"), ("n-gpu0-1", "0"), ("n-gpu0-2", "0"), ("n-gpu1-0", "1"), ("n-gpu1-1", "1"),
        ("n-gpu1-2", "1"),
    ]  # fmt: skip
    with pytest.raises(ValueError, match="--per-gpu must be >= 1"):
        slots(["0"], None, None, "n", per_gpu=0)
    cpu = slots(None, 2, 3, "box")
    assert [s.name for s in cpu] == ["box-cpu0", "box-cpu1"]
    assert cpu[0].env == {"CUDA_VISIBLE_DEVICES": "", "KVW_TORCH_THREADS": "3", "OMP_NUM_THREADS": "3",
                          "MKL_NUM_THREADS": "3"}  # fmt: skip
    with pytest.raises(ValueError, match="--gpu N"):
        slots(None, None, None, "x")
    cmd = worker_command("gpus", "node-gpu0")
    assert cmd[1:] == ["-m", "prefect", "worker", "start", "--pool", "gpus", "--type", "process", "--name",
                       "node-gpu0", "--limit", "1"]  # fmt: skip
