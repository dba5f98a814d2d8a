"""Per-sample provenance (issue 10 item 1): a run extended from two LongBench folders records, per sample, the
folder, file, line and content hash it read; evaluate verifies each sample against its own folder, evaluates from
the stored tokens (with a note) where that folder is gone, and refuses a record whose content changed."""

import hashlib
import shutil
from datetime import UTC, datetime

import pytest

from extract.longbench import open_longbench
from extract.run import make_run_id, plan, process_sample, write_run
from extract.sample import StatsConfig
from tests.conftest import FIXTURE_LONGBENCH
from transform import evaluate_run as er
from transform.evaluate import EvaluationError
from warehouse import catalog
from warehouse.store import Store

MAX_TOKENS = 256


@pytest.fixture(scope="module")
def two_folders(tmp_path_factory, smol):
    """qasper extracted from folder A, trec from folder B (a copy), into one run with the same settings."""
    base = tmp_path_factory.mktemp("provenance")
    a, b = base / "A", base / "B"
    shutil.copytree(FIXTURE_LONGBENCH, a)
    shutil.copytree(FIXTURE_LONGBENCH, b)
    store = Store(base / "data")
    cfg = StatsConfig()
    run_id = make_run_id(smol, MAX_TOKENS, cfg)
    for folder, task in ((a, "qasper"), (b, "trec")):
        lb = open_longbench(folder)
        for sample in plan(lb, [task], 1).samples:
            process_sample(store, smol, lb, sample, run_id, MAX_TOKENS, cfg)
        params = {"max_tokens": MAX_TOKENS, "max_tokens_effective": MAX_TOKENS, "data_dir": str(lb.root)}
        write_run(store, smol, run_id, params, datetime.now(UTC), 0.0)
    return {"store": store, "run_id": run_id, "a": a.resolve(), "b": b.resolve(), "base": base}


def _line(folder, task, n):
    return (folder / "data" / f"{task}.jsonl").read_bytes().splitlines()[n - 1]


def test_each_sample_records_its_folder_file_line_and_hash(two_folders):
    con = catalog.memory(two_folders["store"])
    rows = con.execute(
        "SELECT task, source, source_dir, source_file, source_line, source_sha256 FROM samples ORDER BY task"
    ).fetchall()
    runs = con.execute("SELECT data_dirs, max_tokens, max_tokens_effective FROM runs").fetchall()
    con.close()
    got = {r[0]: r[1:] for r in rows}
    a, b = str(two_folders["a"]), str(two_folders["b"])
    assert got["qasper"][1] == a and got["trec"][1] == b  # the same file:line in two folders is told apart
    for task, folder in (("qasper", two_folders["a"]), ("trec", two_folders["b"])):
        source, _, file, line, sha = got[task]
        assert source == f"{file}:{line}" and file == f"{task}.jsonl"
        assert sha == hashlib.sha256(_line(folder, task, line)).hexdigest()
    assert runs == [([a, b], MAX_TOKENS, MAX_TOKENS)]  # both folders, and the parameters as columns


def _plan(two_folders, task, smol_overwrite=True):
    con = catalog.memory(two_folders["store"])
    try:
        run = er.resolve_run(con, run_id=two_folders["run_id"])
    finally:
        con.close()
    pols = er.parse_policies(["sink_recent"], [0.5])
    return er.plan(two_folders["store"], pols, ["question_aware"], run, [task], 1, overwrite=smol_overwrite)


def test_evaluate_verifies_each_sample_against_its_own_folder(two_folders, smol):
    con = catalog.memory(two_folders["store"])
    run = er.resolve_run(con, run_id=two_folders["run_id"])
    con.close()
    assert run.data_dir == str(two_folders["b"]) and run.max_tokens == MAX_TOKENS  # the run's last folder is B
    p = _plan(two_folders, "qasper")  # ... but qasper came from A, and A's record is what it is checked against
    assert er.check_prompts(smol, p) == [] and p.notes == []


def test_a_record_changed_since_extraction_is_refused_by_name(two_folders, smol, tmp_path):
    moved = tmp_path / "edited"
    shutil.copytree(two_folders["b"], moved)
    path = moved / "data" / "trec.jsonl"
    lines = path.read_bytes().splitlines()
    lines[0] = lines[0].replace(b'"input": "', b'"input": "Edited. ', 1)
    assert lines[0] != _line(two_folders["b"], "trec", 1)
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(EvaluationError, match=r"trec/.*differs from the one extracted from .*sha256"):
        er.check_prompts(smol, _plan(two_folders, "trec"), str(moved))


def test_a_folder_that_is_gone_is_evaluated_from_the_stored_tokens_with_a_note(two_folders, smol):
    shutil.rmtree(two_folders["a"])
    p, outcomes = er.evaluate(
        two_folders["store"], ["sink_recent"], [0.5], run_id=two_folders["run_id"], tasks=["qasper"],
        max_new_tokens=2,
    )  # fmt: skip
    assert [o.evaluated for o in outcomes] == [1]
    assert len(p.notes) == 1 and "qasper/" in p.notes[0] and "not verified against LongBench" in p.notes[0]
    assert str(two_folders["a"]) in p.notes[0]
    con = catalog.memory(two_folders["store"])
    n = con.execute("SELECT count(*) FROM quality WHERE task = 'qasper'").fetchone()[0]
    con.close()
    assert n == 1
