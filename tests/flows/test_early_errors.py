"""Issue 10 item 7: each bad input gets a `kvw:`/flow error naming the problem, before any model work,
and errors that cannot succeed are not retried."""

import subprocess
import sys

from flows.cli import main
from tests.conftest import REPO


def test_sql_on_a_catalog_locked_by_a_writer_says_so(small_warehouse, tmp_path, capsys):
    """A process holding the catalog read-write (e.g. the `duckdb` CLI) used to give a raw IOException."""
    db = tmp_path / "kv.duckdb"
    db.write_bytes(small_warehouse["db"].read_bytes())
    hold = f"import duckdb, sys; c = duckdb.connect({str(db)!r}); print('ok', flush=True); sys.stdin.read()"
    holder = subprocess.Popen([sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        assert main(["sql", "--db", str(db), "SELECT count(*) FROM samples"]) == 1
    finally:
        holder.communicate("")
    err = capsys.readouterr().err
    assert err.startswith("kvw sql:") and "in use by another process" in err and "Traceback" not in err


def test_sql_csv_into_a_closed_pipe_is_quiet(small_warehouse):
    """`kvw sql --csv ... | head` used to end with a BrokenPipeError traceback."""
    cmd = (f"{sys.executable} -m flows.cli sql --csv --db {small_warehouse['db']} "
           f"'SELECT * FROM range(500000)' | head -n 2")  # fmt: skip
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=REPO)
    assert r.stdout.splitlines() == ["range", "0"]
    assert r.stderr == ""


def test_report_into_an_unwritable_folder_is_refused_first(small_warehouse, tmp_path, capsys):
    """`kvw report --out /proc/forbidden` used to fail with a raw OSError after building the catalog."""
    rc = main(["report", "--db", str(tmp_path / "kv.duckdb"), "--data", str(small_warehouse["store"].root),
               "--out", "/proc/forbidden/x", "--demo", "never", "--only", "kv_cache_statistics"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("kvw report:") and "/proc/forbidden/x" in err and "writ" in err


def test_report_of_an_unknown_run_is_refused(small_warehouse, tmp_path, capsys):
    """`kvw report --run-id nope` used to draw the run with the most samples instead, silently."""
    rc = main(["report", "--db", str(tmp_path / "kv.duckdb"), "--data", str(small_warehouse["store"].root),
               "--out", str(tmp_path / "out"), "--run-id", "nope", "--demo", "never",
               "--only", "kv_cache_statistics"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "nope" in err and small_warehouse["run_id"] in err
    assert not (tmp_path / "out" / "kv_cache_statistics.html").exists()
