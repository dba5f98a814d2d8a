"""The built-in needle task: deterministic, the needle where the depth says, a task like any LongBench one."""

import re

import pyarrow as pa
import pytest

from extract import needle
from extract.longbench import LongBenchError, open_longbench, read_task
from extract.prompts import build_prompt
from extract.run import plan
from transform import metrics

GRID = needle.Grid(lengths=(128, 512, 1024), depths=(0, 10, 25, 50, 75, 90, 100), seeds=(0, 3))
NEEDLE_RE = re.compile(r"The pass key is \d+\. Remember it\. \d+ is the pass key\.|One of the special magic numbers "
                       r"for \w+ is: \d+\.")  # fmt: skip


def test_same_id_same_sample_every_time(longbench_dir):
    lb = open_longbench(longbench_dir)
    first = list(read_task(needle.attach(lb, GRID), "needle"))
    needle._PROSE.clear()  # and from a cold cache: nothing but the id and the folder decides
    again = list(read_task(needle.attach(open_longbench(longbench_dir), GRID), "needle"))
    assert first == again and len(first) == len(GRID.specs()) == 126
    assert len({s.sample_id for s in first}) == 126
    assert len({s.context for s in first}) == 126  # every cell its own haystack cut and needle
    assert [s.source for s in first[:3]] == ["needle:1", "needle:2", "needle:3"]
    for s in first:
        assert needle.record(lb, s.sample_id) == needle.to_sample(needle.generate(lb, needle.Spec.parse(s.sample_id)),
                                                                 f"needle:{s.sample_id}", str(lb.root))  # fmt: skip
        assert needle.record(lb, s.sample_id, s.source) == s  # evaluate re-creates it from the id alone
        assert s.answers[0] in s.context and re.fullmatch(r"\d{5}", s.answers[0])


def test_seed_changes_needle_and_haystack(longbench_dir):
    lb = open_longbench(longbench_dir)
    a, b = (needle.generate(lb, needle.Spec("single", 512, 50, seed)) for seed in (0, 3))
    assert a.needle != b.needle and a.context[:200] != b.context[:200]


@pytest.mark.parametrize("kind", needle.KINDS)
def test_needle_sits_at_the_requested_depth(longbench_dir, kind):
    """Depth read back from the text alone: haystack characters before the needle over all haystack characters,
    the needle sentences taken out. It must be the requested depth within half the longest sentence."""
    lb = open_longbench(longbench_dir)
    for spec in needle.Grid(kinds=(kind,), lengths=(256, 1024), depths=(0, 10, 33, 50, 67, 90, 100)).specs():
        lay = needle.generate(lb, spec)
        at = lay.context.index(lay.needle_text)
        sentences = list(NEEDLE_RE.finditer(lay.context))
        assert len(sentences) == lay.needles == (4 if kind == "multi" else 1)
        assert len({m.group() for m in sentences}) == len(sentences)
        hay = NEEDLE_RE.sub("", lay.context)
        before = len(NEEDLE_RE.sub("", lay.context[:at]))
        measured = 100 * before / len(hay)
        gap = max(len(x) for x in re.split(r"(?<=[.!?])\s+", hay)) + 2
        assert abs(measured - spec.depth) <= 100 * gap / 2 / len(hay), (spec, measured)
        assert lay.depth_actual == pytest.approx(measured, abs=100 * 2 * lay.needles / len(hay))  # separators
        if spec.depth in (0, 100):
            assert lay.context.startswith(lay.needle_text) == (spec.depth == 0)
            assert lay.context.endswith(lay.needle_text) == (spec.depth == 100)
        chars = len(hay) / needle.CHARS_PER_TOKEN[kind]
        assert 0.8 * spec.length < chars < 1.2 * spec.length


def test_ids_round_trip_and_bad_ids_are_named():
    spec = needle.Spec("multi", 2048, 75, 2)
    assert spec.sample_id == "needle-multi-L2048-D75-s2" and needle.Spec.parse(spec.sample_id) == spec
    with pytest.raises(needle.NeedleError, match="not a needle sample id"):
        needle.Spec.parse("needle-multi-2048")
    with pytest.raises(needle.NeedleError, match="kind 'haystack' is not one of passkey, single, multi"):
        needle.Spec.parse("needle-haystack-L128-D0-s0")
    with pytest.raises(needle.NeedleError, match="depth 150 must be a percentage"):
        needle.Spec("passkey", 128, 150)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"lenghts": [128]}, r"unknown key\(s\) \['lenghts'\]; known: kinds, lengths, depths, seeds"),
        ({"kinds": ["passkey", "haystack"]}, "kind 'haystack' is not one of"),
        ({"depths": []}, "depths must be a non-empty list"),
        ({"lengths": ["long"]}, "lengths must be whole numbers"),
        ({"lengths": [8]}, "length 8 must be 16 .. 1000000 tokens"),
        ("{lengths: 128}", "needle_grid is not JSON"),
        ([128], "must be an object of kinds/lengths/depths/seeds"),
    ],
)
def test_bad_grid_is_named(value, message):
    with pytest.raises(needle.NeedleError, match=message):
        needle.Grid.parse(value)


def test_grid_from_json_or_comma_strings():
    grid = needle.Grid.parse('{"kinds": "passkey", "lengths": "256,128,256", "depths": [50]}')
    assert grid == needle.Grid(kinds=("passkey",), lengths=(256, 128), depths=(50,), seeds=(0,))
    assert needle.Grid.parse(None) == needle.Grid()


def test_needle_is_a_task_like_longbench_ones(longbench_dir):
    lb = open_longbench(longbench_dir)
    assert "needle" not in lb.tasks  # opt-in: "every task" stays LongBench's
    assert lb.prompts["needle"] == needle.TEMPLATE and lb.maxlens["needle"] == needle.MAX_NEW_TOKENS
    work = plan(lb, ["qasper", "needle"], None)
    got = [s for s in work.samples if s.task == "needle"]
    assert [s.sample_id for s in got] == [s.sample_id for s in needle.Grid().specs()] and not work.skips
    assert [s.sample_id for s in plan(lb, ["needle"], 2).samples] == [
        "needle-passkey-L128-D0-s0",
        "needle-passkey-L128-D25-s0",
    ]
    with pytest.raises(LongBenchError, match=r"unknown task\(s\) \['needles'\].*\(and the built-in needle\)"):
        plan(lb, ["needles"], 1)


def test_prose_kinds_without_english_prose_name_the_problem(longbench_dir):
    for f in (longbench_dir / "data").glob("qasper.jsonl"):
        f.unlink()
    lb = open_longbench(longbench_dir)
    assert needle.generate(lb, needle.Spec("passkey", 128, 50)).needle  # the filler needs no data
    with pytest.raises(needle.NeedleError, match="needs English prose for its haystack: none of gov_report"):
        needle.generate(lb, needle.Spec("single", 128, 50))


def test_exact_match_of_the_needle():
    assert metrics.metric_name("needle") == "needle_exact"
    assert metrics.score("needle", "The pass key is 48213.", ["48213"]) == 100.0
    assert metrics.score("needle", "48213", ["48213"]) == 100.0
    assert metrics.score("needle", "The pass key is 482130.", ["48213"]) == 0.0  # not a prefix match
    assert metrics.score("needle", "It is 12345 or 48213.", ["48213"]) == 0.0  # listing candidates fails
    assert metrics.score("needle", "I don't know.", ["48213"]) == 0.0


@pytest.mark.parametrize("kind", needle.KINDS)
def test_needles_row_points_at_the_needle_tokens(smol, longbench_dir, kind):
    """needle_start/end from the prompt's token texts: the tokens there spell the needle sentence, and their
    depth among the context tokens is the requested one; truncation that cuts the needle leaves NULLs."""
    lb = open_longbench(longbench_dir)
    tok = smol.tokenizer
    for spec in needle.Grid(kinds=(kind,), lengths=(512,), depths=(0, 50, 100)).specs():
        sample = needle.record(lb, spec.sample_id)
        prompt = build_prompt(tok, lb.prompts["needle"], sample, 4096)
        keys = {k: pa.array([v]) for k, v in
                {"run_id": "r", "model": "m", "task": "needle", "sample_id": spec.sample_id}.items()}  # fmt: skip
        row = needle.needles_table(keys, lb, sample, prompt).to_pylist()[0]
        span = tok.decode(prompt.input_ids[row["needle_start"] : row["needle_end"]])
        assert span.strip() == sample.context[sample.context.index(row["needle_text"]) :][: len(span.strip())]
        assert span.strip() == row["needle_text"] and row["needle"] == sample.answers[0]
        r = prompt.ranges()
        assert row["context_tokens"] == r["context_end"] - r["context_start"] and 400 < row["context_tokens"] < 620
        assert r["context_start"] <= row["needle_start"] < row["needle_end"] <= r["context_end"]
        assert row["depth_tokens"] == pytest.approx(spec.depth, abs=12 if kind == "passkey" else 20)
        assert row["kind"] == kind and row["length_requested"] == 512 and row["depth_requested"] == spec.depth
    mid = needle.record(lb, needle.Spec(kind, 512, 50).sample_id)
    cut = build_prompt(tok, lb.prompts["needle"], mid, 128)  # the middle, needle included, is cut out
    row = needle.needles_table(keys, lb, mid, cut).to_pylist()[0]
    assert row["needle_start"] is None and row["depth_tokens"] is None and row["depth_actual"] > 0


@pytest.mark.parametrize("kind", needle.KINDS)
def test_short_haystacks_still_hold_every_needle(longbench_dir, kind):
    """A context of a few sentences has fewer sentence ends than multi has needles: distractors share them."""
    lb = open_longbench(longbench_dir)
    for spec in needle.Grid(kinds=(kind,), lengths=(16, 32), depths=(0, 100)).specs():
        lay = needle.generate(lb, spec)
        assert len(NEEDLE_RE.findall(lay.context)) == lay.needles == (4 if kind == "multi" else 1)
        assert lay.context.startswith(lay.needle_text) == (spec.depth == 0)
        assert lay.context.endswith(lay.needle_text) == (spec.depth == 100)
