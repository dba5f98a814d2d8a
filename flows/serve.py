"""Serve every deployment from one process: `python -m flows.serve` (from the repo root).

Needs PREFECT_API_URL pointing at a running server (scripts/env.sh sets it);
without it Prefect would start a private temporary server and
`prefect deployment run` elsewhere would not find the deployments.
"""

from __future__ import annotations

import os
import sys

from prefect import serve

from flows.evaluate_flow import evaluate
from flows.extract_flow import extract
from flows.report_flow import report


def deployments() -> list:
    return [
        extract.to_deployment(
            name="longbench", description="KV statistics of a model over LongBench", tags=["kvwarehouse"]
        ),
        evaluate.to_deployment(
            name="longbench",
            description="Kept-versus-evicted quality of eviction policies on extracted LongBench samples",
            tags=["kvwarehouse"],
        ),
        report.to_deployment(
            name="longbench",
            description="One offline HTML report per feature of the briefs, plus index.html",
            tags=["kvwarehouse"],
        ),
    ]


def main() -> int:
    if not os.environ.get("PREFECT_API_URL"):
        print("PREFECT_API_URL is not set: start a server and `source scripts/env.sh` first", file=sys.stderr)
        return 2
    serve(*deployments())
    return 0


if __name__ == "__main__":
    sys.exit(main())
