"""Where data and models come from: the hub path (mocked: the hub is unreachable here) and local paths (real)."""

import io
import zipfile

import pytest
import torch

from extract import longbench
from extract import model as models
from extract.longbench import default_data_dir, download_longbench, open_longbench
from tests.conftest import FIXTURE_LONGBENCH, tiny_llama_config


def test_download_builds_the_official_layout(tmp_path, monkeypatch):
    """MOCKED: hf_hub_download and the GitHub fetch are replaced (no hub from this machine);
    the unzip and layout code is real and the result must open like the real LongBench."""
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in (FIXTURE_LONGBENCH / "data").glob("*.jsonl"):
            zf.write(f, f"data/{f.name}")
    asked = []

    def fake_hub(repo_id, filename, repo_type, cache_dir):
        asked.append((repo_id, filename, repo_type))
        return str(archive)

    def fake_urlopen(url, timeout):
        name = url.rsplit("/", 1)[-1]
        asked.append(url)
        return io.BytesIO((FIXTURE_LONGBENCH / "config" / name).read_bytes())

    import urllib.request

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hub)
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    dest = download_longbench(tmp_path / "lb")
    assert asked[0] == ("THUDM/LongBench", "data.zip", "dataset")
    assert all("THUDM/LongBench" in u for u in asked[1:]) and len(asked) == 3
    assert open_longbench(dest).tasks == open_longbench(FIXTURE_LONGBENCH).tasks


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("KVW_LONGBENCH", str(tmp_path / "mine"))
    assert default_data_dir() == tmp_path / "mine"
    monkeypatch.delenv("KVW_LONGBENCH")
    monkeypatch.setattr(longbench, "SHARED_SAMPLE", tmp_path / "absent")
    monkeypatch.setenv("KVW_CACHE", str(tmp_path / "cache"))
    assert default_data_dir() == tmp_path / "cache" / "longbench"


def test_any_local_model_path_loads(tmp_path, smol):
    """The non-default path (what a hub id resolves to) with a real saved model and tokenizer."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    path = tmp_path / "my-tiny-llama"
    LlamaForCausalLM(tiny_llama_config(vocab_size=49152)).save_pretrained(path)
    smol.tokenizer.save_pretrained(path)
    loaded = models.load(str(path), "cpu", "float32", "sdpa")
    assert loaded.name.startswith("my-tiny-llama-") and loaded.source == str(path.resolve())
    assert loaded.model.config.num_hidden_layers == 2 and loaded.attn_impl == "sdpa"
    assert loaded.revision.startswith("sha256-") and [x.attention for x in loaded.layers] == ["full", "full"]
    assert models.load(str(path), "cpu", "float32").attn_impl == "sdpa"  # auto: transformers' default for Llama


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(models.ModelError, match="cannot load model"):
        models.load(str(tmp_path / "no-such-model"), "cpu", "float32")


def test_model_slugs_are_path_safe():
    assert models.model_slug("meta-llama/Meta-Llama-3-8B-Instruct") == "Meta-Llama-3-8B-Instruct"
    assert models.model_slug(models.DEFAULT_MODEL) == "SmolLM2-135M-Instruct"
    # a local folder: its name plus a hash of its absolute path, so two folders of one name never share a partition
    slug = models.model_slug("/models/x y/")
    assert slug.startswith("x-y-") and len(slug) == len("x-y-") + 6
    assert models.model_slug("/elsewhere/x y") != slug and models.model_slug("/models/x y") == slug


def test_local_revision_covers_the_weights_and_is_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv("KVW_CACHE", str(tmp_path / "cache"))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"a" * 1000)
    (tmp_path / "m" / ".git").mkdir()
    (tmp_path / "m" / ".git" / "HEAD").write_text("x")
    first = models.local_revision(tmp_path / "m")
    assert first == models.local_revision(tmp_path / "m")  # stable
    known = (tmp_path / "cache" / "content-hashes.json").read_text()
    assert str(tmp_path / "m" / "model.safetensors") in known  # recorded: once 2 s old, it is not read again
    (tmp_path / "m" / ".git" / "HEAD").write_text("y")
    assert models.local_revision(tmp_path / "m") == first  # hidden files do not count
    (tmp_path / "m" / "model.safetensors").write_bytes(b"b" * 1000)  # same size, other bytes
    assert models.local_revision(tmp_path / "m") != first


def test_auto_choices_on_this_machine():
    dev = models.pick_device("auto")
    assert dev == ("cuda" if torch.cuda.is_available() else "cpu")
    if dev == "cpu":
        assert models.pick_dtype(dev) == torch.float32 and models.pick_attn(dev) is None  # the model's default
    with pytest.raises(models.ModelError, match="dtype 'float8'"):
        models.pick_dtype("cpu", "float8")


def test_without_any_data_dir_it_is_fetched_and_an_offline_failure_is_explained(tmp_path, monkeypatch):
    """MOCKED fetch (no hub here): the default path downloads into the cache; a failed fetch says what to do."""
    monkeypatch.delenv("KVW_LONGBENCH", raising=False)
    monkeypatch.setattr(longbench, "SHARED_SAMPLE", tmp_path / "absent")
    monkeypatch.setenv("KVW_CACHE", str(tmp_path / "cache"))
    calls = []

    def fetched(dest):
        calls.append(dest)
        import shutil

        shutil.copytree(FIXTURE_LONGBENCH, dest)
        return dest

    monkeypatch.setattr(longbench, "download_longbench", fetched)
    assert open_longbench().root == tmp_path / "cache" / "longbench" and len(calls) == 1
    assert open_longbench().tasks and len(calls) == 1  # cached: fetched once

    def offline(dest):
        raise OSError("Network is unreachable")

    monkeypatch.setenv("KVW_CACHE", str(tmp_path / "cache2"))
    monkeypatch.setattr(longbench, "download_longbench", offline)
    with pytest.raises(longbench.LongBenchError, match=r"fetching it failed.*Network is unreachable.*data\.zip"):
        open_longbench()
