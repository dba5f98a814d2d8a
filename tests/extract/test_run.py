"""Run bookkeeping: run ids, skip records, the run row and the summary a user reads."""

from datetime import UTC, datetime

import duckdb
import pyarrow as pa

from extract.longbench import Skip, open_longbench
from extract.model import Loaded
from extract.run import Outcome, make_run_id, plan, record_skip, summary_markdown, write_run, write_sample
from extract.sample import StatsConfig
from warehouse.schemas import SAMPLES
from warehouse.store import Store


def fake_loaded(revision="r1", dtype="float32"):
    """Only the identity fields matter here; no model is run."""
    return Loaded(None, None, "tiny", "test:tiny", revision, "cpu", dtype, "sdpa")


def test_run_id_changes_with_what_shapes_the_data():
    base = make_run_id(fake_loaded(), 2048, StatsConfig())
    assert base == make_run_id(fake_loaded(), 2048, StatsConfig())
    others = {
        make_run_id(fake_loaded(), 4096, StatsConfig()),
        make_run_id(fake_loaded(revision="r2"), 2048, StatsConfig()),
        make_run_id(fake_loaded(dtype="bfloat16"), 2048, StatsConfig()),
        make_run_id(fake_loaded(), 2048, StatsConfig(window=64)),
        make_run_id(fake_loaded(), 2048, StatsConfig(raw_kv=True)),
    }
    assert base not in others and len(others) == 5
    assert make_run_id(fake_loaded(), 2048, StatsConfig(), run_name="mine") == "mine"


def test_skips_are_recorded_listed_and_cleared(tmp_path, longbench_dir):
    (longbench_dir / "data" / "trec.jsonl").open("ab").write(b"{broken\n")
    work = plan(open_longbench(longbench_dir), ["trec"], None)
    assert len(work.samples) == 2 and [s.source for s in work.skips] == ["trec.jsonl:3"]
    store = Store(tmp_path / "data")
    outcomes = [record_skip(store, "r", "tiny", s) for s in work.skips]
    outcomes.append(record_skip(store, "r", "tiny", Skip("trec", "x", "trec.jsonl:1", "boom"), status="failed"))
    outcomes.append(Outcome("trec", "y", "extracted", 256, 2.0))
    rows = duckdb.execute("SELECT source, reason FROM read_parquet(?) ORDER BY source", [store.glob("skipped")])
    assert [r[0] for r in rows.fetchall()] == ["trec.jsonl:1", "trec.jsonl:3"]
    run = write_run(store, fake_loaded(), "r", {"tasks": ["trec"]}, datetime.now(UTC), 5.0)
    assert (run["samples"], run["skipped"], run["invocations"]) == (0, 2, 1)
    md = summary_markdown(run, outcomes, str(store.root), "kv.duckdb", 5.0)
    assert "| samples extracted now | 1 |" in md and "| tokens/s (extraction only) | 128 |" in md
    assert "| trec | ? | trec.jsonl:3: malformed JSON" in md and "| trec | x | trec.jsonl:1: boom |" in md
    again = write_run(store, fake_loaded(), "r", {"tasks": ["trec"]}, datetime.now(UTC), 1.0)
    assert again["invocations"] == 2 and again["seconds"] == 6.0
    # a later extraction of the failed record clears its skip row; the other skip stays
    row = {f.name: None for f in SAMPLES.schema}
    row.update(run_id="r", model="tiny", task="trec", sample_id="x", source="trec.jsonl:1", n_tokens=256)
    write_sample(store, {"samples": pa.Table.from_pylist([row], SAMPLES.schema)}, head_dim=4)
    rows = duckdb.execute("SELECT source FROM read_parquet(?) ORDER BY source", [store.glob("skipped")])
    assert [r[0] for r in rows.fetchall()] == ["trec.jsonl:3"], "the extracted sample's skip row is cleared"
    assert write_run(store, fake_loaded(), "r", {"tasks": ["trec"]}, datetime.now(UTC), 1.0)["skipped"] == 1


def test_the_plans_longbench_warnings_reach_the_summary(tmp_path, longbench_dir):
    """An empty task file was only a log line: the run's summary artifact now lists it."""
    (longbench_dir / "data" / "samsum.jsonl").write_bytes(b"")
    work = plan(open_longbench(longbench_dir), ["samsum", "trec"], 1)
    assert len(work.samples) == 1 and any("samsum.jsonl has no records" in w for w in work.warnings)
    store = Store(tmp_path / "data")
    run = write_run(store, fake_loaded(), "r", {"tasks": ["samsum", "trec"]}, datetime.now(UTC), 1.0)
    md = summary_markdown(run, [], str(store.root), "kv.duckdb", 1.0, work.warnings)
    assert "## Warnings" in md and "- samsum.jsonl has no records: task samsum gives no samples" in md
    assert "## Warnings" not in summary_markdown(run, [], str(store.root), "kv.duckdb", 1.0)
