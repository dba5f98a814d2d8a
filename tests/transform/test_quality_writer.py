"""Quality rows are written a LongBench task at a time, each (sample, policy, setting) in exactly one file."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from transform.evaluate import QualityWriter, evaluated
from warehouse.schemas import QUALITY
from warehouse.store import Store


def rows(task: str, samples: list[str], policies: list[str], score: float) -> pa.Table:
    out = []
    for sid in samples:
        for pid in policies:
            row = {c: None for c in QUALITY.columns}
            row.update(run_id="r", model="m", task=task, sample_id=sid, policy_id=pid, setting="question_aware",
                       score=score, evaluated_at=datetime.now(UTC))  # fmt: skip
            out.append(row)
    return pa.Table.from_pylist(out, schema=QUALITY.schema)


def scores(store: Store) -> dict[tuple, list[float]]:
    got: dict[tuple, list[float]] = {}
    for f in store.files("quality"):
        t = pq.read_table(f, columns=["sample_id", "policy_id", "score"]).to_pylist()
        for r in t:
            got.setdefault((r["sample_id"], r["policy_id"]), []).append(r["score"])
    return got


def test_one_file_per_task_per_flush_and_overwrite_never_duplicates(tmp_path):
    store = Store(tmp_path)
    writer = QualityWriter(store)
    writer.add(rows("qasper", ["a"], ["p1", "p2"], 1.0))
    writer.add(rows("qasper", ["b"], ["p1", "p2"], 1.0))
    assert store.files("quality") == [], "buffered until the task changes"
    writer.add(rows("trec", ["c"], ["p1"], 1.0))  # a new task flushes qasper's rows as one file
    assert len(store.files("quality", task="qasper")) == 1
    writer.close()
    assert len(store.files("quality")) == 2 and writer.rows == 5
    assert evaluated(store, "r") == {("qasper", "a", "p1", "question_aware"), ("qasper", "a", "p2", "question_aware"),
                                     ("qasper", "b", "p1", "question_aware"), ("qasper", "b", "p2", "question_aware"),
                                     ("trec", "c", "p1", "question_aware")}  # fmt: skip

    again = QualityWriter(store, overwrite=True)
    again.add(rows("qasper", ["a"], ["p2"], 2.0))
    again.close()
    got = scores(store)
    assert all(len(v) == 1 for v in got.values()), "every key in exactly one file"
    assert got[("a", "p2")] == [2.0] and got[("a", "p1")] == [1.0] and got[("b", "p2")] == [1.0]


def test_a_long_task_is_flushed_every_flush_seconds(tmp_path):
    store = Store(tmp_path)
    writer = QualityWriter(store, flush_seconds=0.0)  # a killed evaluation loses at most this much work
    writer.add(rows("qasper", ["a"], ["p1"], 1.0))
    writer.add(rows("qasper", ["b"], ["p1"], 1.0))
    assert len(store.files("quality")) == 1
    writer.close()
    assert len(store.files("quality")) == 2 and len(scores(store)) == 2
