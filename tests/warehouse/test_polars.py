"""The polars door: `warehouse.scan` reads the same files as the catalog, pruned by partition, and the
README's polars example gives the same table as the SQL example it translates."""

from __future__ import annotations

import re

import duckdb
import polars as pl
import pytest

from tests.conftest import REPO
from warehouse import scan

pytestmark = pytest.mark.model

README = (REPO / "README.md").read_text()


def test_scan_prunes_by_partition_and_matches_the_catalog(small_warehouse):
    root = small_warehouse["store"].root
    con = duckdb.connect(str(small_warehouse["db"]), read_only=True)
    want = dict(con.execute("SELECT task, count(*) FROM token_stats GROUP BY task").fetchall())
    got = scan("token_stats", root=root).group_by("task").agg(pl.len()).collect()
    assert dict(got.iter_rows()) == want
    one = scan("token_stats", root=root, task="trec")
    assert one.select(pl.col("task").unique()).collect()["task"].to_list() == ["trec"]
    assert one.select(pl.len()).collect().item() == want["trec"]
    assert scan("rankings", root=root).collect().height == 0, "an empty table is a typed empty frame"
    assert scan("token_stats", root=root).collect_schema()["key_norm"] == pl.Float16
    with pytest.raises(ValueError, match="not partitions"):
        scan("token_stats", root=root, layer=3)


def test_readme_polars_example_equals_its_sql(small_warehouse, monkeypatch):
    (code,) = re.findall(r"```python\n(.*?)```", README, re.S)
    sql = next(b for b in re.findall(r"```sql\n(.*?)```", README, re.S) if "position decile" in b)
    monkeypatch.setenv("KVW_DATA", str(small_warehouse["store"].root))
    scope: dict = {}
    exec(code, scope)
    got = scope["by_layer"]
    con = duckdb.connect(str(small_warehouse["db"]), read_only=True)
    want = con.execute(sql).fetchall()
    assert len(got) == len(want) == 30 * 10
    for (layer, decile, a), (layer2, decile2, b) in zip(got.iter_rows(), want, strict=True):
        assert (layer, decile) == (layer2, decile2)
        assert abs(a - b) <= 0.01 + 1e-9  # the same means; rounding may differ at an exact .xx5 in the last bit
    assert sum(a == b for (_, _, a), (_, _, b) in zip(got.iter_rows(), want, strict=True)) >= 0.95 * len(want)
