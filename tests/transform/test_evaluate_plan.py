"""Evaluation requests: policy specs x budgets, settings, defaults (no model needed)."""

import pytest

from transform import decode
from transform import evaluate_run as er
from transform.policies import PolicyError, names


def test_names_json_specs_and_budgets_cross():
    pols = er.parse_policies(
        ["knorm", '{"name": "h2o", "recent_tokens": 8}', {"name": "random", "budget": 0.1}], [128.0, 0.5]
    )
    got = [(p.name, p.budget) for p in pols]
    assert got == [("knorm", 128), ("knorm", 0.5), ("h2o", 128), ("h2o", 0.5), ("random", 0.1)]
    assert isinstance(pols[0].budget, int) and pols[2].recent_tokens == 8


def test_comma_separated_names_and_duplicates_collapse():
    pols = er.parse_policies("sink_recent, knorm,knorm", [0.25])
    assert [p.name for p in pols] == ["sink_recent", "knorm"]
    assert len({p.policy_id for p in pols}) == 2


@pytest.mark.parametrize(
    ("specs", "match"),
    [
        ([], "no policies given; known policies: "),
        (['{"name": "knorm"'], "is not valid JSON"),
        ([{"budget": 3}], "has no name"),
        (["nope"], "unknown policy 'nope'"),
        ([{"name": "snapkv", "kernel": 3}], r"unknown parameter\(s\) \['kernel'\]"),
    ],
)
def test_bad_specs_are_named(specs, match):
    with pytest.raises(PolicyError, match=match):
        er.parse_policies(specs, [0.25])


@pytest.mark.parametrize("budget", [0, -1, -0.5])
def test_zero_or_negative_budget(budget):
    with pytest.raises(PolicyError, match="budget must be > 0"):
        er.parse_policies(["knorm"], [budget])


def test_settings():
    assert er.parse_settings("both") == list(decode.SETTINGS)
    assert er.parse_settings("question_agnostic,question_aware") == ["question_agnostic", "question_aware"]
    assert er.parse_settings(["question_aware", "question_aware"]) == ["question_aware"]
    with pytest.raises(decode.SettingError, match="unknown setting 'aware'"):
        er.parse_settings("aware")


def test_default_policies_cover_the_registry_and_fit_share_budgets():
    pols = er.parse_policies(list(er.DEFAULT_POLICIES), [0.25, 0.5])
    assert sorted({p.name for p in pols}) == names() and len(pols) == 2 * len(names())
    for p in pols:
        for n in (400, 1024, 2048, 4096):
            p.check(n)  # raises if a budget cannot hold the policy's forced tokens
