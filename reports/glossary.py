"""'How to read this' for every page: the report module's docstring plus the definitions it leans on.

A report module's docstring says how to read its page; this module turns it
into page text and adds, from one glossary, the definitions the page needs
(a term is added when the docstring or the report's tables mention it), so a
definition is written once and reads the same on every page.
"""

from __future__ import annotations

import inspect
import re

from reports.base import Report
from reports.html import About

# (term, when: regex over the docstring + summary + tables read, definition). The numbers are the extraction's
# defaults (extract.sample.StatsConfig, extract.stats); tests check the text against them.
GLOSSARY: tuple[tuple[str, str, str], ...] = (
    (
        "attention received, observation window",
        r"attention|attn|sink|H2O|SnapKV",
        "the attention that the last W query positions of the prompt (the observation window; W = the run's "
        "`window`, 32 by default) pay to a position, averaged over those queries and over the query heads that "
        "share the KV head. Flash attention never builds the full matrix, so this is computed from the queries.",
    ),
    (
        "key norm, value norm",
        r"norm|magnitude",
        "the L2 norm of one token's key (or value) vector in one KV head (head_dim channels); keys are taken "
        "after RoPE, which does not change their norm. Per-token figures average over layers and KV heads "
        "unless a layer or head is chosen.",
    ),
    (
        "sparsity threshold",
        r"sparsit",
        "the share of entries of a head's keys (or values) whose |x| is below 5% of that head's RMS over the "
        "sample (a relative threshold, so layers of different scale compare).",
    ),
    (
        "quantization grouping",
        r"quantiz|int8|int4|fp8",
        "symmetric, one scale per token and KV head: each token's head_dim-channel vector is divided by its own "
        "max |x|, rounded to int8 (±127 levels), int4 (±7) or fp8 e4m3, and scaled back. Error = ‖x − x̂‖ / ‖x‖ "
        "over the head's tokens (relative Frobenius norm).",
    ),
    (
        "truncation",
        r"table:samples",  # pages drawn from extracted samples
        "a prompt longer than the run's max_tokens is cut in the middle (its first half and last half kept, as "
        "LongBench does), so positions count what the model saw. The index lists how many samples each run "
        "truncated and their token lengths.",
    ),
    (
        "budget, kept share",
        r"budget|evict|kept share|keep-set|quality",
        "how much of the cache a policy keeps: a token count or a ratio of the prompt; the kept share is kept "
        "tokens / prompt tokens (per KV head, averaged when a policy chooses per head). The full cache is 100%.",
    ),
    (
        "KL",
        r"\bKL\b|\bkl\b|quality",
        "mean KL(full ‖ evicted) of the next-token distributions over the reference answer, teacher-forced: 0 "
        "when eviction changes nothing the model predicts.",
    ),
)


def docstring_of(report: Report) -> str:
    """The docstring of the module that defines the report's chart function."""
    module = inspect.getmodule(report.chart)
    return inspect.cleandoc(module.__doc__ or "") if module else ""


def paragraphs(doc: str) -> tuple[str, ...]:
    """The docstring's paragraphs, each on one line; the '7. module_name:' prefix of the first one dropped."""
    parts = [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", doc)]
    if parts:
        first = re.sub(r"^(\d+\.\s*)?[a-z0-9_]+:\s*", "", parts[0])
        parts[0] = first[:1].upper() + first[1:]
    return tuple(p for p in parts if p)


def about(report: Report) -> About:
    """What the page's 'How to read this' section says."""
    doc = docstring_of(report)
    text = " ".join([doc, report.summary, *(f"table:{t}" for t in report.needs)])
    terms = tuple((term, definition) for term, when, definition in GLOSSARY if re.search(when, text, re.I))
    return About(paragraphs=paragraphs(doc), terms=terms)
