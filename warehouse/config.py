"""Where things live. Every default can be moved with an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _env_path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser().resolve() if value else default


def data_root() -> Path:
    """Parquet files (KVW_DATA, default warehouse/data)."""
    return _env_path("KVW_DATA", REPO / "warehouse" / "data")


def db_path() -> Path:
    """The DuckDB catalog (KVW_DB, default warehouse/kv.duckdb)."""
    return _env_path("KVW_DB", REPO / "warehouse" / "kv.duckdb")


def cache_dir() -> Path:
    """Converted models and downloads (KVW_CACHE, default ~/.cache/kvwarehouse)."""
    return _env_path("KVW_CACHE", Path.home() / ".cache" / "kvwarehouse")


def reports_dir() -> Path:
    """Generated HTML reports (KVW_REPORTS, default reports/out)."""
    return _env_path("KVW_REPORTS", REPO / "reports" / "out")


def locations(output: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(Parquet root, catalog file) of a warehouse folder given as a flow's `output`, or the defaults."""
    if output:
        base = Path(output).expanduser().resolve()
        return base / "data", base / "kv.duckdb"
    return data_root(), db_path()
