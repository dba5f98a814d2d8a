"""LongBench's official metrics: values computed by LongBench's own metrics.py/eval.py on these literal strings
(fuzzywuzzy with python-Levenshtein, rouge 1.0.1, jieba 0.42.1), reproduced here by transform.metrics."""

import pytest

from transform import metrics

# (task, prediction, answers, all_classes, LongBench's score x100)
CASES = [
    ("qasper", "The model improves by 5 percent points.", ["5 percent points.", "five"], None, 66.66666666666666),
    ("narrativeqa", "She declined, reading it later", ["She declined to read it."], None, 60.0),
    ("hotpotqa", "An apple and the Bob Dylan!", ["Bob Dylan"], None, 66.66666666666666),
    (
        "multifieldqa_zh",
        "铜仁市的财政总收入增长了25.89%。",
        ["2012年，铜仁市的财政总收入增长了25.89%。"],
        None,
        87.50000000000001,
    ),
    (
        "dureader",
        "测试新地图，用来测试新版本的",
        ["测试就一俩个新地图，用来测试新版本的，所以没有开放。"],
        None,
        66.66666622222223,
    ),
    (
        "gov_report",
        "Education provided over $122 billion in grants. It was large.",
        ["Education provided over $122 billion in grants and loans. The total was large."],
        None,
        78.26086907372401,
    ),
    ("samsum", "\nEmilia is angry.\nShe will call later.", ["Emilia is still angry."], None, 85.7142852244898),
    ("samsum", "", ["Emilia is still angry."], None, 0.0),
    ("trec", "Individual\nLocation", ["Individual"], ["Individual", "Location", "Number", "Description"], 100.0),
    ("trec", "Other location or City", ["City"], ["City", "Other location", "Country"], 50.0),
    ("lsht", "教育 科技", ["教育"], ["教育", "科技", "体育"], 50.0),
    ("passage_retrieval_en", "Paragraph 19 and paragraph 3", ["Paragraph 19"], None, 50.0),
    ("passage_retrieval_zh", "段落5", ["段落5"], None, 100.0),
    ("passage_count", "There are 46 unique paragraphs out of 50", ["46"], None, 50.0),
    ("lcc", "# comment\n    if e.text == lang:\n", ["    if e.text == language:"], None, 92.0),
    ("repobench-p", "```python\nclass Blob(Base):", ["class Blob(BaseModel):"], None, 87.0),
    ("triviaqa", "55 years\nQuestion: next", ["55", "fifty-five"], None, 66.66666666666666),
    ("vcsum", "了解了以包容学习", ["通过极具深度权威性的包容学习，了解了以"], None, 37.4999995703125),
]


@pytest.mark.parametrize(("task", "prediction", "answers", "classes", "expected"), CASES)
def test_scores_equal_longbench(task, prediction, answers, classes, expected):
    assert metrics.score(task, prediction, answers, classes) == pytest.approx(expected, abs=1e-9)


def test_every_longbench_task_has_a_metric_and_each_metric_is_used():
    assert len(metrics.TASK_METRIC) == 22  # LongBench's 21 + the built-in needle (extract/needle.py)
    assert set(metrics.TASK_METRIC.values()) == set(metrics.METRICS)
    assert metrics.metric_name("qasper_e") == "qa_f1"  # LongBench-E files


def test_first_line_only_for_the_few_shot_tasks():
    two_lines = "wrong\nIndividual"
    classes = ["Individual", "Location"]
    assert metrics.score("trec", two_lines, ["Individual"], classes) == 0.0  # first line only
    assert metrics.score("qasper", "wrong\nBob Dylan", ["Bob Dylan"]) == pytest.approx(80.0)  # whole text


def test_classification_reproduces_longbench_list_mutation_quirk():
    # LongBench removes sub-matches from the list it iterates, skipping one: 0.5, not 1.0
    assert metrics.classification_score("abc", "abc", all_classes=["a", "ab", "abc"]) == 0.5
    assert metrics.classification_score("none of them", "abc", all_classes=["a", "abc"]) == 0.0


def test_code_sim_is_fuzzywuzzy_ratio_rounded():
    assert metrics.code_sim_score("x=1", "x = 1") == 0.75
    assert metrics.code_sim_score("", "") == 1.0
    assert metrics.code_sim_score("// only comments\n# here", "x") == 0.0


def test_rouge_on_empty_or_punctuation_only_is_zero_like_longbench():
    assert metrics.rouge_score(".", "a b") == 0.0
    assert metrics.rouge_score("a b", "a b") == pytest.approx(1.0, abs=1e-6)


def test_max_over_answers_and_unknown_task():
    assert metrics.score("hotpotqa", "Paris", ["London", "Paris"]) == 100.0
    with pytest.raises(metrics.MetricError, match="no LongBench metric for task 'nope'"):
        metrics.score("nope", "x", ["x"])
