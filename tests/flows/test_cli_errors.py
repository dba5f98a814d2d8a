"""No `kvw` command ends in a traceback: each error is one line naming the problem (issue 17 item 5), on a
literal warehouse with a damaged file, a file that is no catalog, a missing catalog, an object store that
cannot be reached, and an error no handler expected (its traceback only with KVW_DEBUG=1)."""

import pytest

from flows import cli
from flows.cli import main
from tests.conftest import free_port
from tests.reports.test_strategy_comparison import write_literal


@pytest.fixture
def damaged(tmp_path):
    """A literal warehouse whose first quality file is garbage."""
    write_literal(tmp_path)
    bad = sorted((tmp_path / "data" / "quality").rglob("*.parquet"))[0]
    bad.write_bytes(b"not parquet at all")
    return tmp_path, bad


def one_line(err: str, cmd: str) -> str:
    assert "Traceback" not in err and err.startswith(f"kvw {cmd}: "), err
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("cmd", ["catalog", "keep", "report"])
def test_a_damaged_file_is_named_not_a_traceback(damaged, cmd, capsys):
    root, bad = damaged
    args = {"catalog": [], "keep": ["knorm"], "report": ["--demo", "never", "--only", "strategy_comparison",
                                                          "--out", str(root / "out")]}[cmd]  # fmt: skip
    assert main([cmd, *args, "--data", str(root / "data"), "--db", str(root / "kv.duckdb")]) in (1, 2)
    err = one_line(capsys.readouterr().err, cmd)
    assert str(bad) in err and "kvw verify" in err


def test_a_file_that_is_no_catalog_and_a_missing_one(tmp_path, capsys):
    junk = tmp_path / "junk.duckdb"
    junk.write_text("junk")
    assert main(["compare", "knorm", "--db", str(junk)]) == 1
    assert "not a valid DuckDB database" in one_line(capsys.readouterr().err, "compare")
    assert main(["compare", "knorm", "--db", str(tmp_path / "none" / "kv.duckdb")]) == 1
    err = one_line(capsys.readouterr().err, "compare")
    assert "no catalog at" in err and "kvw verify" not in err


def test_an_unreachable_object_store_is_named(monkeypatch, capsys):
    """`kvw sql --data s3://...` with a dead endpoint used to print a botocore traceback."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's retries: seconds each, not what is tested
    for cmd in (["sql", "SELECT 1"], ["catalog"], ["verify"]):
        extra = ["--db", "/tmp/kvw-never-written.duckdb"] if cmd[0] == "catalog" else []
        assert main([cmd[0], "--data", "s3://kvw-bucket/w/data", *extra, *cmd[1:]]) == 1
        err = one_line(capsys.readouterr().err, cmd[0])
        assert "s3://kvw-bucket: the object store cannot be reached" in err and "AWS_ENDPOINT_URL" in err


def test_an_unexpected_error_is_one_line_and_its_traceback_is_on_request(monkeypatch, capsys):
    def broken(a):
        raise KeyError("layer")

    help_, args, _ = cli.COMMANDS["policies"]
    monkeypatch.setitem(cli.COMMANDS, "policies", (help_, args, broken))
    assert main(["policies"]) == 1
    err = one_line(capsys.readouterr().err, "policies")
    assert "unexpected KeyError: 'layer'" in err and "KVW_DEBUG=1" in err
    monkeypatch.setenv("KVW_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["policies"])
