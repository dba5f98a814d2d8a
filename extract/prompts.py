"""LongBench prompts as token ids, with each token's segment and the middle truncation recorded.

The prompt is the task template filled with the sample (as LongBench's pred.py
does), wrapped in the model's chat template except for the few-shot / code
tasks LongBench leaves raw. The filled body is tokenized once with offsets, so
each token knows whether it came from the instruction, the context or the
question; middle truncation (first half + last half, as LongBench) cuts ids
and labels together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from extract.longbench import Sample
from extract.tokens import categorize_all

# LongBench (pred.py) feeds these tasks without the chat template.
NO_CHAT_TASKS = frozenset({"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"})
SEGMENTS = ("chat", "instruction", "context", "question")
_SENTINEL = "\u2063KVW_PROMPT_BODY\u2063"


class PromptError(ValueError):
    """The prompt cannot be built (e.g. the token budget is smaller than the chat wrapper)."""


@dataclass(frozen=True)
class Prompt:
    input_ids: np.ndarray  # int64 [T]
    segments: list[str]  # one of SEGMENTS per token
    texts: list[str]  # surface text per token
    categories: list[str]
    n_original: int  # tokens before truncation
    chat: bool

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def truncated(self) -> bool:
        return self.n_original > self.n_tokens

    def span(self, segment: str) -> tuple[int, int]:
        """[start, end) covering the segment's tokens; (-1, -1) when it has none."""
        idx = [i for i, s in enumerate(self.segments) if s == segment]
        return (idx[0], idx[-1] + 1) if idx else (-1, -1)

    def ranges(self) -> dict[str, int]:
        """instruction = the task text before the context; question falls back to context_end when empty."""
        c0, c1 = self.span("context")
        q0, q1 = self.span("question")
        i0, _ = self.span("instruction")
        if q0 < 0:
            q0 = q1 = c1
        instr_start = i0 if 0 <= i0 < c0 else c0
        return {
            "instruction_start": instr_start,
            "instruction_end": c0,
            "context_start": c0,
            "context_end": c1,
            "question_start": q0,
            "question_end": q1,
        }


def fill_template(template: str, context: str, question: str) -> tuple[str, list[tuple[int, int, str]]]:
    """Fill {context} and {input}; return the text and (start, end, segment) character spans."""
    out, spans, pos, i = [], [], 0, 0
    fields = {"{context}": ("context", context), "{input}": ("question", question)}
    while i < len(template):
        hit = next((f for f in fields if template.startswith(f, i)), None)
        if hit is None:
            j = min([template.find(f, i) for f in fields if template.find(f, i) >= 0] or [len(template)])
            piece, seg, i = template[i:j], "instruction", j
        else:
            seg, piece = fields[hit]
            i += len(hit)
        if piece:
            spans.append((pos, pos + len(piece), seg))
            out.append(piece)
            pos += len(piece)
    return "".join(out), spans


def _label(offsets: np.ndarray, spans: list[tuple[int, int, str]]) -> list[str]:
    """Segment of each token = the span holding its last character."""
    starts = np.array([s for s, _, _ in spans])
    names = [seg for _, _, seg in spans]
    last = np.maximum(offsets[:, 1] - 1, offsets[:, 0])
    idx = np.clip(np.searchsorted(starts, last, side="right") - 1, 0, len(spans) - 1)
    return [names[k] for k in idx]


def _chat_wrapper(tokenizer) -> tuple[str, str]:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": _SENTINEL}], tokenize=False, add_generation_prompt=True
    )
    head, _, tail = text.partition(_SENTINEL)
    return head, tail


def _special_tokens(tokenizer, ids: list[int]) -> list[str]:
    return [tokenizer.decode([i]) for i in ids]


def build_prompt(tokenizer, template: str, sample: Sample, max_tokens: int) -> Prompt:
    """Token ids for a sample, at most `max_tokens` long (the body is cut in the middle)."""
    body, spans = fill_template(template, sample.context, sample.input)
    enc = tokenizer(body, add_special_tokens=False, return_offsets_mapping=True)
    body_ids = np.asarray(enc["input_ids"], dtype=np.int64)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)

    chat = sample.task not in NO_CHAT_TASKS and bool(getattr(tokenizer, "chat_template", None))
    if chat:
        head, tail = _chat_wrapper(tokenizer)
        head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
        tail_ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
    else:
        head_ids = tokenizer("", add_special_tokens=True)["input_ids"]  # BOS where the model wants one
        tail_ids = []
    budget = max_tokens - len(head_ids) - len(tail_ids)
    if budget < 2:
        raise PromptError(
            f"max_tokens={max_tokens} leaves no room for the prompt body "
            f"({len(head_ids) + len(tail_ids)} tokens of chat wrapper)"
        )
    n_original = len(head_ids) + len(body_ids) + len(tail_ids)
    if len(body_ids) > budget:  # LongBench's middle truncation: first half + last half
        half = budget // 2
        keep = np.r_[0:half, len(body_ids) - (budget - half) : len(body_ids)]
        body_ids, offsets = body_ids[keep], offsets[keep]
    body_seg = _label(offsets, spans)
    body_txt = [body[s:e] for s, e in offsets.tolist()]

    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids = list(head_ids) + body_ids.tolist() + list(tail_ids)
    segments = ["chat"] * len(head_ids) + body_seg + ["chat"] * len(tail_ids)
    texts = _special_tokens(tokenizer, head_ids) + body_txt + _special_tokens(tokenizer, tail_ids)
    is_special = [i in special for i in ids]
    return Prompt(
        input_ids=np.asarray(ids, dtype=np.int64),
        segments=segments,
        texts=texts,
        categories=categorize_all(texts, is_special),
        n_original=n_original,
        chat=chat,
    )
