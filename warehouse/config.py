"""Where things live. Every default can be moved with an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _env_path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser().resolve() if value else default


def _is_url(value: object) -> bool:
    from warehouse.remote import is_url

    return is_url(value)


def data_root() -> Path | str:
    """Parquet files (KVW_DATA, default warehouse/data): a folder, or an object-store URL (s3://bucket/prefix)."""
    value = os.environ.get("KVW_DATA")
    if _is_url(value):
        return value.rstrip("/")
    return _env_path("KVW_DATA", REPO / "warehouse" / "data")


def db_path() -> Path:
    """The DuckDB catalog (KVW_DB, default warehouse/kv.duckdb)."""
    return _env_path("KVW_DB", REPO / "warehouse" / "kv.duckdb")


def catalog_data(db: str | os.PathLike | None = None) -> Path | str | None:
    """The Parquet root a catalog file describes, so a catalog is never built over another warehouse's data:
    the configured root for the configured catalog (KVW_DATA with KVW_DB), else the `data/` folder beside
    the file (the layout of a flow's `output`), or None when that folder does not exist."""
    if db is None or Path(db).expanduser().resolve() == db_path():
        return data_root()
    beside = Path(db).expanduser().resolve().parent / "data"
    return beside if beside.is_dir() else None


def cache_dir() -> Path:
    """Converted models and downloads (KVW_CACHE, default ~/.cache/kvwarehouse)."""
    return _env_path("KVW_CACHE", Path.home() / ".cache" / "kvwarehouse")


def reports_dir() -> Path:
    """Generated HTML reports (KVW_REPORTS, default reports/out)."""
    return _env_path("KVW_REPORTS", REPO / "reports" / "out")


def locations(output: str | os.PathLike | None = None) -> tuple[Path | str, Path]:
    """(Parquet root, catalog file) of a warehouse folder given as a flow's `output`, or the defaults.
    An object-store `output` (s3://bucket/prefix) holds the Parquet under `<output>/data`; its catalog is the
    local default one (KVW_DB), since DuckDB writes database files only to local disk."""
    if _is_url(output):
        return f"{str(output).rstrip('/')}/data", db_path()
    if output:
        base = Path(output).expanduser().resolve()
        return base / "data", base / "kv.duckdb"
    return data_root(), db_path()


def writable_dir(folder: str | os.PathLike, what: str = "output") -> Path:
    """Create `folder` and write a probe file in it, so an unwritable destination is refused before any work:
    `output=/proc/forbidden` used to fail only after the model load and the prefills."""
    path = Path(folder).expanduser().resolve()
    probe = path / f".kvw-write-probe-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"{what} {path} is not a writable folder ({err.strerror or err})") from None
    return path
