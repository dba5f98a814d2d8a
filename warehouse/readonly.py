"""What `kvw sql` lets through: queries, never writes.

DuckDB (2.0.1, checked) has no setting that lets a connection read local
files but not write them: `enable_external_access = false` stops both, and
`allowed_directories` opens a folder for both, so a `COPY ... TO` into the
warehouse's own data folder would still pass. A read-only database still runs
`COPY ... TO`, `EXPORT DATABASE`, `ATTACH ... (READ_ONLY false)` and temp
tables. So two DuckDB mechanisms work together here:

1. DuckDB's own parser classifies every statement before anything runs: only
   queries (SELECT, FROM, WITH, VALUES, SHOW, DESCRIBE, SUMMARIZE), EXPLAIN of
   a query and SET pass. A statement DuckDB runs as several (`MULTI`, e.g.
   PIVOT, which creates types first) cannot be checked part by part: refused.
2. The connection is locked after its setup (`lock_configuration`, with
   `allowed_configs` for the harmless performance knobs), so no SET can widen
   it, and no extension is installed on the fly.
"""

from __future__ import annotations

import duckdb

# settings a reader may still tune once the configuration is locked
ALLOWED_CONFIGS = ("threads", "memory_limit", "max_memory")
QUERY = duckdb.StatementType.SELECT
HOW = (
    "kvw sql is read-only: it runs queries (SELECT, SHOW, DESCRIBE, SUMMARIZE, EXPLAIN) and SET threads or "
    "memory_limit; to save a result, redirect `kvw sql --csv ... > file`"
)


class Refused(ValueError):
    """A statement that could write, or change what the connection may do; the message names it."""


def check(sql: str) -> None:
    """Raise `Refused` unless every statement of `sql` is one that cannot write (nothing is run here).
    A syntax error is DuckDB's `ParserException`, as running the text would give."""
    for st in duckdb.extract_statements(sql):
        _check(st.query, st.type)


def _check(text: str, kind: duckdb.StatementType) -> None:
    if kind in (QUERY, duckdb.StatementType.SET):  # SET: the locked configuration refuses all but ALLOWED_CONFIGS
        return
    if kind == duckdb.StatementType.EXPLAIN:  # EXPLAIN ANALYZE runs its statement: check that one
        inner = _explained(text)
        if inner is not None:
            return _check(*inner)
    name = _first_word(text) or kind.name
    if kind == duckdb.StatementType.MULTI:
        raise Refused(
            f"refused {name}: DuckDB runs it as several statements (as it does PIVOT), which kvw sql cannot check "
            f"one by one; write the pivot with GROUP BY and FILTER. {HOW}"
        )
    raise Refused(f"refused {name}: {HOW}")


def _explained(text: str) -> tuple[str, duckdb.StatementType] | None:
    """The statement an EXPLAIN [ANALYZE] [(options)] shows: the first suffix DuckDB parses as one statement."""
    for pos, _ in duckdb.tokenize(text)[1:]:
        try:
            (st,) = duckdb.extract_statements(text[pos:])
        except (duckdb.Error, ValueError):
            continue
        return st.query, st.type
    return None


def _first_word(text: str) -> str:
    for pos, kind in duckdb.tokenize(text):
        if kind in (duckdb.token_type.keyword, duckdb.token_type.identifier):
            word = text[pos:].split(None, 1)[0].split("(", 1)[0].upper()
            return "" if word in ("WITH", "FROM") else word
    return ""


def lock(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """After the connection's setup (views, filesystems): no extension installs, no further SET but
    ALLOWED_CONFIGS. Run statements that passed `check` on it."""
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET allow_community_extensions = false")
    con.execute("SET allowed_configs = [" + ", ".join(f"'{c}'" for c in ALLOWED_CONFIGS) + "]")
    con.execute("SET lock_configuration = true")
    return con


def locked_message(err: duckdb.Error) -> str | None:
    """DuckDB's refusal of a SET on a locked connection, as a `refused` line; None for any other error."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if "configuration has been locked" not in text:
        return None
    return f"refused SET: {text.removeprefix('Invalid Input Error: ')}. {HOW}"
