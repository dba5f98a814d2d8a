"""Fan a flow's shards out to a work pool and wait: Prefect's own run_deployment, states and artifacts.

The parent submits one child flow run per shard of a shard deployment (`extract-shard/longbench`,
`evaluate-shard/longbench`, registered by `kvw deploy --pool P`), polls their states, resubmits a
shard whose run Crashed (its worker died: the shard is idempotent, so a rerun finishes what is missing)
and reads back each finished shard's outcome table, which the shard publishes as an artifact of its
own run (the server is the one thing parent and workers surely share).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    ArtifactFilterType,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.sorting import ArtifactSort
from prefect.deployments import run_deployment

from flows.shards import Shard

OUTCOMES_KEY = "shard-outcomes"  # description of each shard's outcome artifact
POLL_SECONDS = 2.0
RESUBMITS = 1  # a crashed shard is run again this many times


@dataclass
class ShardRun:
    shard: Shard
    flow_run_id: UUID
    state: str = "SCHEDULED"  # Prefect StateType name
    message: str = ""
    attempts: int = 1
    rows: list[dict] = field(default_factory=list)  # the shard's outcome table

    @property
    def ok(self) -> bool:
        return self.state == "COMPLETED"


def submit(deployment: str, shard: Shard, params: dict) -> UUID:
    """One child flow run of `deployment` for `shard` (linked to the calling flow as a subflow)."""
    run = run_deployment(
        deployment, parameters={**params, **shard.params()}, timeout=0, flow_run_name=f"{shard.name}",
        tags=["kvwarehouse", "shard"],
    )  # fmt: skip
    return run.id


def run_shards(deployment: str, shards: list[Shard], params: dict, poll: float = POLL_SECONDS) -> list[ShardRun]:
    """Submit every shard, wait until each is final (resubmitting crashed ones), read their outcomes."""
    log = get_run_logger()
    runs = [ShardRun(s, submit(deployment, s, params)) for s in shards]
    pending, last_note = list(runs), time.monotonic()
    with get_client(sync_client=True) as client:
        while pending:
            time.sleep(poll)
            states = _states(client, [r.flow_run_id for r in pending])
            for r in list(pending):
                state = states.get(r.flow_run_id)
                if state is None or not state.is_final():
                    continue
                r.state, r.message = state.type.name, state.message or ""
                if state.is_crashed() and r.attempts <= RESUBMITS:
                    log.warning("shard %s crashed (%s): resubmitting", r.shard.name, r.message)
                    r.flow_run_id, r.state = submit(deployment, r.shard, params), "SCHEDULED"
                    r.attempts += 1
                    continue
                pending.remove(r)
                log.info("shard %s %s %s", r.shard.name, r.state, r.message)
            if pending and time.monotonic() - last_note > 60:
                waiting = sum(r.state == "SCHEDULED" for r in pending)
                log.info("%d shard(s) still running or waiting for a worker of the pool", waiting)
                last_note = time.monotonic()
        _read_outcomes(client, runs)
    return runs


def _states(client, ids: list[UUID], page: int = 200) -> dict:
    """The current state of each flow run, one request per `page` runs (the server's default limit)."""
    out = {}
    for i in range(0, len(ids), page):
        found = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids[i : i + page])),
                                      limit=page)  # fmt: skip
        out.update({fr.id: fr.state for fr in found})
    return out


def _read_outcomes(client, runs: list[ShardRun], page: int = 200) -> None:
    """Each shard's outcome table: the newest `OUTCOMES_KEY` table artifact of its final run. Every table
    artifact of the runs is read, `page` run ids per filter and `page` artifacts per request until a short page:
    a shard run may hold other artifacts, and a retried one a table per attempt. (One request of `page`
    artifacts for `page` runs dropped outcomes as soon as any run held a second artifact.)"""
    by_run = {r.flow_run_id: r for r in runs}
    ids, newest = list(by_run), {}
    for i in range(0, len(ids), page):
        tables = ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=ids[i : i + page]),
            key=ArtifactFilterKey(exists_=False),
            type=ArtifactFilterType(any_=["table"]),
        )
        offset = 0
        while True:
            arts = client.read_artifacts(artifact_filter=tables, sort=ArtifactSort.ID_DESC, limit=page, offset=offset)
            for art in arts:
                seen = newest.get(art.flow_run_id)
                if art.description == OUTCOMES_KEY and (seen is None or art.created > seen.created):
                    newest[art.flow_run_id] = art
            if len(arts) < page:
                break
            offset += len(arts)
    for run_id, art in newest.items():
        data = json.loads(art.data) if isinstance(art.data, str) else art.data
        by_run[run_id].rows = list(data)


def failures(runs: list[ShardRun]) -> list[str]:
    """`task[a:b]: <state> <message>` for every shard that did not complete."""
    return [f"{r.shard.name}: {r.state.lower()} {r.message}".strip() for r in runs if not r.ok]


def shards_markdown(runs: list[ShardRun], pool: str) -> str:
    """The shards section of a pool run's summary artifact."""
    lines = ["", f"## Shards on pool `{pool}`", "", "| shard | state | attempts | outcomes | message |"]
    lines.append("|---|---|---|---|---|")
    for r in runs:
        lines.append(f"| {r.shard.name} | {r.state.lower()} | {r.attempts} | {len(r.rows)} | {r.message[:200]} |")
    return "\n".join(lines) + "\n"
