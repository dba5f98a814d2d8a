"""benchmarks/gpu_check.sh, the script a lent GPU runs, in its --smoke mode: the same steps on a tiny random
model on the CPU, so the script is known to run before a GPU's minutes are spent on it (no GPU here)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.model, pytest.mark.slow]  # the default model's tokenizer; ~1-2 minutes


def test_gpu_check_smoke_runs_every_section(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    out = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--smoke", "--shape", "tiny", "--lengths", "256"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    for header in ("== 1. extraction vs bare prefill", "== 2. one prefill for 8 policies", "== 3. a sample's whole"):
        assert header in text
    table = text[text.index("\nway ") + 1 :].splitlines()[1:4]  # the rows under the header
    lines = {line.split()[0]: line.split() for line in table}
    # the sweep's table: one answer, the masked sweep and the re-prefill estimate, each with a ratio to one answer
    for way in ("answer", "masked", "re-prefill"):
        assert way in lines and float(lines[way][4]) > 0, text[-2000:]
    assert float(lines["answer"][4]) == 1.0
    assert "masked sweep, where the time goes" in text and "floor:" in text  # and where its time went
    assert (tmp_path / "extract_overhead-tiny.json").exists()
