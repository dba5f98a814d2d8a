"""Object stores (s3://, gs://, abfs://, ...) through fsspec: one filesystem per store, one error vocabulary.

pyarrow writes and reads through the fsspec filesystem, polars reads the same URLs, and DuckDB reads them
through the same filesystem registered on each connection (`register`), so one set of credentials (the
store's own: for S3 the standard AWS variables and ~/.aws files, AWS_ENDPOINT_URL for non-AWS endpoints)
serves every engine. DuckDB's own httpfs is used instead when KVW_DUCKDB_S3=httpfs (it must be installable:
it is downloaded from DuckDB's extension host, which not every machine reaches).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import duckdb

# the package a protocol needs (fsspec's own registry names it too; this is for the error message)
PACKAGES = {
    **dict.fromkeys(("s3", "s3a"), "s3fs"),
    **dict.fromkeys(("gs", "gcs"), "gcsfs"),
    **dict.fromkeys(("abfs", "abfss", "az"), "adlfs"),
}
LISTINGS_SECONDS = 10.0  # how long a DuckDB connection reuses a listing (a query's glob, then its files' sizes)
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class StoreError(OSError):
    """The warehouse location cannot be used as it is: a missing bucket, refused credentials, foreign objects,
    or a missing filesystem package. The message names the bucket or key."""


def is_url(root: object) -> bool:
    """An object-store URL (`s3://bucket/prefix`), not a local path (`file://` counts as local)."""
    m = _URL.match(str(root)) if isinstance(root, str) else None
    return bool(m) and m.group(1).lower() != "file"


def protocol(url: str) -> str:
    return _URL.match(url).group(1).lower()


def bucket_url(url: str) -> str:
    """`s3://bucket` of `s3://bucket/prefix/key`."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def filesystem(url: str, listings_seconds: float | None = None):
    """A fresh fsspec filesystem for `url`'s protocol. Without `listings_seconds` it caches no listing (other
    processes write the same prefix: a cached listing would hide their files); with it, listings are reused for
    that long, so the file sizes and dates a query asks for right after its glob cost no request each."""
    import fsspec

    proto = protocol(url)
    try:
        cls = fsspec.get_filesystem_class(proto)
    except (ImportError, ValueError) as err:
        package = PACKAGES.get(proto)
        hint = f"install {package} (pip install {package})" if package else "no fsspec filesystem is known for it"
        raise StoreError(f"{url}: {proto}:// needs an fsspec filesystem: {hint} ({err})") from err
    if listings_seconds is None:
        return cls(skip_instance_cache=True, use_listings_cache=False)
    return cls(skip_instance_cache=True, use_listings_cache=True, listings_expiry_time=listings_seconds)


def key(url: str) -> str:
    """The filesystem-side path of a URL (`bucket/prefix/key`)."""
    return _URL.sub("", url, count=1)


@contextmanager
def explained(url: str) -> Iterator[None]:
    """Turn the filesystem's errors into StoreErrors that name the bucket or key and say what to check."""
    try:
        yield
    except StoreError:
        raise
    except FileNotFoundError as err:
        if missing_bucket(err):
            raise StoreError(f"{bucket_url(url)}: the bucket does not exist ({err}); create it first") from err
        raise
    except PermissionError as err:
        raise StoreError(
            f"{url}: access denied ({err}); check the credentials (for S3: AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY or ~/.aws, AWS_ENDPOINT_URL for a non-AWS endpoint)"
        ) from err
    except Exception as err:
        if not unreachable(err):
            raise
        raise StoreError(
            f"{bucket_url(url)}: the object store cannot be reached ({err}); check the endpoint (for S3: "
            "AWS_ENDPOINT_URL for a non-AWS endpoint), the network and any proxy"
        ) from err


# A connection that never opened (the endpoint is wrong, down or unroutable), as botocore, aiohttp and Python
# spell it: what a second request a moment later would most likely meet too. A reset mid-transfer is not one.
UNREACHABLE = {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError", "ConnectionRefusedError"}


def unreachable(err: BaseException) -> bool:
    """Is this error an object store that cannot be connected to at all? (By class name: warehouse/ imports no
    cloud SDK.)"""
    return any(cls.__name__ in UNREACHABLE for cls in type(err).__mro__)


def missing_bucket(err: FileNotFoundError) -> bool:
    """Does this error say the bucket (or Azure container) itself is missing, not just a key?"""
    text = str(err).lower()
    return "bucket" in text or "container" in text


def register(con: duckdb.DuckDBPyConnection, protocols: Iterable[str]) -> duckdb.DuckDBPyConnection:
    """Make `con` read these protocols' URLs: through fsspec (the default), or DuckDB's httpfs for s3 when
    KVW_DUCKDB_S3=httpfs. Every connection the project opens over an object store goes through here."""
    for proto in sorted(set(protocols)):
        if proto in ("s3", "s3a") and os.environ.get("KVW_DUCKDB_S3", "").lower() == "httpfs":
            _httpfs(con)
            continue
        con.execute("SET parquet_metadata_cache = true")  # each view bind would read every footer again
        con.execute("SET cache_local_files = true")
        fs = filesystem(f"{proto}://", listings_seconds=LISTINGS_SECONDS)
        if not con.filesystem_is_registered(fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]):
            con.register_filesystem(fs)
    return con


def protocols_in(sql: Iterable[str]) -> set[str]:
    """The object-store protocols named in quoted URLs of these SQL texts (a catalog's view definitions)."""
    found = set()
    for text in sql:
        found.update(m.lower() for m in re.findall(r"'([A-Za-z][A-Za-z0-9+.-]*)://", text or ""))
    return found - {"file", "http", "https"}


def _httpfs(con: duckdb.DuckDBPyConnection) -> None:
    """DuckDB's native S3 reader, with a secret made of the standard AWS variables. The extension comes from
    DuckDB's extension folder, else the offline wheel (`duckdb-ext-httpfs`, published for DuckDB 1.4), else a
    download."""
    try:
        con.execute("LOAD httpfs")
    except duckdb.Error:
        try:
            if wheel := _wheel_extensions():
                con.execute(f"SET extension_directory = {_literal(wheel)}")
            else:
                con.execute("INSTALL httpfs")
            con.execute("LOAD httpfs")
        except duckdb.Error as err:
            raise StoreError(
                f"KVW_DUCKDB_S3=httpfs, but DuckDB's httpfs extension cannot be installed or loaded ({err}); "
                "unset KVW_DUCKDB_S3 to read S3 through s3fs instead"
            ) from err
    opts = {"TYPE": "s3", "REGION": os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")}
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        opts |= {"KEY_ID": os.environ["AWS_ACCESS_KEY_ID"], "SECRET": os.environ.get("AWS_SECRET_ACCESS_KEY", "")}
    else:
        opts["PROVIDER"] = "credential_chain"  # ~/.aws files, instance roles
    if os.environ.get("AWS_ENDPOINT_URL"):
        endpoint = urlsplit(os.environ["AWS_ENDPOINT_URL"])
        opts |= {"ENDPOINT": endpoint.netloc, "USE_SSL": endpoint.scheme == "https", "URL_STYLE": "path"}
    body = ", ".join(f"{k} {_literal(v)}" for k, v in opts.items() if v is not None)
    con.execute(f"CREATE OR REPLACE SECRET kvw_s3 ({body})")


def _wheel_extensions() -> str | None:
    """The extension folder of the `duckdb-ext-*` wheels, when one is installed."""
    import importlib.util

    spec = importlib.util.find_spec("duckdb_ext")
    for base in (spec.submodule_search_locations or []) if spec else []:
        if os.path.isdir(os.path.join(base, "extensions")):
            return os.path.join(base, "extensions")
    return None


def _literal(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str) and v.isidentifier() and v in ("s3", "credential_chain"):
        return v
    return "'" + str(v).replace("'", "''") + "'"
