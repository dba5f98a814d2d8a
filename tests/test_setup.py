"""Reproducible installs: scripts/setup.sh installs from constraints.txt, and this venv holds exactly those pins."""

import os
import re
import shutil
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
    # the one unconstrained install: older DuckDB releases, each into its own cache folder, never the venv
    loose = [line for line in installs if "pip install" in line and "-c constraints.txt" not in line]
    assert all("--target" in line and '"duckdb==$v"' in line for line in loose), loose
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


def test_no_test_installs_packages():
    """A test that pip-installs fails offline on a cold cache: scripts/setup.sh fetches what tests need."""
    found = [
        f"{path.relative_to(REPO)}:{n}"
        for path in (REPO / "tests").rglob("*.py")
        if path.name != "test_setup.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"""pip['"]?,?\s*['"]?install""", line)
    ]
    assert found == []


def _chromium_sh(tmp_path, uid: int, apt_ok: bool = True, env: dict | None = None):
    """scripts/chromium.sh with a PATH of stand-ins: `id` says `uid`, `apt-get` logs its arguments (and "installs"
    chromium as a stub executable), no browser on the PATH unless one is installed."""
    bin_ = tmp_path / "bin"
    bin_.mkdir(exist_ok=True)
    (bin_ / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    log = tmp_path / "apt.log"
    chromium = bin_ / "chromium"
    install = f"printf '#!/bin/sh\\n' > {chromium}; chmod +x {chromium}" if apt_ok else "exit 100"
    (bin_ / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {log}\ncase "$*" in *install*) {install};; esac\n')
    for tool in ("id", "apt-get"):
        (bin_ / tool).chmod(0o755)
    for tool in ("sh", "printf", "chmod", "cat"):  # what the stand-ins themselves run
        if not (bin_ / tool).exists():
            (bin_ / tool).symlink_to(shutil.which(tool))
    r = subprocess.run(
        ["/bin/bash", str(REPO / "scripts" / "chromium.sh")],
        capture_output=True,
        text=True,
        env={"PATH": str(bin_), "HOME": str(tmp_path), **(env or {})},
    )
    return r, (log.read_text() if log.exists() else "")


def test_setup_installs_chromium_as_root(tmp_path):
    """setup.sh left Chromium to scripts/test.sh: a user of `kvw report` had no browser for its page checks."""
    assert "scripts/chromium.sh" in (REPO / "scripts" / "setup.sh").read_text()
    r, apt = _chromium_sh(tmp_path, uid=0)
    assert r.returncode == 0, r.stderr
    assert "install -y -qq chromium" in apt and (tmp_path / "bin" / "chromium").exists()
    again, apt2 = _chromium_sh(tmp_path, uid=0)  # found now: nothing more to do
    assert again.returncode == 0 and apt2 == apt and again.stderr == ""


def test_setup_says_how_to_install_chromium_where_it_cannot(tmp_path):
    r, apt = _chromium_sh(tmp_path, uid=1000)
    assert r.returncode == 0 and apt == ""
    assert "apt-get install chromium" in r.stderr and "KVW_CHROMIUM" in r.stderr
    (tmp_path / "root").mkdir()
    failed, apt = _chromium_sh(tmp_path / "root", uid=0, apt_ok=False)
    assert failed.returncode == 0 and "install -y -qq chromium" in apt and "could not install chromium" in failed.stderr


def test_setup_accepts_a_chromium_named_by_kvw_chromium(tmp_path):
    browser = tmp_path / "my-chrome"
    browser.write_text("#!/bin/sh\n")
    browser.chmod(0o755)
    r, apt = _chromium_sh(tmp_path, uid=0, env={"KVW_CHROMIUM": str(browser)})
    assert r.returncode == 0 and apt == "" and r.stderr == "" and os.access(browser, os.X_OK)
