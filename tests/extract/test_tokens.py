"""Token categories: the first matching rule wins, in the documented order."""

import pytest

from extract.tokens import CATEGORIES, categorize


@pytest.mark.parametrize(
    "text,expected",
    [
        ("<|im_start|>", "special"),
        ("\n\n", "whitespace"),
        ("   ", "whitespace"),
        ("中", "cjk"),
        (" 会议", "cjk"),
        ("，", "cjk"),  # full-width punctuation belongs to the CJK block
        (" 2019", "digit"),
        (".", "punctuation"),
        ('."', "punctuation"),
        (" (", "punctuation"),
        ("==", "code_symbol"),
        ("->", "code_symbol"),
        (" {", "code_symbol"),
        ("_", "code_symbol"),
        (" the", "stopword"),
        ("The", "stopword"),
        (" kangaroo", "word"),
        ("ization", "word"),
        ("x1", "other"),
        ("self_attn", "other"),
    ],
)
def test_categories(text, expected):
    assert categorize(text, special=text.startswith("<|")) == expected
    assert expected in CATEGORIES
