"""Reproducible installs: scripts/setup.sh installs from constraints.txt, and this venv holds exactly those pins."""

import re
import subprocess
import sys

from tests.conftest import REPO


def pins(lines) -> dict[str, str]:
    """{normalised name: version} of `name==version` lines, local labels (+cpu) dropped."""
    out = {}
    for line in lines:
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^+\s;]+)", line.strip())
        if m:
            out[re.sub(r"[-_.]+", "-", m[1]).lower()] = m[2]
    return out


def test_every_pip_install_in_setup_is_constrained_by_the_lock():
    setup = (REPO / "scripts" / "setup.sh").read_text()
    installs = [line for line in setup.splitlines() if "pip install" in line or '"${pip[@]}"' in line]
    assert installs, "setup.sh installs nothing?"
    assert "pip=(python -m pip install -q -c constraints.txt)" in setup
    assert all("pip install" not in line or "-c constraints.txt" in line for line in installs)
    assert "constraints.txt" in setup.split("exit 0")[0]  # a changed lock reinstalls (the stamp is older)


def test_the_installed_packages_are_exactly_the_locked_versions():
    """Run in the venv setup.sh made: an unpinned install (duckdb>=1.2 -> 2.0.1 one day, 3.0 the next) fails."""
    locked = pins((REPO / "constraints.txt").read_text().splitlines())
    assert len(locked) > 100 and locked["torch"] == "2.13.0" and "duckdb" in locked
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable"], capture_output=True, text=True
    ).stdout.splitlines()
    installed = pins(frozen)
    assert {n: (v, installed.get(n)) for n, v in locked.items() if installed.get(n) != v} == {}
    assert sorted(set(installed) - set(locked)) == []  # nothing installed that the lock does not name
