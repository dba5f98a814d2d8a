"""The README stays true: its SQL runs, and every table and column it promises exists."""

import re

import duckdb
import pytest

from tests.conftest import REPO
from warehouse.schemas import TABLES

README = (REPO / "README.md").read_text()
SQL_BLOCKS = re.findall(r"```sql\n(.*?)```", README, re.S)


def test_readme_has_sql_examples():
    assert len(SQL_BLOCKS) >= 5


@pytest.mark.parametrize("sql", SQL_BLOCKS, ids=[b.splitlines()[0][:60] for b in SQL_BLOCKS])
def test_readme_sql_runs(sql, small_warehouse):
    con = duckdb.connect(str(small_warehouse["db"]), read_only=True)
    con.execute(sql).fetchall()


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_table_and_column_is_documented(name):
    assert f"`{name}`" in README, f"README does not document table {name}"
    missing = [c for c in TABLES[name].columns if c not in README]
    assert not missing, f"README does not mention {name} columns {missing}"


def test_readme_commands_exist():
    for script in re.findall(r"scripts/[\w-]+\.sh", README):
        assert (REPO / script).exists(), script
    assert "scripts/test.sh" in (REPO / ".ci" / "run").read_text()
