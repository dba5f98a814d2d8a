"""Data that cannot rot silently: every page the store writes carries a CRC-32 checksum, reads through the store
verify it, `kvw verify` names each damaged, mistyped or short file, and a done marker that is not a Parquet
file is not a done sample (the rerun redoes it)."""

import random
import shutil
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from extract import model as models
from extract.longbench import open_longbench
from extract.run import is_done, make_run_id, plan, process_sample, write_run
from extract.sample import StatsConfig
from flows.cli import main
from tests.architectures import save
from tests.conftest import FIXTURE_LONGBENCH
from warehouse.store import DamagedFileError, Store
from warehouse.verify import verify

MAX_TOKENS = 256


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, smol):
    """A real extraction (a tiny random Llama with the default tokenizer) of 2 samples: a pristine warehouse."""
    base = tmp_path_factory.mktemp("verify")
    loaded = models.load(save("llama", base / "model", smol.tokenizer), "cpu", "float32")
    store, lb, cfg = Store(base / "data"), open_longbench(FIXTURE_LONGBENCH), StatsConfig()
    run_id = make_run_id(loaded, MAX_TOKENS, cfg)
    samples = plan(lb, ["trec", "qasper"], 1).samples
    for sample in samples:
        process_sample(store, loaded, lb, sample, run_id, MAX_TOKENS, cfg)
    write_run(store, loaded, run_id, {"max_tokens": MAX_TOKENS}, datetime.now(UTC), 0.0)
    return {"root": base / "data", "loaded": loaded, "lb": lb, "cfg": cfg, "run_id": run_id, "samples": samples}


@pytest.fixture
def wh(tiny_run, tmp_path):
    shutil.copytree(tiny_run["root"], tmp_path / "data")
    return Store(tmp_path / "data")


def page_ranges(path):
    """Byte ranges of every column chunk's pages (where a flipped bit changes data, not the footer)."""
    md = pq.ParquetFile(path).metadata
    out = []
    for g in range(md.num_row_groups):
        for c in range(md.num_columns):
            col = md.row_group(g).column(c)
            start = col.dictionary_page_offset or col.data_page_offset
            out.append((start, start + col.total_compressed_size))
    return out


def test_a_clean_warehouse_verifies(wh, capsys):
    report = verify(wh)
    assert report.findings == [] and report.files >= 10 and report.rows > 0
    assert main(["verify", "--data", str(wh.root)]) == 0
    assert "no bad file" in capsys.readouterr().out


def test_every_bit_flip_that_changes_data_is_named(wh, capsys):
    """17 of 40 flips used to change aggregates with no error (no checksums were written)."""
    path = wh.files("token_stats")[0]
    original, reference = path.read_bytes(), pq.read_table(path)
    rng, caught = random.Random(0), 0
    for _ in range(40):
        start, stop = rng.choice(page_ranges(path))
        data = bytearray(original)
        data[rng.randrange(start, stop)] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        if verify(wh, ["token_stats"]).damaged:
            caught += 1
            with pytest.raises(DamagedFileError, match=str(path)):
                wh.read_file(path)
        else:  # a flip the checksum does not cover (a page header's statistics) left the data as it was
            assert pq.read_table(path).equals(reference)
    path.write_bytes(original)
    assert caught >= 30
    data = bytearray(original)
    start, stop = page_ranges(path)[-1]
    data[(start + stop) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert main(["verify", "--data", str(wh.root)]) == 1
    out = capsys.readouterr().out
    assert f"BAD   {path}: unreadable" in out and "1 bad file(s)" in out


def test_wrong_types_foreign_columns_and_short_files_are_named(wh, tiny_run):
    ts = wh.files("token_stats")[0]
    t = pq.read_table(ts)
    pq.write_table(t.set_column(t.schema.get_field_index("key_norm"), "key_norm", t["key_norm"].cast(pa.float64())), ts)
    ls = wh.files("layer_stats")[0]
    pq.write_table(pq.read_table(ls).append_column("extra", pa.array([1] * pq.read_metadata(ls).num_rows)), ls)
    found = {f.table: f.problem for f in verify(wh).damaged}
    assert found["token_stats"] == "wrong types: key_norm is double, declared halffloat"
    assert found["layer_stats"] == "columns not in the declared layer_stats schema: ['extra']"
    # a file that reads but lost rows (a sample written twice over, a truncated rewrite) is named by its counts
    clean = Store(tiny_run["root"])
    for name in ("token_stats", "layer_stats"):
        shutil.copy(clean.files(name)[0], wh.files(name)[0])
    pq.write_table(pq.read_table(ts).slice(0, 100), ts)
    (finding,) = verify(wh).damaged
    assert finding.path == str(ts) and finding.problem.startswith("100 rows, expected 8 (layer, KV head) x ")


def test_a_zero_byte_done_marker_is_not_done_and_the_rerun_heals_it(wh, tiny_run):
    sample = tiny_run["samples"][0]
    (marker,) = wh.files("samples", task=sample.task)
    marker.write_bytes(b"")
    loaded = tiny_run["loaded"]
    assert not is_done(wh, loaded.name, tiny_run["run_id"], sample)
    assert any(f.path == str(marker) and f.problem.startswith("unreadable") for f in verify(wh).damaged)
    out = process_sample(wh, loaded, tiny_run["lb"], sample, tiny_run["run_id"], MAX_TOKENS, tiny_run["cfg"])
    assert out.status == "extracted" and marker.stat().st_size > 12 and verify(wh).findings == []


def test_a_sample_without_its_marker_is_a_note_not_damage(wh):
    wh.files("samples")[0].unlink()
    report = verify(wh)
    assert report.damaged == [] and {f.table for f in report.findings} == {"tokens", "token_stats", "layer_stats"}
    assert all("no samples marker" in f.problem for f in report.findings)


def test_sql_and_catalog_over_a_damaged_file_say_what_to_run(wh, tmp_path, capsys):
    wh.files("samples")[0].write_bytes(b"not parquet at all")
    assert main(["catalog", "--data", str(wh.root), "--db", str(tmp_path / "kv.duckdb")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kvw catalog:") and "kvw verify" in err and "Traceback" not in err
    assert main(["sql", "--data", str(wh.root), "SELECT count(*) FROM samples"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kvw sql:") and "kvw verify" in err


def test_a_copied_warehouse_reads_its_own_files(wh, tmp_path, capsys):
    """A copied warehouse's kv.duckdb used to name the original's files: `kvw sql --db copy/kv.duckdb` answered
    with the original's numbers."""
    from warehouse import catalog

    catalog.build(wh, tmp_path / "kv.duckdb")
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copytree(wh.root, copy / "data")
    shutil.copy(tmp_path / "kv.duckdb", copy / "kv.duckdb")
    for name in ("samples", "tokens", "token_stats", "layer_stats"):
        Store(copy / "data").files(name, task="trec")[0].unlink()  # the copy holds one sample, the original two
    assert main(["sql", "--csv", "--db", str(copy / "kv.duckdb"), "SELECT count(*) AS n FROM samples"]) == 0
    assert capsys.readouterr().out.splitlines() == ["n", "1"]
    assert main(["sql", "--csv", "--db", str(tmp_path / "kv.duckdb"), "SELECT count(*) AS n FROM samples"]) == 0
    assert capsys.readouterr().out.splitlines() == ["n", "2"]  # the original is untouched
