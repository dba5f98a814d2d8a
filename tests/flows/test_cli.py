"""The `kvw` command line: read-only SQL, the catalog, the schemas."""

import subprocess
import sys

from flows.cli import main
from tests.conftest import REPO
from warehouse.schemas import TABLES


def test_sql_prints_a_table(small_warehouse, capsys):
    rc = main(["sql", "--db", str(small_warehouse["db"]), "SELECT task, n_tokens FROM samples ORDER BY task"])
    out = capsys.readouterr().out
    assert rc == 0 and "multifieldqa_zh" in out and "512" in out


def test_sql_csv_and_stdin(small_warehouse):
    r = subprocess.run(
        [sys.executable, "-m", "flows.cli", "sql", "--csv", "--db", str(small_warehouse["db"])],
        input="SELECT count(*) AS n FROM layer_stats",
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert r.returncode == 0 and r.stdout.splitlines() == ["n", str(3 * 30 * 3)]


def test_sql_is_read_only_and_errors_are_clear(small_warehouse, capsys):
    assert main(["sql", "--db", str(small_warehouse["db"]), "DROP VIEW samples"]) == 1
    assert "read-only" in capsys.readouterr().err
    assert main(["sql", "--db", str(small_warehouse["db"]), "SELECT nope FROM samples"]) == 1
    assert "nope" in capsys.readouterr().err


def test_catalog_rebuild(small_warehouse, tmp_path, capsys):
    db = tmp_path / "copy.duckdb"
    assert main(["catalog", "--data", str(small_warehouse["store"].root), "--db", str(db)]) == 0
    assert main(["sql", "--csv", "--db", str(db), "SELECT count(*) FROM samples"]) == 0
    assert capsys.readouterr().out.strip().endswith("3")


def test_tables_lists_every_schema(capsys):
    assert main(["tables"]) == 0
    out = capsys.readouterr().out
    for name, table in TABLES.items():
        assert f"{name}: {table.grain}" in out


def test_tables_lists_every_view_with_its_columns_and_every_macro(tmp_path, capsys):
    """A new user saw the tables only, not the ~30 views (keep_sets, quality_samples, ...) their queries name."""
    from warehouse import catalog
    from warehouse.store import Store

    con = catalog.memory(Store(tmp_path))
    views = {v for (v,) in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    macro_sql = "SELECT function_name FROM duckdb_functions() WHERE function_type = 'macro' AND NOT internal"
    macros = [m for (m,) in con.execute(macro_sql).fetchall()]
    views -= set(TABLES)
    assert views and macros
    assert main(["tables"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    heads = {line.split(":", 1)[0]: i for i, line in enumerate(lines) if line and not line.startswith(" ")}
    for view in views:
        assert view in heads, view
        assert len(lines[heads[view]]) > len(view) + 10, f"{view} has no description"
        listed = []
        for line in lines[heads[view] + 1 :]:
            if not line.startswith("    "):
                break
            listed.append(line.split()[0])
        columns = "SELECT column_name FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index"
        expected = [c for (c,) in con.execute(columns, [view]).fetchall()]
        assert listed == expected, view
    for macro in macros:
        assert f"  {macro}(" in out
    con.close()


def test_keep_with_an_empty_task_list_is_an_error_not_every_task(tmp_path, capsys):
    """`--tasks ""` used to read as 'no filter' and rank every extracted task."""
    rc = main(["keep", "snapkv", "--budget", "64", "--tasks", "", "--data", str(tmp_path / "data"),
               "--db", str(tmp_path / "kv.duckdb")])  # fmt: skip
    assert rc == 2 and "empty task name" in capsys.readouterr().err


def _skips(root, n):
    from tests.warehouse.test_store import skip_rows
    from warehouse.store import Store

    store = Store(root)
    for i in range(n):
        store.write("skipped", skip_rows(), f"s{i}")
    return store


def test_report_and_keep_with_db_alone_use_the_data_beside_it_not_the_default_warehouse(tmp_path, monkeypatch, capsys):
    """`kvw report --db other/kv.duckdb` used to rebuild that catalog over $KVW_DATA: it then described (and
    drew) the default warehouse while naming the other one."""
    import duckdb

    monkeypatch.setenv("KVW_DATA", str(tmp_path / "default" / "data"))
    _skips(tmp_path / "default" / "data", 2)
    _skips(tmp_path / "other" / "data", 1)
    db = tmp_path / "other" / "kv.duckdb"
    rc = main(
        ["report", "--db", str(db), "--out", str(tmp_path / "out"), "--only", "kv_cache_layers", "--demo", "never"]
    )
    assert rc == 0, capsys.readouterr().err
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM skipped").fetchone()[0] == 1  # other's one row, not default's two
    con.close()

    lonely = tmp_path / "lonely" / "kv.duckdb"
    lonely.parent.mkdir()
    capsys.readouterr()
    for cmd in (["keep", "snapkv", "--budget", "64"], ["report", "--out", str(tmp_path / "o2"), "--demo", "never"]):
        assert main([*cmd, "--db", str(lonely)]) == 2
        assert f"no Parquet folder beside {lonely}" in capsys.readouterr().err
    assert not lonely.exists()
