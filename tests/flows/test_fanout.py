"""Fan-out outcome collection against a real Prefect server: every shard's outcome table comes back with more
shards than one page holds and extra artifacts in each shard run (another table, a markdown note, an older
attempt's outcome table)."""

import json

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows import fanout
from flows.shards import Shard

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


@flow(name="kvw-test-shard")
def shard_flow():
    """Never run: its runs only hold artifacts, as finished shard runs do."""


def outcome(i: int, attempt: int = 1) -> list[dict]:
    return [{"task": "t", "sample_id": f"s{i}", "attempt": attempt}, {"task": "t", "sample_id": f"s{i}b"}]


def test_every_outcome_comes_back_past_one_page_with_extra_artifacts(prefect_server):
    """`_read_outcomes` read 200 artifacts for 200 run ids: any second artifact pushed outcomes off the page."""
    n = 230  # more shards than one page of run ids (200)
    url = prefect_server["PREFECT_API_URL"]
    with temporary_settings(updates={PREFECT_API_URL: url}), get_client(sync_client=True) as client:

        def artifact(run_id, kind: str, data, description: str) -> None:
            client.create_artifact(ArtifactCreate(flow_run_id=run_id, type=kind, data=data, description=description))

        runs = []
        for i in range(n):
            run_id = client.create_flow_run(shard_flow, name=f"t[{i}:{i + 1}]").id
            runs.append(fanout.ShardRun(Shard("t", i, i + 1, i == n - 1), run_id))
            if i % 3 == 0:  # a retried shard: its first attempt's table, then the final one
                artifact(run_id, "table", json.dumps(outcome(i, attempt=0)), fanout.OUTCOMES_KEY)
            artifact(run_id, "markdown", "# a note", "not the outcomes")
            artifact(run_id, "table", json.dumps(outcome(i)), fanout.OUTCOMES_KEY)
            artifact(run_id, "table", json.dumps([{"other": i}]), "another table")
        fanout._read_outcomes(client, runs)
    assert [r.rows for r in runs] == [outcome(i) for i in range(n)]
