"""Token categories: a coarse label per token so magnitudes can be compared by kind of token.

Rules are checked in the order of CATEGORIES; the first that matches wins.
Text is the token's surface form (leading space included), as decoded.
"""

from __future__ import annotations

import unicodedata

from warehouse.vocabulary import CATEGORIES  # noqa: F401 (defined once, with the schemas; rules follow its order)

# NLTK's English stopword list (public domain), lower case.
STOPWORDS = frozenset(
    """
    i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her
    hers herself it its itself they them their theirs themselves what which who whom this that these
    those am is are was were be been being have has had having do does did doing a an the and but if or
    because as until while of at by for with about against between into through during before after
    above below to from up down in out on off over under again further then once here there when where
    why how all any both each few more most other some such no nor not only own same so than too very s
    t can will just don should now d ll m o re ve y ain aren couldn didn doesn hadn hasn haven isn ma
    mightn mustn needn shan shouldn wasn weren won wouldn
    """.split()  # noqa: SIM905 (a readable word list)
)

_CODE_CHARS = set("=+-*/\\%^&|~<>{}[]()_#@$`;:")


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF  # CJK unified ideographs
        or 0x3400 <= cp <= 0x4DBF  # extension A
        or 0x20000 <= cp <= 0x2FA1F  # extensions B.. and compatibility supplement
        or 0xF900 <= cp <= 0xFAFF  # compatibility ideographs
        or 0x3040 <= cp <= 0x30FF  # hiragana, katakana
        or 0xAC00 <= cp <= 0xD7AF  # hangul syllables
        or 0x3000 <= cp <= 0x303F  # CJK symbols and punctuation (。、「」)
        or 0xFF00 <= cp <= 0xFFEF  # full-width forms (，：？)
    )


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P")


def categorize(text: str, special: bool = False) -> str:
    """The category of one token's text (see CATEGORIES)."""
    if special:
        return "special"
    core = text.strip()
    if not core:
        return "whitespace"
    if any(_is_cjk(ch) for ch in core):
        return "cjk"
    if core.isdigit():
        return "digit"
    if all(_is_punct(ch) for ch in core) and not any(ch in "_#@{}\\" for ch in core):
        return "punctuation"
    if all(ch in _CODE_CHARS or _is_punct(ch) or unicodedata.category(ch).startswith("S") for ch in core):
        return "code_symbol"
    if core.lower() in STOPWORDS and core.isalpha():
        return "stopword"
    if core.isalpha():
        return "word"
    return "other"


def categorize_all(texts: list[str], special_mask: list[bool]) -> list[str]:
    return [categorize(t, s) for t, s in zip(texts, special_mask, strict=True)]
