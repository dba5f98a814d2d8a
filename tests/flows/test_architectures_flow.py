"""Your own model, end to end: each supported architecture, saved as a local folder with the default model's
tokenizer, goes through the real `extract` and `evaluate` flows (in this process, against a real Prefect
server on loopback): 2 tasks x 1 sample at 512 tokens, then knorm at 25% and a keep-all control, both settings.
A hybrid is refused before any sample; weights re-saved into the same folder start a new run."""

import duckdb
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from extract import model as models
from tests.architectures import EAGER_ONLY, SUPPORTED, save
from tests.conftest import FIXTURE_LONGBENCH

pytestmark = [pytest.mark.prefect]
KEEP_ALL = 0.9999  # a budget that keeps every position: the control that must equal the full cache
EVICTED = {
    "mistral": 0,
    "gemma2": 2,
    "gemma3": 1,
    "gptoss": 2,
}  # layers a policy evicts (the others slide past their window)


@pytest.fixture(scope="module")
def api(prefect_server):
    from prefect.logging.handlers import APILogWorker

    with temporary_settings(updates={PREFECT_API_URL: prefect_server["PREFECT_API_URL"]}):
        yield
        APILogWorker.drain_all(timeout=10)  # this process's flow logs reach the server before the session stops it


def _extract(folder, out, **kw):
    from flows.extract_flow import extract

    params = dict(model=folder, data_dir=str(FIXTURE_LONGBENCH), tasks=["qasper", "trec"], limit=1,
                  max_tokens=512, output=str(out), device="cpu", dtype="float32")  # fmt: skip
    return extract(**{**params, **kw})


@pytest.mark.parametrize("name", SUPPORTED)
def test_extract_and_evaluate(name, api, smol, tmp_path):
    from flows.evaluate_flow import evaluate

    folder = save(name, tmp_path / name, smol.tokenizer)
    result = _extract(folder, tmp_path / "out")
    assert result["samples"] == 2, result
    done = evaluate(policies=["knorm", {"name": "knorm", "budget": KEEP_ALL}], budgets=[0.25], setting="both",
                    run_id=result["run_id"], output=str(tmp_path / "out"), max_new_tokens=8, device="cpu")  # fmt: skip
    assert done["evaluated"] == 2 * 2 * 2, done
    con = duckdb.connect(done["db"], read_only=True)
    L, H = 4, 1 if name == "gemma3" else 2
    stats = con.execute(
        "SELECT s.n_tokens, count(*) FROM token_stats t JOIN samples s USING (run_id, task, sample_id) "
        "GROUP BY t.task, t.sample_id, s.n_tokens"
    ).fetchall()
    assert len(stats) == 2 and all(c == L * H * n for n, c in stats)  # layers x kv_heads x positions
    layers = con.execute("SELECT count(*), count(sliding_window) FROM layers").fetchone()
    assert layers == (L, {"mistral": 4, "gemma2": 2, "gemma3": 3, "gptoss": 2}.get(name, 0))
    rows = con.execute(
        "SELECT budget, setting, kl_continuation, prediction = prediction_full, evicted_layers, kept_tokens, "
        "n_tokens, kv_bytes_kept <= kv_bytes_full FROM quality_samples ORDER BY budget, setting, task"
    ).fetchall()
    assert len(rows) == 8 and all(r[7] for r in rows)
    for budget, setting, kl, same, evicted, kept, n, _ in rows:
        assert evicted == EVICTED.get(name, L), (setting, budget)
        if budget == KEEP_ALL:
            assert same and kl == 0.0, (setting, kl)  # keep-all: the full cache's own answer
        elif evicted and setting == "question_aware":
            assert kept == round(0.25 * n)
    assert con.execute("SELECT attn_impl FROM runs").fetchone()[0] == ("eager" if name in EAGER_ONLY else "sdpa")


def test_a_hybrid_is_refused_before_any_sample(api, smol, tmp_path):
    folder = save("lfm2", tmp_path / "lfm2", smol.tokenizer)
    with pytest.raises(models.ArchitectureError, match="Lfm2ForCausalLM.*LinearAttentionLayer.*hybrid models"):
        _extract(folder, tmp_path / "out")
    assert not list((tmp_path / "out").rglob("*.parquet"))  # nothing written, not even a skip record


def test_resaved_weights_start_a_new_run(api, smol, tmp_path):
    """Saving other weights into the same folder used to reuse the run id, skip the sample as done and keep
    the old statistics."""
    folder = save("llama", tmp_path / "final", smol.tokenizer, seed=0)
    first = _extract(folder, tmp_path / "out", tasks=["trec"])
    save("llama", tmp_path / "final", smol.tokenizer, seed=1)
    second = _extract(folder, tmp_path / "out", tasks=["trec"])
    assert first["run_id"] != second["run_id"]
    con = duckdb.connect(second["db"], read_only=True)
    revisions = con.execute("SELECT model_revision, samples FROM runs ORDER BY started_at").fetchall()
    assert len({r for r, _ in revisions}) == 2 and [n for _, n in revisions] == [1, 1]
    norms = con.execute("SELECT run_id, avg(key_norm) FROM token_stats GROUP BY run_id").fetchall()
    assert len(norms) == 2 and norms[0][1] != pytest.approx(norms[1][1])
    con.close()
    # the first run's statistics belong to the old weights: evaluating it with the new ones is refused
    from flows.evaluate_flow import evaluate
    from transform.evaluate_run import EvaluationError

    with pytest.raises(EvaluationError, match=r"at revision sha256-.*its files changed"):
        evaluate(policies=["knorm"], budgets=[0.5], setting="question_aware", run_id=first["run_id"],
                 output=str(tmp_path / "out"), max_new_tokens=2, device="cpu")  # fmt: skip
    # another folder of the same name is another model partition
    other = save("llama", tmp_path / "elsewhere" / "final", smol.tokenizer, seed=0)
    assert models.model_slug(other) != models.model_slug(folder)
    assert models.model_slug(other).startswith("final-") and models.model_slug(folder).startswith("final-")
