"""Integration: the real default model on real LongBench samples, through Parquet into DuckDB."""

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from extract.longbench import open_longbench, read_task
from extract.model import Loaded
from extract.prompts import build_prompt
from extract.run import effective_max_tokens, make_run_id, process_sample
from extract.sample import StatsConfig
from tests.conftest import FIXTURE_LONGBENCH, tiny_llama_config
from warehouse import catalog
from warehouse.store import Store


@pytest.fixture(scope="module")
def con(small_warehouse):
    c = duckdb.connect(str(small_warehouse["db"]), read_only=True)
    yield c
    c.close()


def q(con, sql, *params):
    return con.execute(sql, list(params)).fetchall()


def test_every_table_has_every_row_once(con, small_warehouse):
    L, H = 30, 3
    samples = q(con, "SELECT task, sample_id, n_tokens FROM samples ORDER BY task")
    assert [s[0] for s in samples] == ["multifieldqa_zh", "qasper", "trec"]
    for _task, sid, n in samples:
        assert n == 512
        assert (
            q(
                con,
                "SELECT count(*), count(DISTINCT (layer, kv_head, position)) FROM token_stats WHERE sample_id=?",
                sid,
            )[0]
            == (L * H * n,) * 2
        )
        assert q(con, "SELECT count(*), min(position), max(position) FROM tokens WHERE sample_id=?", sid)[0] == (
            n,
            0,
            n - 1,
        )
        assert q(con, "SELECT count(*) FROM layer_stats WHERE sample_id=?", sid)[0][0] == L * H
        assert q(con, "SELECT count(*) FROM kv WHERE sample_id=?", sid)[0][0] == L * H * 64
    run = q(con, "SELECT samples, tokens, skipped, device, attn_impl FROM runs")
    assert run == [(3, 3 * 512, 0, "cpu", "sdpa")]


def test_tokens_are_the_prompt_the_model_saw(con, small_warehouse):
    lb, tok = small_warehouse["lb"], small_warehouse["loaded"].tokenizer
    sample = next(iter(read_task(lb, "qasper", 1)))
    prompt = build_prompt(tok, lb.prompts["qasper"], sample, 512)
    rows = q(
        con, "SELECT token_id, token_text, segment FROM tokens WHERE sample_id=? ORDER BY position", sample.sample_id
    )
    assert [r[0] for r in rows] == prompt.input_ids.tolist()
    assert [r[2] for r in rows] == prompt.segments
    s = q(
        con,
        "SELECT context_start, context_end, question_start, question_end, truncated, n_tokens_original "
        "FROM samples WHERE sample_id=?",
        sample.sample_id,
    )[0]
    assert s[4] is True and s[5] > 512
    seg = [r[2] for r in rows]
    assert set(seg[s[0] : s[1]]) == {"context"} and set(seg[s[2] : s[3]]) == {"question"}


def test_attention_received_is_a_distribution(con):
    rows = q(
        con,
        "SELECT sample_id, layer, kv_head, sum(attn_received), "
        "sum(attn_received_context) FILTER (WHERE attn_received_context IS NOT NULL) "
        "FROM token_stats GROUP BY ALL",
    )
    assert len(rows) == 3 * 30 * 3
    for *_, total, total_ctx in rows:
        assert total == pytest.approx(1.0, abs=2e-3)
        assert total_ctx == pytest.approx(1.0, abs=2e-3)


def test_raw_kv_agrees_with_token_stats(con):
    rows = q(
        con,
        "SELECT k.key, t.key_norm, k.value, t.value_norm FROM kv k JOIN token_stats t "
        "USING (run_id, task, sample_id, layer, kv_head, position) USING SAMPLE 200 ROWS",
    )
    for key, key_norm, value, value_norm in rows:
        assert np.linalg.norm(np.asarray(key, np.float64)) == pytest.approx(key_norm, rel=3e-3)
        assert np.linalg.norm(np.asarray(value, np.float64)) == pytest.approx(value_norm, rel=3e-3)


def test_readme_queries_run(con):
    by_decile = q(
        con,
        """
        SELECT layer, pos_bucket(position, s.n_tokens, 10) AS decile, avg(key_norm) AS key_norm
        FROM token_stats JOIN samples s USING (run_id, task, sample_id)
        GROUP BY ALL ORDER BY layer, decile""",
    )
    assert len(by_decile) == 30 * 10
    lowest = q(con, "SELECT token_text, key_norm FROM token_summary WHERE task = 'qasper' ORDER BY key_norm LIMIT 10")
    assert len(lowest) == 10 and lowest[0][1] <= lowest[-1][1]
    cats = dict(q(con, "SELECT category, count(*) FROM tokens GROUP BY ALL"))
    assert {"word", "stopword", "punctuation", "cjk", "special"} <= set(cats)


def test_parquet_is_partitioned_and_compressed(small_warehouse):
    store = small_warehouse["store"]
    files = store.files("token_stats")
    assert len(files) == 3
    for f in files:
        parts = f.relative_to(store.root / "token_stats").parts
        assert parts[0].startswith("model=SmolLM2-135M-Instruct") and parts[1].startswith("task=")
        assert parts[2] == f"run_id={small_warehouse['run_id']}"
        assert pq.ParquetFile(f).metadata.row_group(0).column(0).compression == "ZSTD"


def test_prompt_longer_than_the_model_maximum_is_truncated_and_recorded(tmp_path, smol):
    """A model with 200 positions: max_tokens=100000 is capped, the sample truncated and marked."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    tiny = LlamaForCausalLM(tiny_llama_config(vocab_size=49152, max_position_embeddings=200)).eval()
    loaded = Loaded(tiny, smol.tokenizer, "tiny", "test:tiny", "r0", "cpu", "float32", "sdpa")
    lb = open_longbench(FIXTURE_LONGBENCH)
    sample = next(iter(read_task(lb, "lcc", 1)))
    max_tok = effective_max_tokens(loaded, 100_000)
    assert max_tok == 200
    store = Store(tmp_path / "data")
    cfg = StatsConfig()
    process_sample(store, loaded, lb, sample, make_run_id(loaded, max_tok, cfg), max_tok, cfg)
    con = catalog.connect(catalog.build(store, tmp_path / "kv.duckdb"))
    assert q(con, "SELECT n_tokens, truncated, n_tokens_original > 200 FROM samples") == [(200, True, True)]


def test_threads_extracting_together_write_what_one_writes_alone(tmp_path, small_warehouse):
    """Samples extracted by concurrent threads (prefill serialised by DEVICE_LOCK, tokenizing and writing
    overlapped) give the same rows as the one-at-a-time extraction of the session warehouse."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa

    from extract.run import plan, process_sample
    from extract.sample import StatsConfig

    w = small_warehouse
    store = Store(tmp_path / "data")
    work = plan(w["lb"], ["qasper", "multifieldqa_zh", "trec"], 1).samples
    cfg = StatsConfig(raw_kv=True, raw_kv_positions=64)
    with ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(lambda s: process_sample(store, w["loaded"], w["lb"], s, w["run_id"], 512, cfg), work))
    assert [o.status for o in outcomes] == ["extracted"] * 3
    for table in ("tokens", "token_stats", "layer_stats", "kv"):
        got, want = (pa.concat_tables([pq.read_table(f) for f in s.files(table)]) for s in (store, w["store"]))
        keys = ("task", "sample_id", "layer", "kv_head", "position")
        order = [(c, "ascending") for c in keys if c in got.schema.names]
        got, want = got.sort_by(order), want.sort_by(order)
        assert got.num_rows == want.num_rows > 0 and got.equals(want), table
