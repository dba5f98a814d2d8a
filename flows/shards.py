"""Shards: one LongBench task and a range of its samples, the unit a work pool hands to one worker.

Pure functions, no Prefect: which shards a run splits into, which planned items a shard owns, and the
one-line account of a run that lost work. A shard names a range of the task's good samples in file
order (the order `extract.run.plan` and `transform.samples.select` both keep), so a shard rebuilds its
own slice from the same inputs and never needs the list handed to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

DEFAULT_SHARD_SIZE = 8


@dataclass(frozen=True)
class Shard:
    task: str
    start: int  # index of the shard's first good sample within the task
    stop: int  # one past its last
    last: bool  # the task's last shard: it also owns the bad records after the last good sample

    @property
    def name(self) -> str:
        return f"{self.task}[{self.start}:{self.stop}]"

    def params(self) -> dict:
        return asdict(self)


def make_shards(counts: dict[str, int], shard_size: int) -> list[Shard]:
    """Split each task's `counts[task]` samples into ranges of at most `shard_size`; a task with none
    still gets one empty shard, so its bad records are recorded by someone."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    out = []
    for task, n in counts.items():
        starts = list(range(0, n, shard_size)) or [0]
        for start in starts:
            stop = min(start + shard_size, n)
            out.append(Shard(task, start, stop, stop >= n))
    return out


def counts_by_task(tasks: Iterable[str]) -> dict[str, int]:
    """Samples per task, in first-seen order (the plan's task order)."""
    out: dict[str, int] = {}
    for t in tasks:
        out[t] = out.get(t, 0) + 1
    return out


def owned(items: Sequence, shard: Shard, is_good) -> tuple[list, list]:
    """(good items, other items) of one task's planned items (in file order) that belong to `shard`:
    good items at index start..stop-1, and each other item (a bad record) met while the good count was in
    [start, stop), or after the last good one when the shard is the task's last."""
    good, other, seen = [], [], 0
    for item in items:
        if is_good(item):
            if shard.start <= seen < shard.stop:
                good.append(item)
            seen += 1
        elif shard.start <= seen < shard.stop or (shard.last and seen >= shard.stop):
            other.append(item)
    return good, other


def lost_work(failed: Sequence[str], total: int, unit: str) -> str:
    """The message of a run that lost work: `2 of 9 shards failed: a; b`."""
    shown = "; ".join(failed[:3]) + (f"; +{len(failed) - 3} more" if len(failed) > 3 else "")
    return f"{len(failed)} of {total} {unit} failed: {shown}"
