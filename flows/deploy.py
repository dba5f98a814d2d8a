"""`kvw deploy --pool P`: register the shard deployments on a process work pool (creating the pool if needed).

`extract/longbench` and `evaluate/longbench` (served by `python -m flows.serve`) stay the entry points;
with `-p work_pool=P` they submit one run of `extract-shard/longbench` or `evaluate-shard/longbench`
per shard, which this registers from the repository folder itself (`flow.from_source` on a local path:
no image, no git remote, works offline). Every worker must see the code at the same path, and the
warehouse (`output`) at the same place: a shared folder or an object store.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from prefect import flow
from prefect.automations import Automation
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.exceptions import ObjectNotFound

from warehouse.config import REPO

SHARD_FLOWS = {
    "flows/extract_flow.py:extract_shard": "One shard (a task and a range of its samples) of an extract run",
    "flows/evaluate_flow.py:evaluate_shard": "One shard (a task and a range of its samples) of an evaluate run",
}
DEPLOYMENT = "longbench"
ZOMBIE_AUTOMATION = "kvwarehouse: crash shard runs that stop sending heartbeats"
HEARTBEAT_SECONDS = 30  # shard runs' heartbeats (Prefect's minimum; its default is 180), set on the deployment
ZOMBIE_SECONDS = 90  # three missed heartbeats


def ensure_pool(pool: str) -> bool:
    """Create a process work pool named `pool` unless it exists; True when created."""
    with get_client(sync_client=True) as client:
        try:
            existing = client.read_work_pool(pool)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            return True
    if existing.type != "process":
        raise ValueError(f"work pool {pool!r} is of type {existing.type!r}; the shard deployments need 'process'")
    return False


def ensure_zombie_automation(seconds: int = ZOMBIE_SECONDS) -> Automation:
    """Prefect's zombie-flow recipe, for shard runs only: a run tagged `shard` that sends no heartbeat (and
    no final state) for `seconds` is marked Crashed, so the parent resubmits it. Without it a shard whose
    whole worker died (a lost node) stays Running and its parent waits forever."""
    if seconds < 2 * HEARTBEAT_SECONDS:
        raise ValueError(f"zombie seconds must be >= {2 * HEARTBEAT_SECONDS} (two heartbeats), got {seconds}")
    try:
        old = Automation.read(name=ZOMBIE_AUTOMATION)
    except ValueError:
        old = None
    auto = Automation(
        name=ZOMBIE_AUTOMATION,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },  # fmt: skip
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification(
                {"prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.shard"}
            ),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=seconds),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=f"no heartbeat for {seconds} s: worker lost")],
    )
    if old is not None:
        auto.id = old.id
        auto.update()
        return auto
    return auto.create()


def deploy(
    pool: str,
    source: str | Path = REPO,
    entrypoints: dict[str, str] | None = None,
    zombie_seconds: int = ZOMBIE_SECONDS,
) -> list[str]:
    """Register every shard flow as `<flow>/longbench` on `pool` (and the zombie automation); returns the names."""
    ensure_pool(pool)
    ensure_zombie_automation(zombie_seconds)
    names = []
    for entrypoint, description in (entrypoints or SHARD_FLOWS).items():
        shard_flow = flow.from_source(source=str(Path(source).resolve()), entrypoint=entrypoint)
        # heartbeats every 30 s on whatever process worker runs the shard (the zombie automation counts on them)
        beat = {"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS)}}
        shard_flow.deploy(name=DEPLOYMENT, work_pool_name=pool, description=description, tags=["kvwarehouse", "shard"],
                          job_variables=beat,
                          build=False, push=False, print_next_steps=False, ignore_warnings=True)  # fmt: skip
        names.append(f"{shard_flow.name}/{DEPLOYMENT}")
    return names
