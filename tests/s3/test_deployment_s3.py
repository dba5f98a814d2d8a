"""The user's path to a bucket: `prefect deployment run extract/longbench -p output=s3://...` against a real Prefect
server and a loopback S3 server, then `kvw sql` on the bucket; a missing bucket fails the run, naming it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import FIXTURE_LONGBENCH, REPO
from tests.flows.conftest import run_deployment, serving

pytestmark = [pytest.mark.prefect, pytest.mark.model]


def test_extract_deployment_to_a_bucket(prefect_server, aws_env, bucket, tmp_path):
    env = dict(prefect_server, **aws_env, KVW_LONGBENCH=str(FIXTURE_LONGBENCH), KVW_DB=str(tmp_path / "kv.duckdb"))
    with serving(env, tmp_path, "extract/longbench"):
        r = run_deployment(env, "extract/longbench", f"output={bucket}/kvw", "tasks=trec", "limit=1", "max_tokens=128")
        assert r.returncode == 0, r.stdout[-3000:] + (tmp_path / "serve.log").read_text()[-3000:]
        nowhere = "output=s3://kvw-no-such-bucket/kvw"
        missing = run_deployment(env, "extract/longbench", nowhere, "tasks=trec", "limit=1", "max_tokens=128")
        assert missing.returncode == 1
    assert "s3://kvw-no-such-bucket: the bucket does not exist" in (tmp_path / "serve.log").read_text()

    q = "SELECT s.task, s.n_tokens, r.samples, count(*) AS stats FROM samples s JOIN runs r USING (run_id) " \
        "JOIN token_stats t USING (run_id, task, sample_id) GROUP BY ALL"  # fmt: skip
    for where in (["--data", f"{bucket}/kvw/data"], ["--db", str(tmp_path / "kv.duckdb")]):
        out = subprocess.run([sys.executable, "-m", "flows.cli", "sql", *where, "--csv", q],
                             env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["task,n_tokens,samples,stats", f"trec,128,1,{30 * 3 * 128}"]
    assert not os.path.exists(tmp_path / "data")  # nothing was written locally but the catalog
