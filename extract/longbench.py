"""LongBench v1 in its official layout: data/<task>.jsonl + config/dataset2prompt.json + dataset2maxlen.json.

Templates and max lengths are read from the data directory at run time, never
copied into the project. A bad record becomes a `Skip` with its file, line and
reason; the records around it are still read.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from warehouse import config
from warehouse.store import check_partition_value

HUB_REPO = "THUDM/LongBench"  # dataset repo holding data.zip
CONFIG_URL = "https://raw.githubusercontent.com/THUDM/LongBench/main/LongBench/config/{name}"
SHARED_SAMPLE = config.REPO.parent / "shared" / "longbench"

HOW_TO_GET = (
    "Get LongBench v1: download data.zip from https://huggingface.co/datasets/THUDM/LongBench "
    "(resolve/main/data.zip), unzip it so that <dir>/data/<task>.jsonl exists, and copy "
    "LongBench's config/dataset2prompt.json and config/dataset2maxlen.json "
    "(github.com/THUDM/LongBench, LongBench/config/) to <dir>/config/. Then pass data_dir=<dir> "
    "or set KVW_LONGBENCH=<dir>; `kvw download-longbench <dir>` does all of this when the hub "
    "is reachable."
)


class LongBenchError(ValueError):
    """The data directory or a task name is unusable; the message says how to fix it."""


# What extract/prompts.fill_template fills; any other placeholder would stay in the prompt as literal text.
PLACEHOLDERS = ("context", "input")
# LongBench's tasks whose templates carry the question ({input}); the others (gov_report, multi_news, vcsum,
# passage_count, lcc) have none. A task of one's own needs only {context}.
QUESTION_TASKS = frozenset({
    "narrativeqa", "qasper", "multifieldqa_en", "multifieldqa_zh", "hotpotqa", "2wikimqa", "musique", "dureader",
    "qmsum", "trec", "triviaqa", "samsum", "lsht", "passage_retrieval_en", "passage_retrieval_zh", "repobench-p",
})  # fmt: skip


def check_templates(prompts: dict, path: Path) -> None:
    """Every template fills the sample's context (and question where LongBench has one) and nothing else:
    without {context} a prompt silently has no context, and an unknown placeholder is sent as literal text."""
    if not isinstance(prompts, dict):
        raise LongBenchError(f"{path}: expected an object of task -> template, got {type(prompts).__name__}")
    for task, template in prompts.items():
        where = f"{path}: task {task!r}"
        if not isinstance(template, str):
            raise LongBenchError(f"{where}: the template is not a string but {type(template).__name__}")
        try:  # LongBench fills templates with str.format: read them the same way
            fields = [(f, c, spec) for _, f, spec, c in string.Formatter().parse(template) if f is not None]
        except ValueError as err:
            raise LongBenchError(f"{where}: not a valid template ({err}); write placeholders as {{context}} "
                                 "and {input}") from err  # fmt: skip
        for name, conversion, spec in fields:
            if name not in PLACEHOLDERS or conversion or spec:
                shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
                raise LongBenchError(
                    f"{where}: unknown placeholder {shown} (only {{context}} and {{input}} are filled; it would "
                    "stay in the prompt as literal text)"
                )
        names = {name for name, _, _ in fields}
        if "context" not in names:
            raise LongBenchError(
                f"{where}: the template has no {{context}} placeholder (prompts would have no context)"
            )
        if task in QUESTION_TASKS and "input" not in names:
            raise LongBenchError(
                f"{where}: the template has no {{input}} placeholder, which LongBench's {task} template has "
                "(prompts would have no question)"
            )


@dataclass(frozen=True)
class Sample:
    task: str
    sample_id: str
    input: str
    context: str
    answers: list[str]
    all_classes: list[str] | None
    language: str
    length: int | None
    source: str  # file:line
    source_dir: str = ""  # the LongBench folder (absolute): with source, where exactly the record came from
    source_sha256: str = ""  # of the record's bytes: proves a later read found the same record

    @property
    def source_file(self) -> str:
        return self.source.rpartition(":")[0]

    @property
    def source_line(self) -> int | None:
        line = self.source.rpartition(":")[2]
        return int(line) if line.isdigit() else None


@dataclass(frozen=True)
class Skip:
    task: str
    sample_id: str  # "" when the record could not be read far enough to know it
    source: str
    reason: str
    source_dir: str = ""


@dataclass(frozen=True)
class LongBench:
    root: Path
    prompts: dict[str, str] = field(repr=False)
    maxlens: dict[str, int] = field(repr=False)
    needle_grid: object = field(default=None, repr=False)  # extract.needle.Grid task `needle` yields; None: default

    @property
    def tasks(self) -> list[str]:
        """Tasks that have both a data file and a prompt template."""
        have = {p.stem for p in (self.root / "data").glob("*.jsonl")}
        return sorted(have & set(self.prompts))

    def check_tasks(self, tasks: list[str] | None) -> list[str]:
        """The tasks to read: every known one for None; an empty list or name (`tasks=""`) is a mistake."""
        known = self.tasks
        if tasks is None:
            return known
        if not tasks or any(not str(t).strip() for t in tasks):
            raise LongBenchError(
                f"empty task name in tasks={list(tasks)!r}: name tasks separated by commas (e.g. qasper,trec), "
                "or leave tasks unset for every task"
            )
        unknown = [t for t in tasks if t not in known and t != "needle"]  # needle: built in (extract/needle.py)
        if unknown:
            raise LongBenchError(
                f"unknown task(s) {unknown} in {self.root}; known tasks: {', '.join(known)} (and the built-in needle)"
            )
        return list(dict.fromkeys(tasks))

    def task_warnings(self, task: str) -> list[str]:
        """What is odd about a task without stopping it: a data file with no records, no LongBench answer
        length (dataset2maxlen.json), which evaluate needs to decode its samples."""
        out = []
        if task == "needle":  # generated, no data file
            return out
        with (self.root / "data" / f"{task}.jsonl").open("rb") as fh:
            if not any(line.strip() for line in fh):
                out.append(f"{task}.jsonl has no records: task {task} gives no samples")
        if task not in self.maxlens:
            out.append(
                f"task {task} is not in {self.root / 'config' / 'dataset2maxlen.json'}: its samples get no "
                "max_new_tokens, so evaluate cannot decode them; add the task's answer length there"
            )
        return out


def default_data_dir() -> Path:
    """KVW_LONGBENCH, else the shared sample beside the checkout, else the download cache."""
    env = os.environ.get("KVW_LONGBENCH")
    if env:
        return Path(env).expanduser().resolve()
    if SHARED_SAMPLE.exists():
        return SHARED_SAMPLE.resolve()
    return config.cache_dir() / "longbench"


def open_longbench(data_dir: str | os.PathLike | None = None) -> LongBench:
    """Open a LongBench folder; with no folder given or found, fetch it into the cache (users online)."""
    root = Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()
    if data_dir is None and root == config.cache_dir() / "longbench" and not root.is_dir():
        try:
            download_longbench(root)
        except Exception as err:  # offline, hub refused, ...: say how to get it by hand
            raise LongBenchError(
                f"no LongBench data directory, and fetching it failed ({err!r}). {HOW_TO_GET}"
            ) from err
    if not root.is_dir():
        raise LongBenchError(f"LongBench data directory {root} does not exist. {HOW_TO_GET}")
    cfg = {}
    for name in ("dataset2prompt.json", "dataset2maxlen.json"):
        path = root / "config" / name
        if not path.is_file():
            raise LongBenchError(f"{path} is missing. {HOW_TO_GET}")
        try:
            cfg[name] = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise LongBenchError(f"{path} is not valid JSON: {err}") from err
    if not (root / "data").is_dir():
        raise LongBenchError(f"{root / 'data'} is missing. {HOW_TO_GET}")
    check_templates(cfg["dataset2prompt.json"], root / "config" / "dataset2prompt.json")
    from extract import needle  # the built-in task's template and answer length; it has no data file

    prompts = {**cfg["dataset2prompt.json"], needle.TASK: needle.TEMPLATE}
    return LongBench(root, prompts, {**cfg["dataset2maxlen.json"], needle.TASK: needle.MAX_NEW_TOKENS})


def _parse(task: str, source: str, raw: bytes) -> Sample | Skip:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return Skip(task, "", source, f"not UTF-8: byte 0x{raw[err.start]:02x} at offset {err.start}")
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as err:
        return Skip(task, "", source, f"malformed JSON: {err.msg} at column {err.colno}")
    if not isinstance(rec, dict):
        return Skip(task, "", source, f"malformed record: expected a JSON object, got {type(rec).__name__}")
    raw_id = rec.get("_id")
    sample_id = raw_id if isinstance(raw_id, str) else ""
    missing = [k for k in ("_id", "context", "input", "answers") if k not in rec]
    if missing:
        return Skip(task, sample_id, source, f"missing field(s) {missing}")
    if not isinstance(raw_id, str) or not raw_id.strip():
        shown = (
            "null"
            if raw_id is None
            else repr(raw_id)
            if isinstance(raw_id, str)
            else f"{type(raw_id).__name__} {raw_id!r}"
        )
        return Skip(task, "", source, f"_id must be a non-empty string, got {shown}")
    try:  # the sample id names the sample's files: refuse now what the store would refuse after the prefill
        check_partition_value("sample_id", raw_id)
    except ValueError as err:
        return Skip(task, "", source, f"_id {raw_id!r} cannot name a file ({err})")
    if not isinstance(rec["context"], str) or not rec["context"].strip():
        return Skip(task, sample_id, source, "empty context")
    answers, why = _answers(rec["answers"])
    if why:
        return Skip(task, sample_id, source, why)
    classes = rec.get("all_classes")
    return Sample(
        task=task,
        sample_id=sample_id,
        input=str(rec["input"] or ""),
        context=rec["context"],
        answers=answers,
        all_classes=[str(c) for c in classes] if isinstance(classes, list) else None,
        language=str(rec.get("language") or ""),
        length=int(rec["length"]) if isinstance(rec.get("length"), int | float) else None,
        source=source,
        source_sha256=record_sha256(raw),
    )


def record_sha256(raw: bytes) -> str:
    """The content hash `samples.source_sha256` records: of the line's bytes without its line ending."""
    return hashlib.sha256(raw.rstrip(b"\r\n")).hexdigest()


def _answers(value) -> tuple[list[str], str]:
    """The reference answers, or why there are none to score against: a null, empty or non-text answer would be
    stored as text ('None') or leave evaluate nothing to compare, so such a record is skipped, not guessed at."""
    if value is None:
        return [], "answers is null (a sample needs at least one reference answer)"
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return [], f"answers must be a list of strings, got {type(value).__name__}"
    if not value:
        return [], "answers is empty (a sample needs at least one reference answer)"
    for i, a in enumerate(value):
        if not isinstance(a, str):
            return [], f"answers[{i}] is {'null' if a is None else type(a).__name__}; answers must be strings"
    return value, ""


def read_task(lb: LongBench, task: str, limit: int | None = None) -> Iterator[Sample | Skip]:
    """Yield up to `limit` good samples of a task, and a Skip for every bad record met on the way."""
    if task == "needle":  # generated from lb.needle_grid (extract/needle.py)
        from extract import needle

        yield from needle.read(lb, limit)
        return
    path = lb.root / "data" / f"{task}.jsonl"
    good = 0
    seen: set[str] = set()
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if limit is not None and good >= limit:
                return
            if not raw.strip():
                continue
            item = replace(_parse(task, f"{path.name}:{lineno}", raw.rstrip(b"\r\n")), source_dir=str(lb.root))
            if isinstance(item, Sample):
                if item.sample_id in seen:
                    item = Skip(task, item.sample_id, item.source, "duplicate _id in the task file", item.source_dir)
                else:
                    seen.add(item.sample_id)
                    good += 1
            yield item


def download_longbench(dest: str | os.PathLike) -> Path:
    """Fetch data.zip from the hub and the two config files from GitHub into `dest`."""
    from urllib.request import urlopen

    from huggingface_hub import hf_hub_download

    dest = Path(dest).expanduser().resolve()
    (dest / "config").mkdir(parents=True, exist_ok=True)
    archive = hf_hub_download(HUB_REPO, "data.zip", repo_type="dataset", cache_dir=config.cache_dir() / "hub")
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(dest)
    for name in ("dataset2prompt.json", "dataset2maxlen.json"):
        with urlopen(CONFIG_URL.format(name=name), timeout=60) as resp:  # noqa: S310 (fixed https URL)
            (dest / "config" / name).write_bytes(resp.read())
    return dest
