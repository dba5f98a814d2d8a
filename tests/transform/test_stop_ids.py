"""When decoding stops: at the model's EOS ids, and for samsum also at a newline (LongBench's pred.py adds
the newline token to samsum's eos_token_id), with the real default tokenizer."""

import pytest

from transform.evaluate import stop_ids

pytestmark = pytest.mark.model


def test_samsum_alone_also_stops_at_a_newline(smol):
    tok, model = smol.tokenizer, smol.model
    newline = {i for i in range(len(tok)) if tok.decode([i]) == "\n"}
    assert newline, "the tokenizer has a token that is exactly a newline"
    eos = {tok.eos_token_id}
    for task in ("qasper", "trec", "multifieldqa_zh"):
        assert eos <= stop_ids(tok, model, task) and not newline & stop_ids(tok, model, task), task
    extra = stop_ids(tok, model, "samsum") - stop_ids(tok, model, "qasper")
    assert len(extra) == 1 and extra <= newline, [tok.decode([i]) for i in extra]
