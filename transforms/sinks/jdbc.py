"""The JDBC-style database sink: the blog's MySQL `zip_test(zip, count)` table, through SQLAlchemy 2 Core.

* **URL.** Any SQLAlchemy URL: the embedded default is `sqlite:///hitstream-output/hitstream.db`, MySQL/MariaDB is
  `mysql+pymysql://user@host:3306/db`. When the URL has a user but no password, the password is read from
  `HITSTREAM_DB_PASSWORD` on the worker, so it is not pickled into the job graph. URLs are only ever logged masked
  (`render_as_string(hide_password=True)`).
* **Tables**, created if absent (the primary key is what upserts match on):

  | rows        | default table        | columns (primary key first)                                     |
  |-------------|----------------------|-----------------------------------------------------------------|
  | ZipCount    | `zip_test`           | zip, count  (the blog's)                                        |
  | IspCount    | `isp_counts`         | isp, count  (a null ISP is stored as '': a key cannot be null)  |
  | WindowCount | `zip_window_counts`  | window_start, window_end, zipcode, count  (UTC, microseconds)   |
  | Hit         | `hits`               | topic, partition, offset, then every field of the hit           |
  | DeadLetter  | `dead_letters`       | topic, partition, offset, kafka_timestamp, key, value, error... |

  Table and column names are checked against `IDENTIFIER` and quoted by SQLAlchemy, so `zip_test; DROP TABLE x` is
  refused before anything is built. An existing table is used as it is, provided its primary key (or a unique
  index) is the key columns: without one an upsert cannot find its row.
* **Writes.** Update and append rows are upserted by key with the dialect's own construct
  (`sqlalchemy.dialects.mysql.insert(...).on_duplicate_key_update`, `sqlite`/`postgresql`
  `insert(...).on_conflict_do_update`), one executemany per batch, in one transaction. A replayed row overwrites
  itself, so retries and replays do not duplicate.
* **Complete mode.** One transaction per Snapshot: upsert every row, then delete the keys the snapshot no longer
  has. Readers see the previous snapshot or the new one, never a mix, and the table then holds exactly the result.
* **Transient errors** (connection lost or refused: MySQL 2003/2006/2013/2055, server shutting down 1053, deadlock
  1213, lock wait 1205, too many connections 1040, a killed connection 1927/4031, SQLite "database is locked", a pool
  timeout) are retried on a fresh connection with backoff (`JDBC_RETRY`: 0.5 s doubling to at most 10 s, for about
  2 minutes), so a database restart or a short outage stalls the sink instead of failing the job; each retry is
  logged as a warning with the attempt number. An outage longer than that fails the bundle.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mysql as mysql_dialect, postgresql as postgresql_dialect, sqlite as sqlite_dialect

from transforms.catalog import ROW_TYPES
from transforms.rows import DeadLetter, Hit, IspCount, Snapshot, WindowCount, ZipCount
from transforms.sinks.base import DEFAULT_MAX_BATCH_SIZE, RetryPolicy, Sink, SinkWriter, call_with_retry

_LOGGER = logging.getLogger(__name__)

PASSWORD_ENV = "HITSTREAM_DB_PASSWORD"
DEFAULT_URL = "sqlite:///hitstream-output/hitstream.db"
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_CHUNK = 1000  # keys per DELETE ... IN (...)

# MySQL/MariaDB error codes after which the same statement may well succeed on a new connection.
MYSQL_TRANSIENT_CODES = frozenset({1040, 1053, 1205, 1213, 1927, 2003, 2006, 2013, 2055, 4031})

# A database restart takes tens of seconds: retry for about 2 minutes (0.5, 1, 2, 4, 8, then 10 s apart) before the
# bundle fails. Kafka sinks keep the shorter default: librdkafka already retries inside each attempt.
JDBC_RETRY = RetryPolicy(max_attempts=18, initial_backoff=0.5, max_backoff=10.0)


def validate_identifier(name: str, what: str = "table") -> str:
    """`name` if it is a plain SQL identifier, else ValueError. Quoting alone would let odd names through."""
    # fullmatch: with match, `$` also accepts a name that ends in a newline.
    if not isinstance(name, str) or not IDENTIFIER.fullmatch(name):
        raise ValueError(f"jdbc sink: {what} name {name!r} is refused: use letters, digits and _ only, starting with "
                         f"a letter or _, at most 64 characters ({IDENTIFIER.pattern})")
    return name


def mask_url(url: "str | sa.engine.URL") -> str:
    """The URL with its password replaced by ***, for logs and messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return "<invalid SQLAlchemy URL>"


def resolve_url(url: str) -> sa.engine.URL:
    """Parse `url`; when it names a user but no password, add the password from HITSTREAM_DB_PASSWORD, or else from
    the file named by HITSTREAM_DB_PASSWORD_FILE (a mounted secret; its trailing newline is not part of it)."""
    parsed = sa.engine.make_url(url)
    if not parsed.username or parsed.password is not None:
        return parsed
    password = os.environ.get(PASSWORD_ENV)
    path = os.environ.get(f"{PASSWORD_ENV}_FILE")
    if not password and path:
        try:
            with open(path, encoding="utf-8") as secret:
                password = secret.read().rstrip("\r\n")
        except OSError as error:
            raise ValueError(f"jdbc sink: {PASSWORD_ENV}_FILE={path} cannot be read ({error.strerror})") from None
    return parsed.set(password=password) if password else parsed


def _utc_naive(value: Optional[datetime.datetime]) -> Optional[datetime.datetime]:
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(datetime.timezone.utc).replace(tzinfo=None)


def _not_null(value: Optional[str]) -> str:
    return "" if value is None else value


def _datetime() -> sa.types.TypeEngine:
    return sa.DateTime().with_variant(mysql_dialect.DATETIME(fsp=6), "mysql", "mariadb")


def _string(length: int) -> sa.types.TypeEngine:
    return sa.String(length)


def _key_collation(engine: sa.engine.Engine) -> str:
    """MySQL/MariaDB's default collations fold case and ignore trailing spaces, so zipcodes "ab", "AB" and "ab "
    would share one row; keys must compare as Beam groups them, byte for byte. (SQLite and PostgreSQL do by
    default.)"""
    with engine.connect():
        pass  # the dialect learns whether the server is MariaDB on its first connection
    return "utf8mb4_nopad_bin" if engine.dialect.is_mariadb else "utf8mb4_0900_bin"


def _with_collation(column_type: sa.types.TypeEngine, collation: Optional[str]) -> sa.types.TypeEngine:
    if collation is None or not isinstance(column_type, sa.String):
        return column_type
    return sa.String(column_type.length, collation=collation)


@dataclasses.dataclass(frozen=True)
class Column:
    name: str  # SQL column
    field: str  # row field
    type: Callable[[], sa.types.TypeEngine]
    key: bool = False
    convert: Callable[[Any], Any] = lambda value: value


@dataclasses.dataclass(frozen=True)
class TableSpec:
    default_name: str
    columns: Tuple[Column, ...]

    @property
    def key_columns(self) -> Tuple[Column, ...]:
        return tuple(c for c in self.columns if c.key)

    def params(self, row: tuple) -> Dict[str, Any]:
        return {c.name: c.convert(getattr(row, c.field)) for c in self.columns}


def _hit_columns() -> Tuple[Column, ...]:
    key = (Column("topic", "topic", lambda: _string(249), True), Column("partition", "partition", sa.Integer, True),
           Column("offset", "offset", sa.BigInteger, True))
    rest = [Column("hittime", "hittime", _datetime, convert=_utc_naive)]
    rest += [Column(name, name, lambda: _string(255)) for name in
             ("zipcode", "isp", "ip", "city", "state", "country", "user_id")]
    rest += [Column("url", "url", lambda: _string(2048)), Column("day", "day", lambda: _string(10)),
             Column("kafka_timestamp", "kafka_timestamp", sa.BigInteger), Column("late", "late", sa.Boolean)]
    return key + tuple(rest)


TABLES: Dict[type, TableSpec] = {
    ZipCount: TableSpec("zip_test", (Column("zip", "zipcode", lambda: _string(64), True),
                                     Column("count", "count", sa.BigInteger))),
    IspCount: TableSpec("isp_counts", (Column("isp", "isp", lambda: _string(255), True, _not_null),
                                       Column("count", "count", sa.BigInteger))),
    WindowCount: TableSpec("zip_window_counts", (
        Column("window_start", "window_start", _datetime, True, _utc_naive),
        Column("window_end", "window_end", _datetime, True, _utc_naive),
        Column("zipcode", "zipcode", lambda: _string(64), True),
        Column("count", "count", sa.BigInteger))),
    Hit: TableSpec("hits", _hit_columns()),
    DeadLetter: TableSpec("dead_letters", (
        Column("topic", "topic", lambda: _string(249), True), Column("partition", "partition", sa.Integer, True),
        Column("offset", "offset", sa.BigInteger, True), Column("kafka_timestamp", "kafka_timestamp", sa.BigInteger),
        Column("key", "key", sa.LargeBinary), Column("value", "value", sa.LargeBinary),
        Column("error", "error", sa.Text), Column("step", "step", lambda: _string(64)))),
}


def _upsert(table: sa.Table, spec: TableSpec, dialect: str):
    keys = [c.name for c in spec.key_columns]
    others = [c.name for c in spec.columns if not c.key]
    if dialect in ("mysql", "mariadb"):
        statement = mysql_dialect.insert(table)
        return statement.on_duplicate_key_update({name: statement.inserted[name] for name in others})
    if dialect in ("sqlite", "postgresql"):
        statement = (sqlite_dialect if dialect == "sqlite" else postgresql_dialect).insert(table)
        return statement.on_conflict_do_update(index_elements=keys,
                                               set_={name: statement.excluded[name] for name in others})
    raise ValueError(f"jdbc sink: no upsert for the {dialect} dialect; use mysql, mariadb, sqlite or postgresql")


class JdbcWriter(SinkWriter):
    """Upserts and snapshot replacement in one table. See the module docstring."""

    def __init__(self, url: str, table: str, row_type: type, create: bool = True) -> None:
        self._url = url
        self._table_name = table
        self._spec = TABLES[row_type]
        self._create = create
        self._engine: Optional[sa.engine.Engine] = None

    def __repr__(self) -> str:
        return f"JdbcWriter({mask_url(self._url)}, {self._table_name})"

    def setup(self) -> None:
        url = resolve_url(self._url)
        kwargs: Dict[str, Any] = {"pool_pre_ping": True, "pool_recycle": 3600}
        if url.get_backend_name() == "sqlite":
            if url.database and url.database != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(url.database)), exist_ok=True)
            kwargs = {"connect_args": {"timeout": 30}}
        self._engine = sa.create_engine(url, **kwargs)
        if url.get_backend_name() == "sqlite":
            sa.event.listen(self._engine, "connect", _sqlite_pragmas)
        self._dialect = self._engine.dialect.name
        collation = self._call_setup(lambda: _key_collation(self._engine)) if self._dialect == "mysql" else None
        metadata = sa.MetaData()
        self._table = sa.Table(self._table_name, metadata,
                               *(sa.Column(c.name, _with_collation(c.type(), collation if c.key else None),
                                           primary_key=c.key, nullable=not c.key, autoincrement=False, quote=True)
                                 for c in self._spec.columns),
                               quote=True)
        _LOGGER.info("jdbc sink: table %s at %s", self._table_name, mask_url(url))
        if self._create:
            self._call_setup(lambda: self._create_table(metadata))
        self._call_setup(self._check_key)
        self._upsert = _upsert(self._table, self._spec, self._dialect)

    def _call_setup(self, fn: Callable[[], Any]) -> Any:
        def on_error(attempt: int, error: BaseException, will_retry: bool) -> None:
            if will_retry:
                _LOGGER.warning("jdbc sink: setting up %s failed (attempt %d of %d), retrying in about %.1f s: %s",
                                self._table_name, attempt, JDBC_RETRY.max_attempts,
                                JDBC_RETRY.nominal_backoff(attempt), str(error).splitlines()[0])
                self.on_retry(error)

        return call_with_retry(fn, policy=JDBC_RETRY, is_transient=self.is_transient, on_error=on_error)

    def _create_table(self, metadata: sa.MetaData) -> None:
        try:
            metadata.create_all(self._engine, checkfirst=True)
        except sa.exc.DBAPIError:
            # Several workers set up at once: another one created the table between our check and our CREATE.
            if not sa.inspect(self._engine).has_table(self._table_name):
                raise

    def _check_key(self) -> None:
        inspector = sa.inspect(self._engine)
        if not inspector.has_table(self._table_name):
            raise ValueError(f"jdbc sink: table {self._table_name} does not exist at {mask_url(self._url)}")
        wanted = {c.name for c in self._spec.key_columns}
        keys = [set(inspector.get_pk_constraint(self._table_name).get("constrained_columns") or ())]
        keys += [set(u["column_names"]) for u in inspector.get_unique_constraints(self._table_name)]
        keys += [set(i["column_names"]) for i in inspector.get_indexes(self._table_name) if i.get("unique")]
        if wanted not in keys:
            raise ValueError(
                f"jdbc sink: table {self._table_name} exists without a primary key or unique index on "
                f"({', '.join(sorted(wanted))}), so rows cannot be upserted; add one or choose another --jdbc-table")

    def teardown(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def is_transient(self, error: BaseException) -> bool:
        return is_transient_db_error(error)

    def on_retry(self, error: BaseException) -> None:
        if self._engine is not None:
            self._engine.dispose()  # drop pooled connections that may be broken

    def _params(self, rows: Sequence[tuple]) -> List[Dict[str, Any]]:
        return [self._spec.params(row) for row in rows]

    def write_rows(self, rows: List[tuple], batch_id: int) -> None:
        params = self._params(rows)
        with self._engine.begin() as conn:
            conn.execute(self._upsert, params)

    def write_snapshot(self, snapshot: Snapshot) -> None:
        params = self._params(snapshot.rows)
        key_names = [c.name for c in self._spec.key_columns]
        wanted = {tuple(p[name] for name in key_names) for p in params}
        key_columns = [self._table.c[name] for name in key_names]
        with self._engine.begin() as conn:
            if params:
                conn.execute(self._upsert, params)
            existing = {tuple(row) for row in conn.execute(sa.select(*key_columns))}
            vanished = sorted(existing - wanted, key=repr)
            for start in range(0, len(vanished), _CHUNK):
                chunk = vanished[start:start + _CHUNK]
                if len(key_columns) == 1:
                    condition = key_columns[0].in_([k[0] for k in chunk])
                else:
                    condition = sa.tuple_(*key_columns).in_(chunk)
                conn.execute(sa.delete(self._table).where(condition))


def _sqlite_pragmas(dbapi_connection, connection_record) -> None:
    # WAL lets readers (a user's sqlite3 shell, a test) read while the sink writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def is_transient_db_error(error: BaseException) -> bool:
    """Whether a SQLAlchemy/DBAPI error is worth retrying on a fresh connection."""
    if isinstance(error, (sa_exc.DisconnectionError, sa_exc.TimeoutError)):
        return True
    if not isinstance(error, sa_exc.DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    args = getattr(error.orig, "args", ()) or ()
    code = args[0] if args else None
    if isinstance(code, int) and code in MYSQL_TRANSIENT_CODES:
        return True
    return isinstance(error, sa_exc.OperationalError) and "database is locked" in str(error.orig)


class WriteToJdbc(Sink):
    """Rows (update/append: upsert by key) or Snapshots (complete: replace) -> a SQL table.

    `query` picks the row type and default table (zip_counts -> zip_test); `row_type` may be given instead.
    """

    def __init__(self, url: Optional[str] = None, table: Optional[str] = None, query: Optional[str] = None,
                 row_type: Optional[Type[tuple]] = None, create: bool = True,
                 max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, retry: Optional[RetryPolicy] = None) -> None:
        if row_type is None:
            if query not in ROW_TYPES:
                raise ValueError(f"jdbc sink: unknown query {query!r}; choose from {', '.join(ROW_TYPES)}")
            row_type = ROW_TYPES[query]
        if row_type not in TABLES:
            raise ValueError(f"jdbc sink: no table layout for {row_type.__name__} rows")
        table = validate_identifier(TABLES[row_type].default_name if table is None else table)
        url = url or DEFAULT_URL
        try:
            backend = sa.engine.make_url(url).get_backend_name()
        except sa_exc.ArgumentError:
            raise ValueError(f"jdbc sink: {mask_url(url)} is not a SQLAlchemy URL; write e.g. "
                             f"sqlite:///out.db or mysql+pymysql://user@host:3306/db") from None
        if backend not in ("mysql", "mariadb", "sqlite", "postgresql"):
            raise ValueError(f"jdbc sink: the {backend} database is not supported; use mysql, mariadb, sqlite "
                             f"or postgresql")
        super().__init__(f"jdbc.{table}", max_batch_size=max_batch_size, retry=retry or JDBC_RETRY)
        self._url = url
        self._table = table
        self._row_type = row_type
        self._create = create

    def make_writer(self) -> JdbcWriter:
        return JdbcWriter(self._url, self._table, self._row_type, self._create)
