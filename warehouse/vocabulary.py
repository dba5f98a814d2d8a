"""The label values the warehouse stores in its low-cardinality columns, defined once.

`tokens.category` and `tokens.segment` hold these strings; extraction writes
them and reports colour by them, so both import them from here (the warehouse
is the ground floor: reports never import `extract` for a vocabulary).
"""

from __future__ import annotations

CATEGORIES = (
    "special",  # the tokenizer's special / added control tokens (<|im_start|>, BOS, ...)
    "whitespace",  # only spaces, tabs, newlines
    "cjk",  # contains a CJK ideograph, kana or hangul (incl. partial-byte pieces of one)
    "digit",  # digits only (after stripping whitespace), e.g. " 2019"
    "punctuation",  # Unicode punctuation only: . , ; ! ? " ' ( ) [ ] ...
    "code_symbol",  # operators and mixed symbol runs: == -> += { } _ # @ $ % ^ & * | ~ < > / \\ `
    "stopword",  # an English function word (see extract.tokens.STOPWORDS)
    "word",  # letters only: a word or a word piece
    "other",  # anything else: alphanumeric mixes, identifiers like x_1, emoji
)

SEGMENTS = ("chat", "instruction", "context", "question")  # tokens.segment: where in the prompt a token sits

TENSORS = ("key", "value")  # the two halves of the cache, as reports label them
