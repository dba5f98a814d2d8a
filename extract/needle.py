"""Needle in a haystack, built in: a synthetic task `needle` generated here from a fixed seed, no download.

Three kinds, as the field uses them: `passkey` (a 5-digit pass key in repetitive filler, Mohtashami & Jaggi
2023), `single` (one "special magic number" sentence in natural prose, RULER's niah_single) and `multi` (the
asked-for needle among distractor needles with other keys, RULER's multikey). The prose haystack is English
text of LongBench's own contexts (HAYSTACK_TASKS, in file order), so nothing is fetched.

A sample is a pure function of its id, `needle-<kind>-L<length>-D<depth>-s<seed>`: evaluate re-creates it
from the id (and the same LongBench folder) exactly as it re-reads a LongBench record. `length` is the
context length asked for in tokens, approximated from characters (CHARS_PER_TOKEN, measured with the
SmolLM2 tokenizer); `samples.n_tokens` and `needles.context_tokens` hold what the model really saw.
`depth` is the share of the haystack (needles aside) that precedes the needle, in percent; the needle goes
in at the sentence boundary nearest to it, and `needles.depth_actual` records where it landed.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, fields, replace

import numpy as np
import pyarrow as pa

from extract.longbench import LongBench, LongBenchError, Sample, read_task
from warehouse import schemas

TASK = "needle"
KINDS = ("passkey", "single", "multi")
TEMPLATE = (
    "There is an important piece of information hidden inside a lot of irrelevant text. "
    "Find it and memorize it. I will quiz you about it.\n\n{context}\n\n{input}"
)
MAX_NEW_TOKENS = 32  # SmolLM2 restates the question ("The special magic number for X ... is 12345.": ~20 tokens)
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
HAYSTACK_TASKS = ("gov_report", "narrativeqa", "multi_news", "qasper")  # English prose; the first present lead
CHARS_PER_TOKEN = {"passkey": 3.75, "single": 5.3, "multi": 5.3}  # SmolLM2 tokenizer: filler 3.75, gov_report 5.3
DISTRACTORS = 3  # needles with other keys beside the asked-for one (kind multi)
KEYS = (
    "apple", "river", "lantern", "falcon", "marble", "violet", "canyon", "harbor", "meadow", "copper",
    "saffron", "glacier", "orchid", "thunder", "pebble", "walnut", "comet", "juniper", "tulip", "anchor",
    "beacon", "cedar", "dolphin", "ember", "fjord", "garnet", "hazel", "island", "jasmine", "kettle",
    "lagoon", "maple", "nectar", "oyster", "parrot", "quartz", "raven", "summit", "timber", "velvet",
)  # fmt: skip
_ID = re.compile(r"needle-(?P<kind>[a-z]+)-L(?P<length>\d+)-D(?P<depth>\d+)-s(?P<seed>\d+)")
_BOUNDARY = re.compile(r"[.!?][\"')\]]?\s+")  # a sentence ends: the next one starts after the whitespace


class NeedleError(LongBenchError):
    """A needle sample or grid cannot be made as asked; the message names the problem."""


@dataclass(frozen=True)
class Spec:
    """One needle sample: kind, context length (tokens, approximate), depth (percent) and seed."""

    kind: str
    length: int
    depth: int
    seed: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise NeedleError(f"needle kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not 16 <= self.length <= 1_000_000:
            raise NeedleError(f"needle length {self.length} must be 16 .. 1000000 tokens")
        if not 0 <= self.depth <= 100:
            raise NeedleError(f"needle depth {self.depth} must be a percentage, 0 .. 100")
        if self.seed < 0:
            raise NeedleError(f"needle seed {self.seed} must be >= 0")

    @property
    def sample_id(self) -> str:
        return f"{TASK}-{self.kind}-L{self.length}-D{self.depth}-s{self.seed}"

    @classmethod
    def parse(cls, sample_id: str) -> Spec:
        m = _ID.fullmatch(sample_id)
        if not m:
            raise NeedleError(f"{sample_id!r} is not a needle sample id (needle-<kind>-L<length>-D<depth>-s<seed>)")
        return cls(m["kind"], int(m["length"]), int(m["depth"]), int(m["seed"]))


@dataclass(frozen=True)
class Grid:
    """The samples task `needle` yields: every kind x length x depth x seed, in that order (so `limit` takes
    the first kind's shortest lengths first)."""

    kinds: tuple[str, ...] = KINDS
    lengths: tuple[int, ...] = (128, 256, 512, 1024, 2048)
    depths: tuple[int, ...] = (0, 25, 50, 75, 100)
    seeds: tuple[int, ...] = (0,)

    def specs(self) -> list[Spec]:
        return [Spec(k, n, d, s) for k in self.kinds for n in self.lengths for d in self.depths for s in self.seeds]

    @classmethod
    def parse(cls, value: Grid | dict | str | None) -> Grid:
        """A grid from the flow parameter: None (the default), a dict or its JSON, e.g.
        {"kinds": ["passkey"], "lengths": [256, 512], "depths": [0, 50, 100], "seeds": [0]} (missing keys:
        the defaults); a list may also be a comma-separated string."""
        if value is None or isinstance(value, Grid):
            return value or cls()
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as err:
                raise NeedleError(f"needle_grid is not JSON ({err.msg}): {value!r}") from err
        if not isinstance(value, dict):
            raise NeedleError(f"needle_grid must be an object of kinds/lengths/depths/seeds, got {value!r}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise NeedleError(f"needle_grid: unknown key(s) {unknown}; known: {', '.join(known)}")
        out = {}
        for name, items in value.items():
            items = [v.strip() for v in items.split(",")] if isinstance(items, str) else items
            if not isinstance(items, list | tuple) or not items:
                raise NeedleError(f"needle_grid: {name} must be a non-empty list, got {items!r}")
            try:
                out[name] = tuple(dict.fromkeys(str(v) if name == "kinds" else int(v) for v in items))
            except (TypeError, ValueError) as err:
                raise NeedleError(f"needle_grid: {name} must be whole numbers, got {items!r}") from err
        grid = cls(**out)
        grid.specs()  # each value checked by Spec
        return grid


@dataclass(frozen=True)
class Layout:
    """A generated needle sample and where its needles went (character offsets into `context`)."""

    spec: Spec
    context: str
    question: str
    needle: str  # the answer: the asked-for value
    needle_text: str  # the asked-for needle sentence
    needle_start: int  # its character offset in the context
    depth_actual: float  # percent of the haystack (needles aside) before it
    needles: int  # needle sentences in the context, distractors included


def passkey_sentence(value: str) -> str:
    return f"The pass key is {value}. Remember it. {value} is the pass key."


def magic_sentence(key: str, value: str) -> str:
    return f"One of the special magic numbers for {key} is: {value}."


_PROSE: dict[str, tuple[str, ...]] = {}  # LongBench folder -> its haystack prose, read once per process


def _prose(lb: LongBench) -> tuple[str, ...]:
    """English contexts of the haystack tasks present in a LongBench folder, in task then file order."""
    root = str(lb.root)
    if root not in _PROSE:
        out = []
        for task in HAYSTACK_TASKS:
            if (lb.root / "data" / f"{task}.jsonl").is_file():
                out += [s.context for s in read_task(lb, task, 64) if isinstance(s, Sample) and s.language != "zh"]
        _PROSE[root] = tuple(out)
    return _PROSE[root]


def haystack(lb: LongBench, kind: str, n_chars: int, seed: int) -> str:
    """About `n_chars` of haystack, cut at a sentence end: the filler repeated (passkey), or LongBench prose
    from record `seed` (mod the records there) on (single, multi)."""
    if kind == "passkey":
        text = " ".join([FILLER] * (n_chars // len(FILLER) + 2))
    else:
        docs = _prose(lb)
        if not docs:
            raise NeedleError(
                f"needle kind {kind!r} needs English prose for its haystack: none of {', '.join(HAYSTACK_TASKS)} "
                f"has records in {lb.root / 'data'} (kind passkey needs none)"
            )
        start, parts, size = seed % len(docs), [], 0
        while size < n_chars + 2000:
            parts.append(" ".join(docs[(start + len(parts)) % len(docs)].split()))
            size += len(parts[-1]) + 1
        text = "\n".join(parts)
    ends = [m.start() + 1 for m in _BOUNDARY.finditer(text)] + [len(text)]
    return text[: min(ends, key=lambda e: (abs(e - n_chars), e))].rstrip()


def boundaries(text: str) -> list[int]:
    """Offsets where a sentence starts (0, after each sentence end and its whitespace) and the end."""
    return sorted({0, *(m.end() for m in _BOUNDARY.finditer(text)), len(text)})


def _insert(text: str, at: list[tuple[int, str]]) -> tuple[str, list[int]]:
    """Insert sentences at boundaries; their offsets in the result, in `at` order."""
    out, starts, pos = [], {}, 0
    for i, (b, sentence) in sorted(enumerate(at), key=lambda x: x[1][0]):
        out.append(text[pos:b])
        length = sum(map(len, out))
        if b == len(text):
            out.append(" " + sentence)
            starts[i] = length + 1
        else:
            out.append(sentence + " ")
            starts[i] = length
        pos = b
    out.append(text[pos:])
    return "".join(out), [starts[i] for i in range(len(at))]


def generate(lb: LongBench, spec: Spec) -> Layout:
    """The needle sample `spec` names: the same every time for the same LongBench folder."""
    rng = random.Random(spec.sample_id)  # str seeds hash with sha512: the same in every process
    hay = haystack(lb, spec.kind, round(spec.length * CHARS_PER_TOKEN[spec.kind]), spec.seed)
    spots = boundaries(hay)
    target = min(spots, key=lambda b: (abs(b - spec.depth / 100 * len(hay)), b))
    values: list[str] = []
    while len(values) < 1 + (DISTRACTORS if spec.kind == "multi" else 0):
        v = str(rng.randint(10000, 99999))
        if v not in hay and v not in values:
            values.append(v)
    if spec.kind == "passkey":
        sentences, question = [passkey_sentence(values[0])], "What is the pass key? Answer with the number only."
    else:
        keys = rng.sample(KEYS, len(values))
        sentences = [magic_sentence(k, v) for k, v in zip(keys, values, strict=True)]
        question = (
            f"What is the special magic number for {keys[0]} mentioned in the text above? Answer with the number only."
        )
    pool = [b for b in spots if b != target] or [target]
    n = len(sentences) - 1  # distractors: at distinct sentence ends, sharing them only in a haystack too short
    others = rng.sample(pool, n) if len(pool) >= n else [rng.choice(pool) for _ in range(n)]
    context, starts = _insert(hay, list(zip([target, *others], sentences, strict=True)))
    return Layout(spec, context, question, values[0], sentences[0], starts[0],
                  100.0 * target / max(len(hay), 1), len(sentences))  # fmt: skip


def to_sample(layout: Layout, source: str, root: str) -> Sample:
    """The LongBench-shaped record of a layout (`_id`, input, context, answers, length in words, ...)."""
    rec = {"_id": layout.spec.sample_id, "input": layout.question, "context": layout.context,
           "answers": [layout.needle], "length": len(layout.context.split()), "language": "en",
           "all_classes": None, "dataset": TASK}  # fmt: skip
    sample = Sample(TASK, rec["_id"], rec["input"], rec["context"], rec["answers"], None, "en", rec["length"], source)
    extra = {"source_dir": root, "source_sha256": hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()}
    have = {f.name for f in fields(Sample)}
    return replace(sample, **{k: v for k, v in extra.items() if k in have})


def attach(lb: LongBench, grid: Grid | dict | str | None) -> LongBench:
    """The LongBench folder with the needle grid that task `needle` yields (flow parameter `needle_grid`)."""
    return replace(lb, needle_grid=Grid.parse(grid))


def read(lb: LongBench, limit: int | None = None):
    """Task `needle`'s samples: the folder's grid (default Grid()) in order, source `needle:<index>`."""
    grid = getattr(lb, "needle_grid", None) or Grid()
    for i, spec in enumerate(grid.specs(), start=1):
        if limit is not None and i > limit:
            return
        yield to_sample(generate(lb, spec), f"{TASK}:{i}", str(lb.root))


def record(lb: LongBench, sample_id: str, source: str = "") -> Sample:
    """The record a needle sample id names, re-created (what evaluate checks a run's prompt against)."""
    return to_sample(generate(lb, Spec.parse(sample_id)), source or f"{TASK}:{sample_id}", str(lb.root))


def needles_table(keys: dict, lb: LongBench, sample: Sample, prompt) -> pa.Table:
    """The sample's `needles` row: its grid cell, where the needle landed in characters and in tokens.

    Token positions come from the prompt's own token texts (body tokens are exact slices of the filled
    template), so they hold after the chat wrapper and truncation; NULL when truncation cut the needle."""
    layout = generate(lb, Spec.parse(sample.sample_id))
    if layout.context != sample.context:
        raise NeedleError(f"{sample.sample_id}: the sample's context is not the one its id generates")
    ranges = prompt.ranges()
    ends = np.cumsum([len(t) for t in prompt.texts])
    ctx_char = int(ends[ranges["context_start"] - 1]) if ranges["context_start"] > 0 else 0
    at = "".join(prompt.texts).find(layout.needle_text, ctx_char)
    start = end = depth_tokens = None
    ctx_tokens = ranges["context_end"] - ranges["context_start"]
    if at >= 0:
        start = int(np.searchsorted(ends, at, side="right"))
        end = int(np.searchsorted(ends, at + len(layout.needle_text) - 1, side="right")) + 1
        rest = ctx_tokens - (end - start)
        depth_tokens = 100.0 * (start - ranges["context_start"]) / rest if rest > 0 else 0.0
    row = {
        **{k: v[0].as_py() for k, v in keys.items()},
        "kind": layout.spec.kind,
        "length_requested": layout.spec.length,
        "depth_requested": layout.spec.depth,
        "seed": layout.spec.seed,
        "depth_actual": layout.depth_actual,
        "needle": layout.needle,
        "needle_text": layout.needle_text,
        "needle_count": layout.needles,
        "context_tokens": ctx_tokens,
        "needle_start": start,
        "needle_end": end,
        "depth_tokens": depth_tokens,
    }
    return pa.Table.from_pylist([row], schema=schemas.NEEDLES.schema)
