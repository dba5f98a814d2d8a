"""LongBench loading: the official layout, and every bad input named, skipped and the rest kept."""

import json

import pytest

from extract.longbench import LongBenchError, Sample, Skip, open_longbench, read_task
from extract.run import plan


def test_reads_the_official_layout(longbench_dir):
    lb = open_longbench(longbench_dir)
    assert lb.tasks == ["lcc", "multifieldqa_zh", "qasper", "samsum", "trec"]
    assert "{context}" in lb.prompts["qasper"] and lb.maxlens["qasper"] == 128
    items = list(read_task(lb, "qasper"))
    assert [type(i) for i in items] == [Sample, Sample]
    s = items[0]
    assert s.task == "qasper" and s.sample_id and s.context and s.answers
    assert s.source == "qasper.jsonl:1" and s.language == "en"


def test_limit_counts_good_samples(longbench_dir):
    lb = open_longbench(longbench_dir)
    assert len(list(read_task(lb, "qasper", limit=1))) == 1
    assert len(plan(lb, None, 1).samples) == len(lb.tasks)


def test_unknown_task_lists_the_known_ones(longbench_dir):
    lb = open_longbench(longbench_dir)
    with pytest.raises(LongBenchError, match=r"unknown task\(s\) \['nope'\].*known tasks: lcc, multifieldqa_zh"):
        plan(lb, ["qasper", "nope"], 1)


def test_missing_directory_says_how_to_get_longbench(tmp_path):
    with pytest.raises(LongBenchError, match=r"does not exist.*data\.zip.*dataset2prompt\.json.*KVW_LONGBENCH"):
        open_longbench(tmp_path / "nowhere")


def test_missing_config_file_is_named(longbench_dir):
    (longbench_dir / "config" / "dataset2maxlen.json").unlink()
    with pytest.raises(LongBenchError, match=r"dataset2maxlen\.json is missing"):
        open_longbench(longbench_dir)


def _append(path, raw: bytes):
    with path.open("ab") as fh:
        fh.write(raw + b"\n")


def test_bad_records_become_named_skips_and_the_rest_continue(longbench_dir):
    data = longbench_dir / "data" / "qasper.jsonl"
    good = json.loads(data.read_text().splitlines()[0])
    _append(data, b'{"input": "q", "context": ')  # line 3: malformed JSON
    _append(data, json.dumps({**good, "_id": "latin1", "input": "caf@"}).encode().replace(b"caf@", b"caf\xe9"))
    _append(data, json.dumps({**good, "_id": "empty", "context": "   "}).encode())  # line 5
    _append(data, json.dumps({**good, "_id": "later"}).encode())  # line 6: still read
    _append(data, json.dumps({**good}).encode())  # line 7: duplicate _id of line 1
    items = list(read_task(open_longbench(longbench_dir), "qasper"))
    skips = {i.source: i.reason for i in items if isinstance(i, Skip)}
    assert skips["qasper.jsonl:3"].startswith("malformed JSON")
    assert skips["qasper.jsonl:4"].startswith("not UTF-8: byte 0xe9 at offset ")
    assert skips["qasper.jsonl:5"] == "empty context"
    assert skips["qasper.jsonl:7"] == "duplicate _id in the task file"
    assert [i.sample_id for i in items if isinstance(i, Sample)][-1] == "later"


def test_missing_fields_are_named(longbench_dir):
    data = longbench_dir / "data" / "trec.jsonl"
    _append(data, json.dumps({"_id": "x", "input": "q"}).encode())
    skips = [i for i in read_task(open_longbench(longbench_dir), "trec") if isinstance(i, Skip)]
    assert skips and skips[0].reason == "missing field(s) ['context', 'answers']"


def _set_template(root, task: str, template) -> None:
    path = root / "config" / "dataset2prompt.json"
    prompts = json.loads(path.read_text())
    prompts[task] = template
    path.write_text(json.dumps(prompts))


@pytest.mark.parametrize(
    ("task", "template", "named"),
    [
        ("qasper", "Answer the question.\n\nQuestion: {input}\nAnswer:", r"\{context\}"),  # context left out
        ("qasper", "Article: {context}\n\nAnswer:", r"\{input\}"),  # LongBench's qasper has a question
        ("qasper", "Article: {context}\n\nQuestion: {question}\nAnswer:", r"\{question\}"),  # not filled
        ("trec", "{context}\n{input}\nLabel ({all_classes}):", r"\{all_classes\}"),
        ("qasper", "Article: {context!r}\n{input}", r"\{context!r\}"),
        ("lcc", "{context}Next line of code: {}", r"\{\}"),
        ("qasper", "Article: {context\n{input}", r"not a valid template"),
        ("qasper", ["Article: {context}", "{input}"], r"not a string"),
    ],
)
def test_bad_templates_are_named_before_any_sample_is_read(longbench_dir, task, template, named):
    """A template that would drop the context, or leave a placeholder as literal text, fails at open time."""
    _set_template(longbench_dir, task, template)
    with pytest.raises(LongBenchError, match=rf"dataset2prompt\.json: task '{task}': .*{named}"):
        open_longbench(longbench_dir)


def test_templates_without_a_question_are_fine_where_longbench_has_none(longbench_dir):
    """gov_report, lcc, ... have no {input} in LongBench; a task of one's own needs only {context}."""
    _set_template(longbench_dir, "lcc", "Complete the code.\n{context}Next line of code:\n")
    _set_template(longbench_dir, "my_task", "Read this: {context}\nSummary:")
    lb = open_longbench(longbench_dir)
    assert lb.prompts["my_task"].startswith("Read this")


def _good(longbench_dir, task="qasper") -> dict:
    return json.loads((longbench_dir / "data" / f"{task}.jsonl").read_text().splitlines()[0])


@pytest.mark.parametrize(
    ("answers", "reason"),
    [
        (None, "answers is null"),  # was stored as ['None']
        ([], "answers is empty"),
        (["ok", None], "answers[1] is null"),
        ({"a": 1}, "answers must be a list of strings, got dict"),
    ],
)
def test_answers_that_cannot_be_scored_are_skipped_not_stored_as_text(longbench_dir, answers, reason):
    data = longbench_dir / "data" / "qasper.jsonl"
    _append(data, json.dumps({**_good(longbench_dir), "_id": "noanswer", "answers": answers}).encode())
    items = list(read_task(open_longbench(longbench_dir), "qasper"))
    assert "noanswer" not in [i.sample_id for i in items if isinstance(i, Sample)]
    (skip,) = [i for i in items if isinstance(i, Skip)]
    assert skip.sample_id == "noanswer" and skip.source == "qasper.jsonl:3" and skip.reason.startswith(reason)


def test_a_single_answer_string_is_one_answer(longbench_dir):
    data = longbench_dir / "data" / "qasper.jsonl"
    _append(data, json.dumps({**_good(longbench_dir), "_id": "one", "answers": "yes"}).encode())
    (s,) = [i for i in read_task(open_longbench(longbench_dir), "qasper") if i.sample_id == "one"]
    assert isinstance(s, Sample) and s.answers == ["yes"]


@pytest.mark.parametrize(
    ("sample_id", "reason"),
    [
        ("", "_id must be a non-empty string, got ''"),
        ("  ", "_id must be a non-empty string, got '  '"),
        (0, "_id must be a non-empty string, got int 0"),
        (None, "_id must be a non-empty string, got null"),
        ("a/b", "_id 'a/b' cannot name a file"),
    ],
)
def test_bad_ids_are_skipped_when_read_and_do_not_count_toward_limit(longbench_dir, sample_id, reason):
    """Two such records in a row: each is named for what it is, never 'duplicate _id'; the limit counts
    good samples only, so both good records after them are still read."""
    data = longbench_dir / "data" / "qasper.jsonl"
    lines = data.read_text().splitlines()
    bad = json.dumps({**json.loads(lines[0]), "_id": sample_id})
    data.write_text("\n".join([bad, bad, *lines]) + "\n")
    items = list(read_task(open_longbench(longbench_dir), "qasper", limit=2))
    assert [type(i) for i in items] == [Skip, Skip, Sample, Sample]
    assert all(i.reason.startswith(reason) for i in items[:2]), [i.reason for i in items[:2]]
    assert [i.source for i in items[:2]] == ["qasper.jsonl:1", "qasper.jsonl:2"]


def test_an_empty_task_file_and_a_task_without_max_length_are_warned(longbench_dir, caplog):
    (longbench_dir / "data" / "trec.jsonl").write_text("\n")
    path = longbench_dir / "config" / "dataset2maxlen.json"
    path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "qasper"}))
    with caplog.at_level("WARNING"):
        work = plan(open_longbench(longbench_dir), ["trec", "qasper", "lcc"], 1)
    assert len(work.warnings) == 2
    assert "trec.jsonl" in work.warnings[0] and "no records" in work.warnings[0]
    assert "qasper" in work.warnings[1] and "dataset2maxlen.json" in work.warnings[1]
    for w in work.warnings:
        assert w in caplog.text
    assert [s.task for s in work.samples] == ["qasper", "lcc"]


@pytest.mark.parametrize("tasks", ["", " , ", [], ["qasper", ""]])
def test_an_empty_task_name_is_an_error_not_every_task(longbench_dir, tasks):
    from flows.params import as_list

    with pytest.raises(LongBenchError, match="empty task name"):
        plan(open_longbench(longbench_dir), as_list(tasks), 1)


def test_no_tasks_given_still_means_every_task(longbench_dir):
    assert len(plan(open_longbench(longbench_dir), None, 1).samples) == 5


def test_evaluate_refuses_an_empty_task_list_too():
    """`evaluate tasks=""` reaches the selection as []: an error, not every extracted task."""
    import duckdb

    from transform.samples import SelectionError, select

    with pytest.raises(SelectionError, match="empty task name"):
        select(duckdb.connect(), "r1", [])
