"""The memory tables: one DuckDB database per process (`STORE`), written only by the memory sink, and read-only SQL
over them.

* in-process: `memory_sql("SELECT * FROM zip_window_counts ORDER BY count DESC")` -> list of tuples;
* against a running job: `hitstream sql "<query>"` (`hitstream/sql_client.py`), which calls the HTTP server in
  `hitstream/server.py` that `hitstream run` starts beside a job with a memory sink.

User SQL is read-only, three ways over: it must be a single SELECT (DuckDB's own parser says so); it runs in a
throw-away DuckDB connection holding copies of the tables it names, so even a statement that slipped through could
change nothing; and that connection has `enable_external_access=false` (no files, no COPY, no ATTACH, no
extensions) with its configuration locked. Results are capped at `row_limit` rows and queries at `timeout` seconds.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import re
import threading
from typing import Any, Dict, List, Sequence, Tuple

import duckdb
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from transforms.sinks.base import dedupe, key_columns_of
from transforms.sinks.tables import schema_of, to_arrow

_LOGGER = logging.getLogger(__name__)

DEFAULT_ROW_LIMIT = 1000
DEFAULT_TIMEOUT = 30.0
MAX_QUERY_CHARS = 20_000

TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# DuckDB settings of every connection here: no file system, no Python-variable scans, UTC.
_SAFE_CONFIG = {"enable_external_access": False, "python_enable_replacements": False,
                "autoinstall_known_extensions": False, "autoload_known_extensions": False}


class SqlError(ValueError):
    """A user query that was refused or failed. The message says why."""


@dataclasses.dataclass(frozen=True)
class SqlResult:
    columns: Tuple[str, ...]
    rows: List[tuple]
    truncated: bool = False

    def to_json(self) -> Dict[str, Any]:
        return {"columns": list(self.columns), "rows": [[_json_value(v) for v in row] for row in self.rows],
                "truncated": self.truncated}

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "SqlResult":
        return cls(tuple(data["columns"]), [tuple(row) for row in data["rows"]], bool(data.get("truncated")))

    def __str__(self) -> str:
        table = Table()
        for name in self.columns:
            table.add_column(name)
        for row in self.rows:
            table.add_row(*("null" if v is None else str(v) for v in row))
        if self.truncated:
            table.caption = f"only the first {len(self.rows)} rows"
        console = Console(width=160, force_terminal=False)
        with console.capture() as captured:
            console.print(table)
        return captured.get().rstrip("\n")


def _json_value(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _duckdb_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "VARCHAR"
    if pa.types.is_int32(arrow_type):
        return "INTEGER"
    if pa.types.is_integer(arrow_type):
        return "BIGINT"
    if pa.types.is_boolean(arrow_type):
        return "BOOLEAN"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMPTZ" if arrow_type.tz else "TIMESTAMP"
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return "BLOB"
    if pa.types.is_floating(arrow_type):
        return "DOUBLE"
    raise TypeError(f"memory sink: no DuckDB column type for {arrow_type}")


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:", config=dict(_SAFE_CONFIG))
    con.execute("SET TimeZone = 'UTC'")
    return con


@dataclasses.dataclass
class _TableInfo:
    columns: Tuple[str, ...]
    key_columns: Tuple[str, ...]
    schema: pa.Schema


class MemoryStore:
    """The process's memory tables, in one DuckDB database that only the sink writes."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._con = _connect()
        self._tables: Dict[str, _TableInfo] = {}

    # -- writes (the sink) ---------------------------------------------------------------------------------------

    def _ensure_table(self, name: str, sample: tuple) -> _TableInfo:
        info = self._tables.get(name)
        if info is not None:
            return info
        schema = schema_of(type(sample), sample)
        key_columns = key_columns_of(sample)
        columns = ", ".join(f"{_quote(f.name)} {_duckdb_type(f.type)}" for f in schema)
        self._con.execute(f"CREATE TABLE {_quote(name)} ({columns})")
        info = _TableInfo(tuple(schema.names), key_columns, schema)
        self._tables[name] = info
        return info

    @contextlib.contextmanager
    def _keyed_batch(self, name: str, rows: Sequence[tuple]):
        """Under the lock, `rows` registered as `_batch`; yields the SQL that matches a table row `t` to its batch
        row `b` by key (null keys match, as in GROUP BY)."""
        with self._lock:
            info = self._ensure_table(name, rows[0])
            self._con.register("_batch", to_arrow(rows, info.schema))
            try:
                yield " AND ".join(f"t.{_quote(c)} IS NOT DISTINCT FROM b.{_quote(c)}" for c in info.key_columns)
            finally:
                self._con.unregister("_batch")

    def upsert(self, name: str, rows: Sequence[tuple]) -> None:
        """Insert rows, replacing any row with the same key."""
        rows = dedupe(rows)
        if not rows:
            return
        with self._keyed_batch(name, rows) as match:
            try:
                self._con.execute("BEGIN TRANSACTION")
                self._con.execute(f"DELETE FROM {_quote(name)} t USING _batch b WHERE {match}")
                self._con.execute(f"INSERT INTO {_quote(name)} SELECT * FROM _batch")
                self._con.execute("COMMIT")
            except Exception:
                self._con.execute("ROLLBACK")
                raise

    def insert_new(self, name: str, rows: Sequence[tuple]) -> None:
        """Append mode: insert rows whose key is not in the table yet (a replay adds nothing)."""
        rows = dedupe(rows)
        if not rows:
            return
        with self._keyed_batch(name, rows) as match:
            self._con.execute(
                f"INSERT INTO {_quote(name)} SELECT * FROM _batch b "
                f"WHERE NOT EXISTS (SELECT 1 FROM {_quote(name)} t WHERE {match})")

    def replace(self, name: str, rows: Sequence[tuple]) -> None:
        """Complete mode: the table becomes exactly `rows`, atomically for readers."""
        with self._lock:
            if not rows:
                if name in self._tables:
                    self._con.execute(f"DELETE FROM {_quote(name)}")
                return
            info = self._ensure_table(name, rows[0])
            batch = to_arrow(list(rows), info.schema)
            self._con.register("_batch", batch)
            try:
                self._con.execute("BEGIN TRANSACTION")
                self._con.execute(f"DELETE FROM {_quote(name)}")
                self._con.execute(f"INSERT INTO {_quote(name)} SELECT * FROM _batch")
                self._con.execute("COMMIT")
            except Exception:
                self._con.execute("ROLLBACK")
                raise
            finally:
                self._con.unregister("_batch")

    def drop(self, name: str) -> None:
        with self._lock:
            if self._tables.pop(name, None) is not None:
                self._con.execute(f"DROP TABLE {_quote(name)}")

    def tables(self) -> List[str]:
        with self._lock:
            return sorted(self._tables)

    # -- reads (users) -------------------------------------------------------------------------------------------

    def query(self, sql: str, row_limit: int = DEFAULT_ROW_LIMIT, timeout: float = DEFAULT_TIMEOUT) -> SqlResult:
        """Run one read-only SELECT over copies of the memory tables it names. Raises SqlError."""
        statement = check_read_only(sql)
        with self._lock:
            names = _referenced_tables(statement, set(self._tables)) or set(self._tables)
            copies = {name: self._con.sql(f"SELECT * FROM {_quote(name)}").to_arrow_table()
                      for name in names}
        con = _connect()
        try:
            for name, table in copies.items():
                con.register(name, table)
            con.execute("SET lock_configuration = true")
            timer = threading.Timer(timeout, con.interrupt)
            timer.daemon = True
            timer.start()
            try:
                cursor = con.execute(statement)
                columns = tuple(d[0] for d in cursor.description or ())
                rows = cursor.fetchmany(row_limit + 1)
            except duckdb.Error as error:
                if not timer.is_alive():
                    raise SqlError(f"query cancelled after {timeout:g}s") from None
                raise SqlError(str(error).splitlines()[0]) from None
            finally:
                timer.cancel()
        finally:
            con.close()
        return SqlResult(columns, rows[:row_limit], truncated=len(rows) > row_limit)


def check_read_only(sql: str) -> str:
    """The single SELECT in `sql`, or SqlError. DuckDB's parser decides what a statement is."""
    if not isinstance(sql, str) or not sql.strip():
        raise SqlError("empty query")
    if len(sql) > MAX_QUERY_CHARS:
        raise SqlError(f"query longer than {MAX_QUERY_CHARS} characters")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as error:
        raise SqlError(str(error).splitlines()[0]) from None
    if len(statements) != 1:
        raise SqlError(f"one statement per query, got {len(statements)}")
    statement = statements[0]
    if statement.type != duckdb.StatementType.SELECT:
        raise SqlError(f"only SELECT is allowed on memory tables (read-only), got {statement.type.name}")
    return statement.query


def _referenced_tables(sql: str, known: set) -> set:
    try:
        names = duckdb.get_table_names(sql, qualified=False)
    except (duckdb.Error, TypeError):
        try:
            names = duckdb.get_table_names(sql)
        except duckdb.Error:
            return set()
    return {name for name in names if name in known}


STORE = MemoryStore()


def memory_sql(query: str, row_limit: int = DEFAULT_ROW_LIMIT) -> List[tuple]:
    """Rows of a read-only SELECT over this process's memory tables (e.g. while a LOOPBACK job runs)."""
    return STORE.query(query, row_limit).rows


def memory_sql_result(query: str, row_limit: int = DEFAULT_ROW_LIMIT, timeout: float = DEFAULT_TIMEOUT
                      ) -> SqlResult:
    """As `memory_sql`, with column names and whether the row limit cut the result (for the dashboard)."""
    return STORE.query(query, row_limit, timeout)
