"""The Parquet store: derived paths, schema enforcement, atomic and idempotent writes.

`warehouse.scan(table, **partitions)` is the polars door to the same files the DuckDB catalog reads.
"""

from __future__ import annotations


def scan(table: str, root=None, **partitions):
    """A polars LazyFrame of `table` under the data root (default warehouse/data or $KVW_DATA), partition-pruned."""
    from warehouse import config
    from warehouse.store import Store

    return Store(root or config.data_root()).scan(table, **partitions)
