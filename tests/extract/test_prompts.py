"""Prompt building with the real SmolLM2 tokenizer: LongBench templates, chat wrapping, middle truncation."""

import numpy as np
import pytest

from extract.longbench import open_longbench, read_task
from extract.prompts import NO_CHAT_TASKS, PromptError, build_prompt, fill_template
from tests.conftest import FIXTURE_LONGBENCH


@pytest.fixture(scope="module")
def lb():
    return open_longbench(FIXTURE_LONGBENCH)


def first(lb, task):
    return next(iter(read_task(lb, task, 1)))


def test_fill_template_spans():
    text, spans = fill_template("Read: {context}\n\nQ: {input}\nA:", "CTX", "QQ")
    assert text == "Read: CTX\n\nQ: QQ\nA:"
    assert [(text[s:e], seg) for s, e, seg in spans] == [
        ("Read: ", "instruction"),
        ("CTX", "context"),
        ("\n\nQ: ", "instruction"),
        ("QQ", "question"),
        ("\nA:", "instruction"),
    ]


def test_untruncated_prompt_is_the_chat_text_exactly(lb, smol):
    tok = smol.tokenizer
    s = first(lb, "qasper")
    p = build_prompt(tok, lb.prompts["qasper"], s, 100_000)
    body, _ = fill_template(lb.prompts["qasper"], s.context, s.input)
    chat = tok.apply_chat_template([{"role": "user", "content": body}], tokenize=False, add_generation_prompt=True)
    assert not p.truncated and p.n_tokens == p.n_original
    assert tok.decode(p.input_ids.tolist()) == chat
    assert p.input_ids.tolist() == tok(chat, add_special_tokens=False)["input_ids"]
    assert p.chat and p.segments[0] == "chat" and p.categories[0] == "special"
    r = p.ranges()
    assert 0 < r["instruction_start"] < r["context_start"] < r["context_end"] <= r["question_start"] < r["question_end"]
    assert set(p.segments[r["context_start"] : r["context_end"]]) == {"context"}
    assert "".join(p.texts[r["question_start"] : r["question_end"]]).strip() == s.input.strip()


def test_middle_truncation_keeps_first_and_last_half(lb, smol):
    tok = smol.tokenizer
    s = first(lb, "qasper")
    full = build_prompt(tok, lb.prompts["qasper"], s, 100_000)
    cut = build_prompt(tok, lb.prompts["qasper"], s, 300)
    assert cut.n_tokens == 300 and cut.truncated and cut.n_original == full.n_tokens
    head = full.segments.index("instruction")  # chat tokens before the body
    tail = full.segments[::-1].index("instruction")  # chat tokens after it
    budget = 300 - head - tail
    ids = full.input_ids
    body = ids[head : len(ids) - tail]
    expected = np.r_[ids[:head], body[: budget // 2], body[-(budget - budget // 2) :], ids[len(ids) - tail :]]
    assert cut.input_ids.tolist() == expected.tolist()
    assert cut.segments[-tail - 1] != "context"  # the question and the instruction tail survive
    assert "question" in cut.segments


@pytest.mark.parametrize("task", sorted(NO_CHAT_TASKS & {"trec", "lcc", "samsum"}))
def test_few_shot_and_code_tasks_skip_the_chat_template(lb, smol, task):
    p = build_prompt(smol.tokenizer, lb.prompts[task], first(lb, task), 512)
    assert not p.chat and "chat" not in p.segments and "<|im_start|>" not in p.texts


def test_cjk_tokens_carry_their_characters(lb, smol):
    p = build_prompt(smol.tokenizer, lb.prompts["multifieldqa_zh"], first(lb, "multifieldqa_zh"), 512)
    cjk = [t for t, c in zip(p.texts, p.categories, strict=True) if c == "cjk"]
    assert len(cjk) > 100 and all("\ufffd" not in t for t in cjk)


def test_budget_smaller_than_the_chat_wrapper_is_a_clear_error(lb, smol):
    with pytest.raises(PromptError, match="max_tokens=20 leaves no room"):
        build_prompt(smol.tokenizer, lb.prompts["qasper"], first(lb, "qasper"), 20)
