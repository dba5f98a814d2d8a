"""An extraction run: which samples, under which run id, written in which order.

The run id is derived from everything that shapes the data (model and its
revision, dtype, token budget, statistics settings), so rerunning the same
configuration resumes the same run: finished samples are skipped, a sample cut
short by a crash is redone and overwrites its files. `samples` is written last
for each sample, so its file marks the sample done.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata

import pyarrow as pa

from extract.longbench import LongBench, Sample, Skip, read_task
from extract.model import Loaded
from extract.sample import StatsConfig, extract_sample
from warehouse import schemas
from warehouse.store import Store, check_partition_value

log = logging.getLogger(__name__)

DATA_FORMAT = 2  # bump whenever prompt building or the statistics change what a run writes
WRITE_ORDER = ("tokens", "token_stats", "layer_stats", "kv", "needles", "samples")  # samples last: the done marker
VERSIONED = ("torch", "transformers", "pyarrow", "duckdb", "polars", "prefect", "numpy", "kvwarehouse")


@dataclass(frozen=True)
class Outcome:
    task: str
    sample_id: str
    status: str  # extracted | existing | skipped (bad input) | failed (raised after retries)
    n_tokens: int = 0
    seconds: float = 0.0
    reason: str = ""


@dataclass
class Plan:
    samples: list[Sample] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # logged too: an empty task file, no max answer length


def plan(lb: LongBench, tasks: list[str] | None, limit: int | None) -> Plan:
    """Read the chosen tasks (all when None): up to `limit` good samples each, bad records as skips."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 (or None for every sample), got {limit}")
    out = Plan()
    for task in lb.check_tasks(tasks):
        for warning in lb.task_warnings(task):
            log.warning(warning)
            out.warnings.append(warning)
        for item in read_task(lb, task, limit):
            (out.samples if isinstance(item, Sample) else out.skips).append(item)
    return out


def effective_max_tokens(loaded: Loaded, max_tokens: int) -> int:
    if max_tokens < 16:
        raise ValueError(f"max_tokens must be >= 16, got {max_tokens}")
    if max_tokens > loaded.max_positions:
        log.warning(
            "max_tokens=%d exceeds %s's maximum of %d positions: prompts are truncated to %d",
            max_tokens,
            loaded.name,
            loaded.max_positions,
            loaded.max_positions,
        )
    return min(max_tokens, loaded.max_positions)


def check_run_name(run_name: str | None) -> None:
    """A run name becomes the run_id folder of every file the run writes: one that cannot be (`/`, `..`, `<`,
    a leading '.') is refused here, before the model loads. It used to fail at the first write, after a
    prefill and two retries, naming run_id rather than the parameter."""
    if not run_name:  # unset or empty: the run id is derived (make_run_id)
        return
    try:
        check_partition_value("run_id", run_name)
    except ValueError:
        raise ValueError(
            f"run_name {run_name!r} cannot name a run: use letters, digits, '.', '_', '+' or '-', not starting "
            "with '.' (it becomes the run_id folder of every file the run writes)"
        ) from None


def make_run_id(loaded: Loaded, max_tokens: int, cfg: StatsConfig, run_name: str | None = None) -> str:
    if run_name:
        check_run_name(run_name)
        return run_name
    shape = {
        "model": loaded.source,
        "revision": loaded.revision,
        "dtype": loaded.dtype,
        "max_tokens": max_tokens,
        "stats": asdict(cfg),
        "data_format": DATA_FORMAT,
    }
    # Sliding windows, softcaps and sinks shape attn_received (scored as the layer scores since 2026-12-07);
    # all-full-attention models keep their earlier run ids, whose data this did not change.
    if any(x.attention != "full" or x.softcap or x.sinks for x in getattr(loaded, "layers", None) or []):
        shape["layers"] = [asdict(x) for x in loaded.layers]
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:12]


def versions() -> dict[str, str]:
    out = {}
    for pkg in VERSIONED:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def is_done(store: Store, model: str, run_id: str, sample: Sample) -> bool:
    return store.exists("samples", sample.sample_id, model=model, task=sample.task, run_id=run_id)


def write_sample(store: Store, tables: dict[str, pa.Table], head_dim: int) -> None:
    """Write a sample's tables, `samples` last; clears an earlier skip record of the sample."""
    row = tables["samples"].to_pylist()[0]
    for name in WRITE_ORDER:
        if name in tables:
            schema = schemas.kv_schema(head_dim) if name == "kv" else None
            store.write(name, tables[name], row["sample_id"], schema=schema)
    store.remove("skipped", _skip_name(row["source"]), model=row["model"], task=row["task"], run_id=row["run_id"])


def _skip_name(source: str) -> str:
    return source.replace(":", "-line")


def record_skip(store: Store, run_id: str, model: str, skip: Skip, status: str = "skipped") -> Outcome:
    """Write why a record was not extracted (status `failed` when the model step itself raised)."""
    row = {
        "run_id": run_id,
        "model": model,
        "task": skip.task,
        "sample_id": skip.sample_id,
        "source": skip.source,
        "source_dir": skip.source_dir or None,
        "reason": skip.reason,
        "skipped_at": datetime.now(UTC),
    }
    store.write("skipped", pa.Table.from_pylist([row], schema=schemas.SKIPPED.schema), _skip_name(skip.source))
    log.warning("skipped %s (%s): %s", skip.source, skip.task, skip.reason)
    return Outcome(skip.task, skip.sample_id, status, reason=f"{skip.source}: {skip.reason}")


def process_sample(
    store: Store,
    loaded: Loaded,
    lb: LongBench,
    sample: Sample,
    run_id: str,
    max_tokens: int,
    cfg: StatsConfig,
    overwrite: bool = False,
) -> Outcome:
    """Extract and write one sample unless it is already done (or `overwrite`)."""
    if not overwrite and is_done(store, loaded.name, run_id, sample):
        return Outcome(sample.task, sample.sample_id, "existing")
    t0 = time.perf_counter()
    tables = extract_sample(loaded, lb, sample, run_id, max_tokens, cfg)
    head_dim = int(tables["kv"].schema.field("key").type.list_size) if "kv" in tables else 0
    write_sample(store, tables, head_dim)
    n = tables["samples"]["n_tokens"][0].as_py()
    return Outcome(sample.task, sample.sample_id, "extracted", n, time.perf_counter() - t0)


def run_columns(parameters: dict, prev: dict | None) -> dict:
    """The parameters that shape the data as declared `runs` columns, so SQL and evaluate read columns, not
    JSON keys. `data_dirs` accumulates: a run extended from a second LongBench folder names both."""
    dirs = [*((prev or {}).get("data_dirs") or []), *([parameters["data_dir"]] if parameters.get("data_dir") else [])]
    return {
        "max_tokens": parameters.get("max_tokens"),
        "max_tokens_effective": parameters.get("max_tokens_effective"),
        "attn_window": parameters.get("window"),
        "raw_kv": parameters.get("raw_kv"),
        "data_dirs": sorted(set(dirs)),
    }


def write_layers(store: Store, loaded: Loaded, run_id: str) -> None:
    """The run's `layers` rows (how each layer attends, from the load-time probe); the same on every rewrite."""
    rows = [{"run_id": run_id, "model": loaded.name, **asdict(info)} for info in loaded.layers]
    store.write("layers", pa.Table.from_pylist(rows, schema=schemas.LAYERS.schema), "layers")


def write_run(
    store: Store, loaded: Loaded, run_id: str, parameters: dict, started_at: datetime, seconds: float
) -> dict:
    """Upsert the run's row: totals are recounted from the files, so they are right after any crash."""
    if getattr(loaded, "layers", None):  # a fan-out parent has no model: its shards wrote the layers
        write_layers(store, loaded, run_id)
    samples, tokens = 0, 0
    files = store.files("samples", model=loaded.name, run_id=run_id)
    if files:
        con = store.connect()
        try:
            samples, tokens = con.execute(
                "SELECT count(*), coalesce(sum(n_tokens), 0) FROM read_parquet(?)", [[str(f) for f in files]]
            ).fetchone()
        finally:
            con.close()
    skipped = len(store.files("skipped", model=loaded.name, run_id=run_id))
    prev = None
    if store.exists("runs", "run", model=loaded.name, run_id=run_id):
        prev = store.read("runs", "run", model=loaded.name, run_id=run_id).to_pylist()[0]
    row = {
        "run_id": run_id,
        "model": loaded.name,
        "model_source": loaded.source,
        "model_revision": loaded.revision,
        "dtype": loaded.dtype,
        "device": loaded.device,
        "attn_impl": loaded.attn_impl,
        "parameters": json.dumps(parameters, sort_keys=True, default=str),
        "versions": json.dumps(versions(), sort_keys=True),
        "started_at": min(started_at, prev["started_at"]) if prev else started_at,
        "finished_at": datetime.now(UTC),
        "seconds": seconds + (prev["seconds"] if prev else 0.0),
        "invocations": 1 + (prev["invocations"] if prev else 0),
        "samples": int(samples),
        "tokens": int(tokens),
        "skipped": skipped,
        **run_columns(parameters, prev),
    }
    store.write("runs", pa.Table.from_pylist([row], schema=schemas.RUNS.schema), "run")
    return row


def summary_markdown(
    run: dict, outcomes: list[Outcome], data_root: str, db: str, seconds: float, warnings: list[str] = ()
) -> str:
    """The run summary published as a Prefect artifact (and printed by the CLI); `warnings` are the plan's
    (an empty task file, a task without an answer length), which a log line alone would hide."""
    done = [o for o in outcomes if o.status == "extracted"]
    existing = [o for o in outcomes if o.status == "existing"]
    skipped = [o for o in outcomes if o.status in ("skipped", "failed")]
    tokens = sum(o.n_tokens for o in done)
    busy = sum(o.seconds for o in done)
    lines = [
        f"# extract {run['model']} — run `{run['run_id']}`",
        "",
        "| | |",
        "|---|---|",
        f"| samples extracted now | {len(done)} |",
        f"| samples already done (skipped) | {len(existing)} |",
        f"| samples skipped (bad input or failed) | {len(skipped)} |",
        f"| tokens extracted now | {tokens:,} |",
        f"| wall time | {seconds:.1f} s |",
        f"| tokens/s (extraction only) | {tokens / busy if busy else 0:,.0f} |",
        f"| run totals | {run['samples']} samples, {run['tokens']:,} tokens, {run['invocations']} invocation(s) |",
        f"| device / dtype / attention | {run['device']} / {run['dtype']} / {run['attn_impl']} |",
        f"| Parquet | `{data_root}` |",
        f"| DuckDB catalog | `{db}` |",
        "",
        f"Try: `duckdb {db} \"SELECT layer, avg(key_norm) FROM token_stats WHERE run_id = '{run['run_id']}' "
        'GROUP BY layer ORDER BY layer"`',
    ]
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    if skipped:
        lines += ["", "## Skipped", "", "| task | sample | reason |", "|---|---|---|"]
        lines += [f"| {o.task} | {o.sample_id or '?'} | {o.reason} |" for o in skipped]
    return "\n".join(lines) + "\n"
