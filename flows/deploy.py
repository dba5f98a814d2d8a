"""`kvw deploy --pool P`: register the shard deployments on a process work pool (creating the pool if needed).

`extract/longbench` and `evaluate/longbench` (served by `python -m flows.serve`) stay the entry points;
with `-p work_pool=P` they submit one run of `extract-shard/longbench` or `evaluate-shard/longbench`
per shard, which this registers from the repository folder itself (`flow.from_source` on a local path:
no image, no git remote, works offline). Every worker must see the code at the same path, and the
warehouse (`output`) at the same place: a shared folder or an object store.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectNotFound

from warehouse.config import REPO

SHARD_FLOWS = {
    "flows/extract_flow.py:extract_shard": "One shard (a task and a range of its samples) of an extract run",
    "flows/evaluate_flow.py:evaluate_shard": "One shard (a task and a range of its samples) of an evaluate run",
}
DEPLOYMENT = "longbench"


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


def deploy(pool: str, source: str | Path = REPO, entrypoints: dict[str, str] | None = None) -> list[str]:
    """Register every shard flow as `<flow>/longbench` on `pool`; returns the deployment names."""
    ensure_pool(pool)
    names = []
    for entrypoint, description in (entrypoints or SHARD_FLOWS).items():
        shard_flow = flow.from_source(source=str(Path(source).resolve()), entrypoint=entrypoint)
        shard_flow.deploy(name=DEPLOYMENT, work_pool_name=pool, description=description, tags=["kvwarehouse", "shard"],
                          build=False, push=False, print_next_steps=False)  # fmt: skip
        names.append(f"{shard_flow.name}/{DEPLOYMENT}")
    return names
