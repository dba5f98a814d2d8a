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
