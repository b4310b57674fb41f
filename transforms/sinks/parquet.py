"""The Parquet file sink: the blog's `partitionBy("zipcode", "day")` files, each Kafka record exactly once.

Layout (Hive, as Spark writes it), under a base path:

    <base>/zipcode=94107/day=2026-11-23/part-<txn>-00000.parquet

The partition columns (default `zipcode,day`, configurable) are taken out of the data files, as Spark does, and are
read back from the directory names: a new partition is a new directory, visible to `pyarrow.dataset`, to DuckDB's
`read_parquet('<base>/**/*.parquet', hive_partitioning = true)` and to Spark with no ADD PARTITION step (the blog's
caveat). Values are percent-encoded in directory names, and a null is `__HIVE_DEFAULT_PARTITION__`. pyarrow infers
digit-only zipcodes as integers (dropping leading zeros) unless told otherwise, and so do DuckDB and Spark: read
with `dataset()` (pyarrow), `duckdb_source()` (DuckDB) or `spark_schema()` (Spark) here, which keep them strings.
Rows without a `day` field get it from `window_start` (WindowCount) or `kafka_timestamp` (DeadLetter).

Only append mode, as Spark's file sink: a file cannot take back a row. Update and complete are refused when the
pipeline is built.

**Exactly once per Kafka record (topic, partition, offset)**, across retries, replays, kills and restarts, with a
commit log (JSON lines, fsynced) in the checkpoint dir (`<checkpoint>/sinks/parquet-<name>/`, or
`<base>/_hitstream_commits/` without one), and an flock so that every writer of the same base path takes turns:

1. Under the lock, catch up with the log, and drop the batch's rows whose offset is already committed for its
   (topic, partition). The log keeps, per (topic, partition), the committed offsets as ranges: a single range for a
   partition read in order, and exact even when a runner splits a partition's reads and delivers them out of order
   (a plain "highest offset written" would then skip records that were never written). Gaps (offsets that were
   dead letters, not hits) more than `dedupe_horizon` offsets behind the newest committed one are closed, to keep
   the log small: a record is never replayed that far behind its partition's committed position.
2. Write one file per partition directory to `<base>/_temporary/<txn>-N.parquet.tmp`, fsync it and the folder.
   No reader looks there (`_` folders and `.tmp` names are skipped by pyarrow, DuckDB's `*.parquet` and Spark).
3. Append the transaction (its files, and the offset ranges it covers) to the log and fsync: the commit point.
4. Rename each file into its partition directory. A rename is atomic: a reader sees a whole file or none.

After a kill, the next writer (at setup) rolls committed transactions forward (renames their remaining temp files)
and deletes temp files of transactions that never reached the log; the replayed records of those are written again,
and records that did reach the log are skipped. A torn last log line is an uncommitted transaction. The log is
compacted to one line of ranges every `compact_every` transactions.

A log line that is whole (it ends in a newline) but is not JSON, or not a transaction of this shape, was written by
something else: the sink refuses it, naming the file, when the pipeline is built and again when a writer sets up,
and never starts from an empty log in its place (that would write every record again). A log of another base
path is never read: the log's folder in the checkpoint dir is named by a digest of the base path.

Rows without Kafka coordinates (WindowCount in append mode) are made exactly-once by their idempotency key
(window and zipcode), kept in the log the same way.

A transaction holds up to ROWS_PER_COMMIT records: the writer keeps a bundle's records as Arrow columns until it has
that many or the bundle ends (ParquetWriter), so its files are few and large while its memory stays small.

The commit protocol needs one POSIX file system shared by every writer (rename, flock), such as a local disk with
Prism, the DirectRunner or a local Flink/Spark. Object stores (gs://, s3://) are not supported by this build.
"""
from __future__ import annotations

import bisect
import contextlib
import datetime
import fcntl
import hashlib
import logging
import os
import re
import threading
import time
import urllib.parse
import uuid
from typing import BinaryIO, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Type

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transforms.durable import fsync_dir, write_atomically
from transforms.rows import DeadLetter, Hit, Snapshot
from transforms.sinks.base import RetryPolicy, Sink, SinkWriter, idempotency_key
from transforms.sinks.tables import schema_of, to_arrow
from transforms.times import from_millis, utc_day

_LOGGER = logging.getLogger(__name__)

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
TEMP_DIR = "_temporary"
DEFAULT_COMMIT_DIR = "_hitstream_commits"
LOG_NAME = "commits.log"
LOCK_NAME = "lock"
DEFAULT_PARTITION_BY = ("zipcode", "day")
DEFAULT_DEDUPE_HORIZON = 10_000_000
DEFAULT_COMPACT_EVERY = 500
# The sink converts every CONVERT_EVERY rows to Arrow and commits ROWS_PER_COMMIT records at a time (or at a bundle's
# end). Held as Python rows until a commit, 100,000 hits took some 60 MB per bundle running: with the worker's
# concurrent bundles, most of a 1M-hit run's peak RSS.
CONVERT_EVERY = 20_000
ROWS_PER_COMMIT = 100_000
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# -- offset ranges ----------------------------------------------------------------------------------------------


class OffsetRanges:
    """A set of offsets as sorted, disjoint, inclusive [lo, hi] ranges; adjacent ranges merge."""

    def __init__(self, runs: Iterable[Sequence[int]] = ()) -> None:
        self._lo: List[int] = []
        self._hi: List[int] = []
        for lo, hi in runs:
            self.add(lo, hi)

    def __contains__(self, offset: int) -> bool:
        i = bisect.bisect_right(self._lo, offset) - 1
        return i >= 0 and self._hi[i] >= offset

    def __len__(self) -> int:
        return len(self._lo)

    def overlaps(self, lo: int, hi: int) -> bool:
        """Whether any offset in [lo, hi] is in the set."""
        i = bisect.bisect_right(self._lo, hi) - 1  # the last range that starts at or before hi
        return i >= 0 and self._hi[i] >= lo

    def add(self, lo: int, hi: int) -> None:
        i = bisect.bisect_left(self._hi, lo - 1)  # first range that ends at or after lo - 1
        j = bisect.bisect_right(self._lo, hi + 1)  # ranges before j start at or before hi + 1
        if i < j:
            lo, hi = min(lo, self._lo[i]), max(hi, self._hi[j - 1])
        self._lo[i:j] = [lo]
        self._hi[i:j] = [hi]

    def close_gaps_below(self, cutoff: int) -> None:
        """Merge every range that starts at or below `cutoff` into one: the gaps between them count as done."""
        j = bisect.bisect_right(self._lo, cutoff)
        if j > 1:
            self._lo[:j] = [self._lo[0]]
            self._hi[:j] = [max(self._hi[:j])]

    @property
    def high(self) -> int:
        return self._hi[-1] if self._hi else -1

    def runs(self) -> List[List[int]]:
        return [[lo, hi] for lo, hi in zip(self._lo, self._hi)]


# -- the commit log ---------------------------------------------------------------------------------------------


def _key_json(key: tuple) -> str:
    return orjson.dumps(key, default=_json_default).decode()


def _json_default(value):
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    raise TypeError(f"not JSON: {value!r}")


def log_entries(log_path: str, data: bytes, first_line: int = 1) -> List[dict]:
    """The transactions of a log's whole lines (`data` starts at line `first_line`); ValueError, naming the file and
    the line, for one that is not a transaction this sink wrote."""
    entries = []
    for number, line in enumerate(data.splitlines(), start=first_line):
        if not line.strip():
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            raise ValueError(_broken_log(log_path, number, f"it is not JSON ({error})")) from None
        if not _is_transaction(entry):
            raise ValueError(_broken_log(log_path, number, "it lacks the files, offsets and keys of a hitstream "
                                                           "Parquet commit"))
        entries.append(entry)
    return entries


def read_log(log_path: str) -> List[dict]:
    """Every transaction of the log's whole lines ([] when there is no log yet); `log_entries` refuses a bad one."""
    try:
        with open(log_path, "rb") as log:
            data = log.read()
    except FileNotFoundError:
        return []
    return log_entries(log_path, data[:data.rfind(b"\n") + 1])


def check_log(log_dir: str) -> None:
    """Refuse, before the job starts, a commit log that `log_entries` would refuse (see the module docstring)."""
    read_log(os.path.join(log_dir, LOG_NAME))


def _broken_log(log_path: str, number: int, why: str) -> str:
    return (f"parquet sink: commit log {log_path} cannot be used: line {number} is whole but {why}. hitstream "
            f"appends whole lines only, so something else changed the file. Restore it from a backup, or start "
            f"afresh with a new checkpoint dir and an empty Parquet path: an empty log would write every record "
            f"again.")


def _is_runs(runs) -> bool:
    return isinstance(runs, list) and all(
        isinstance(run, list) and len(run) == 2 and all(type(n) is int for n in run) for run in runs)


def _is_transaction(entry) -> bool:
    """The shape `ParquetWriter.write_rows` and `CommitLog.maybe_compact` write."""
    if not isinstance(entry, dict):
        return False
    offsets, files, keys = entry.get("offsets", []), entry.get("files", []), entry.get("keys", [])
    return (isinstance(offsets, list) and all(
                isinstance(o, list) and len(o) == 3 and isinstance(o[0], str) and type(o[1]) is int and _is_runs(o[2])
                for o in offsets) and
            isinstance(files, list) and all(
                isinstance(f, list) and len(f) == 2 and all(isinstance(name, str) for name in f) for f in files) and
            isinstance(keys, list) and all(isinstance(key, str) for key in keys) and
            ("txn" in entry or entry.get("snapshot") is True))


class CommitLog:
    """What a Parquet base path holds, as far as exactly-once goes: committed offsets and keys, and pending renames.

    All methods that read or change the log run under `locked()`.
    """

    def __init__(self, base_path: str, log_dir: str, dedupe_horizon: Optional[int] = DEFAULT_DEDUPE_HORIZON,
                 compact_every: int = DEFAULT_COMPACT_EVERY, durable: bool = True) -> None:
        self.base_path = base_path
        self.log_dir = log_dir
        self.log_path = os.path.join(log_dir, LOG_NAME)
        self.temp_dir = os.path.join(base_path, TEMP_DIR)
        self._horizon = dedupe_horizon
        self._compact_every = compact_every
        self._durable = durable
        self._offsets: Dict[Tuple[str, int], OffsetRanges] = {}
        self._keys: set = set()
        self._read_at = 0
        self._lines_read = 0  # the lines below _read_at, so that an error names the file's own line number
        self._read_log: Optional[BinaryIO] = None  # the log file as read so far (see _catch_up)
        self._txns_since_compaction = 0
        self._thread_lock = threading.Lock()
        os.makedirs(log_dir, exist_ok=True)
        os.makedirs(self.temp_dir, exist_ok=True)
        self._lock_file = open(os.path.join(log_dir, LOCK_NAME), "a+")

    def close(self) -> None:
        self._forget_read()
        self._lock_file.close()

    def _forget_read(self) -> None:
        if self._read_log is not None:
            self._read_log.close()
            self._read_log = None

    @contextlib.contextmanager
    def locked(self) -> Iterator["CommitLog"]:
        with self._thread_lock:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX)
            try:
                self._catch_up()
                yield self
            finally:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)

    # reading

    def _catch_up(self) -> None:
        """Apply log lines appended (by any writer) since the last read; re-read all after a compaction.

        The file read so far stays open: a compaction renames a new file over the log, and the open file keeps the
        old one's inode from being reused, so a changed inode always means a new file. (Compared by number alone,
        ext4 gave the second compaction's file the first log's inode again, and a writer that had read that first
        log went on reading the new one from its old position, in the middle of a line.)"""
        try:
            inode = os.stat(self.log_path).st_ino
        except FileNotFoundError:
            return
        read = self._read_log and os.fstat(self._read_log.fileno())
        if not read or read.st_ino != inode or read.st_size < self._read_at:
            self._forget_read()
            self._read_log = open(self.log_path, "rb")  # under the lock: no writer replaces it meanwhile
            self._offsets, self._keys, self._read_at, self._lines_read = {}, set(), 0, 0
        self._read_log.seek(self._read_at)
        data = self._read_log.read()
        if not data:
            return
        end = data.rfind(b"\n") + 1  # a torn last line is a transaction that never committed
        for entry in log_entries(self.log_path, data[:end], first_line=self._lines_read + 1):
            self._apply(entry)
            self._txns_since_compaction += 1
        self._read_at += end
        self._lines_read += data.count(b"\n", 0, end)
        if end < len(data):
            self._truncate_torn_tail(self._read_at)

    def _truncate_torn_tail(self, size: int) -> None:
        _LOGGER.warning("parquet sink: dropping a torn last line of %s (a write killed mid-commit)", self.log_path)
        with open(self.log_path, "r+b") as log:
            log.truncate(size)
            os.fsync(log.fileno())

    def _apply(self, entry: dict) -> None:
        for topic, partition, runs in entry.get("offsets", ()):
            ranges = self._offsets.setdefault((topic, partition), OffsetRanges())
            for lo, hi in runs:
                ranges.add(lo, hi)
            if self._horizon is not None:
                ranges.close_gaps_below(ranges.high - self._horizon)
        self._keys.update(entry.get("keys", ()))

    def entries(self) -> List[dict]:
        """Every complete line of the log (for recovery)."""
        return read_log(self.log_path)

    @property
    def keys(self) -> set:
        """The idempotency keys (as JSON) of the committed rows that have no Kafka coordinates."""
        return self._keys

    def fresh_rows(self, runs: list, topics: pa.ChunkedArray, partitions: pa.ChunkedArray,
                   offsets: pa.ChunkedArray) -> Optional[np.ndarray]:
        """Which records (the columns of a batch, with its `offset_runs`) are not in the files yet: None when none
        is, the usual case of a partition read on past its committed offsets; else a mask of the new ones."""
        overlapping = set()
        for topic, partition, batch_runs in runs:
            ranges = self._offsets.get((topic, partition))
            if ranges is not None and any(ranges.overlaps(lo, hi) for lo, hi in batch_runs):
                overlapping.add((topic, partition))
        if not overlapping:
            return None
        return np.array([(topic, partition) not in overlapping or offset not in self._offsets[(topic, partition)]
                         for topic, partition, offset in zip(topics.to_pylist(), partitions.to_pylist(),
                                                             offsets.to_pylist())], dtype=bool)

    def offsets(self) -> Dict[Tuple[str, int], List[List[int]]]:
        return {tp: ranges.runs() for tp, ranges in self._offsets.items()}

    # writing

    def append(self, entry: dict) -> None:
        """Append one transaction line and make it durable: the commit point."""
        line = orjson.dumps(entry) + b"\n"
        with open(self.log_path, "ab") as log:
            log.write(line)
            log.flush()
            if self._durable:
                os.fsync(log.fileno())
        self._catch_up()

    def recover(self) -> Tuple[int, int]:
        """Roll committed transactions forward and delete uncommitted temp files. Returns (renamed, deleted)."""
        renamed = deleted = 0
        referenced = set()
        for entry in self.entries():
            for temp, final in entry.get("files", ()):
                temp_path = os.path.join(self.base_path, temp)
                final_path = os.path.join(self.base_path, final)
                referenced.add(os.path.normpath(temp_path))
                if os.path.exists(temp_path):
                    if os.path.exists(final_path):
                        os.remove(temp_path)
                    else:
                        os.makedirs(os.path.dirname(final_path), exist_ok=True)
                        os.replace(temp_path, final_path)
                        renamed += 1
        for name in os.listdir(self.temp_dir):
            path = os.path.join(self.temp_dir, name)
            if os.path.normpath(path) not in referenced and os.path.isfile(path):
                os.remove(path)
                deleted += 1
        if renamed or deleted:
            _LOGGER.warning("parquet sink: recovered %s: %d committed file(s) renamed into place, %d uncommitted "
                            "temp file(s) deleted", self.base_path, renamed, deleted)
        return renamed, deleted

    def maybe_compact(self, force: bool = False) -> bool:
        """Rewrite the log as one line of ranges and keys (every rename is done when this is called)."""
        if not force and self._txns_since_compaction < self._compact_every:
            return False
        if self._durable:
            self._fsync_partition_dirs()
        entry = {"snapshot": True, "offsets": [[t, p, r.runs()] for (t, p), r in sorted(self._offsets.items())],
                 "keys": sorted(self._keys)}
        write_atomically(self.log_path, orjson.dumps(entry) + b"\n", temp=self.log_path + ".compact",
                         durable=self._durable)
        self._txns_since_compaction = 0
        self._catch_up()  # a new file: the held log's inode differs, so it is read from its start
        return True

    def _fsync_partition_dirs(self) -> None:
        # Renames must be durable before the transactions that name them leave the log.
        for root, dirs, _files in os.walk(self.base_path):
            dirs[:] = [d for d in dirs if not d.startswith(("_", "."))]
            fsync_dir(root)


# -- the writer -------------------------------------------------------------------------------------------------


def partition_value(row: tuple, column: str) -> Optional[str]:
    """A row's value for a partition column; `day` is derived when the row has none."""
    if column in row._fields:
        value = getattr(row, column)
    elif column == "day" and "window_start" in row._fields:
        value = utc_day(row.window_start)
    elif column == "day" and "kafka_timestamp" in row._fields:
        value = utc_day(from_millis(row.kafka_timestamp))
    else:
        raise ValueError(f"parquet sink: rows of type {type(row).__name__} have no column {column!r}")
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return str(value)


def partition_dir(columns: Sequence[str], values: Sequence[Optional[str]]) -> str:
    return os.path.join(*(f"{c}={HIVE_NULL if v is None else urllib.parse.quote(v, safe='')}"
                          for c, v in zip(columns, values))) if columns else ""


def _derivable(row_type: type, column: str) -> bool:
    fields = getattr(row_type, "_fields", ())
    return column in fields or (column == "day" and ("window_start" in fields or "kafka_timestamp" in fields))


class ParquetWriter(SinkWriter):
    """Batches -> committed Parquet files. See the module docstring for the protocol.

    Records (rows with Kafka coordinates) are held as Arrow columns until `rows_per_commit` of them are, or the bundle
    ends, and then committed as one transaction: a batch in Arrow takes a fraction of its Python rows' memory, so
    the sink can convert small batches and still write few, large files. Rows without coordinates commit at once.
    """

    TRANSIENT_ERRORS = (BlockingIOError, InterruptedError)

    def __init__(self, base_path: str, partition_by: Sequence[str], log_dir: str,
                 dedupe_horizon: Optional[int] = DEFAULT_DEDUPE_HORIZON, compact_every: int = DEFAULT_COMPACT_EVERY,
                 compression: str = "snappy", durable: bool = True, rows_per_commit: int = 1) -> None:
        self._base_path = base_path
        self._partition_by = tuple(partition_by)
        self._log_dir = log_dir
        self._horizon = dedupe_horizon
        self._compact_every = compact_every
        self._compression = compression
        self._durable = durable
        self._rows_per_commit = rows_per_commit
        self._log: Optional[CommitLog] = None
        self._held: List[Tuple[pa.Table, List[pa.ChunkedArray]]] = []  # (records, their partition columns)
        self._held_rows = 0
        self._held_offsets: Dict[Tuple[str, int], OffsetRanges] = {}  # per (topic, partition)
        self.skipped = 0  # rows dropped as already committed, for tests and logs

    def setup(self) -> None:
        os.makedirs(self._base_path, exist_ok=True)
        self._log = CommitLog(self._base_path, self._log_dir, self._horizon, self._compact_every, self._durable)
        with self._log.locked():
            self._log.recover()
            self._log.maybe_compact()

    def teardown(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def start_bundle(self) -> None:
        self._release_held()  # what a failed bundle held is replayed

    def _release_held(self) -> None:
        self._held, self._held_rows, self._held_offsets = [], 0, {}

    def finish_bundle(self) -> None:
        self._commit_held()

    def write_snapshot(self, snapshot: Snapshot) -> None:
        raise ValueError("parquet sink: complete mode is not supported by file sinks (Spark: 'Data source parquet "
                         "does not support Complete output mode'); use append")

    def write_rows(self, rows: List[tuple], batch_id: int) -> None:
        if not rows:
            return
        schema = schema_of(type(rows[0]), rows[0])
        # One conversion of the whole batch; the look-ups, offset runs and partition groups work on its columns, not
        # once per row (a flush holds tens of thousands of hits).
        table = to_arrow(rows, schema)
        columns = [self._partition_column(table, rows, column) for column in self._partition_by]
        if "offset" not in schema.names:  # rows without coordinates (WindowCount in append mode): by idempotency key
            self._commit_held()  # rows commit in the order they came
            self._commit(table, columns, [], [_key_json(idempotency_key(row)) for row in rows])
            return
        runs = offset_runs(table)
        if self._overlaps_held(runs):  # a replay of records held: commit those first, the log then skips them
            self._commit_held()
        self._held.append((table, columns))
        self._held_rows += table.num_rows
        for topic, partition, batch_runs in runs:
            held = self._held_offsets.setdefault((topic, partition), OffsetRanges())
            for lo, hi in batch_runs:
                held.add(lo, hi)
        if self._held_rows >= self._rows_per_commit:
            self._commit_held()

    def _overlaps_held(self, runs: list) -> bool:
        return any((topic, partition) in self._held_offsets and
                   any(self._held_offsets[(topic, partition)].overlaps(lo, hi) for lo, hi in batch_runs)
                   for topic, partition, batch_runs in runs)

    def _commit_held(self) -> None:
        """The held records as one transaction; they stay held if it fails, for the retry."""
        if not self._held:
            return
        table = pa.concat_tables([table for table, _ in self._held])
        columns = [pa.chunked_array([chunk for _, held in self._held for chunk in held[i].chunks])
                   for i in range(len(self._partition_by))]
        runs = [[topic, partition, ranges.runs()] for (topic, partition), ranges in sorted(self._held_offsets.items())]
        self._commit(table, columns, runs, [])
        self._release_held()

    def _commit(self, table: pa.Table, columns: List[pa.ChunkedArray], runs: list, keys: List[str]) -> None:
        """Rows (a table and its partition columns; with their offset runs, or their idempotency keys) -> files,
        committed in the log; rows the log has already are dropped."""
        log = self._log
        with log.locked():
            if runs:  # records: exactly once by Kafka coordinates
                fresh = log.fresh_rows(runs, table.column("topic"), table.column("partition"), table.column("offset"))
            else:
                fresh = np.array([key not in log.keys for key in keys], dtype=bool)
                fresh = None if fresh.all() else fresh
            if fresh is not None:  # some rows are in the files already: write the others
                mask = pa.array(fresh)
                table, columns = table.filter(mask), [column.filter(mask) for column in columns]
                skipped = len(fresh) - table.num_rows
                self.skipped += skipped
                _LOGGER.info("parquet sink: %d of %d row(s) already committed, skipped", skipped, len(fresh))
                if not table.num_rows:
                    return
                keys = [key for key, new in zip(keys, fresh) if new]
                runs = offset_runs(table) if runs else []
            txn = f"{int(time.time() * 1000):013d}-{uuid.uuid4().hex[:12]}"
            try:
                files = self._write_temp_files(txn, table, columns)
                log.append({"txn": txn, "files": files, "offsets": runs, "keys": keys, "rows": table.num_rows})
                for temp, final in files:
                    final_path = os.path.join(self._base_path, final)
                    os.makedirs(os.path.dirname(final_path), exist_ok=True)
                    os.replace(os.path.join(self._base_path, temp), final_path)
                log.maybe_compact()
            except OSError as error:
                # A full disk, a read-only mount: say where. Readers see no part of this transaction (its files
                # are still temp files, or it committed and the next writer's setup renames them).
                raise OSError(error.errno, f"parquet sink: writing under {self._base_path} (commit log "
                                           f"{log.log_path}) failed: {error}") from error

    def _write_temp_files(self, txn: str, table: pa.Table, columns: List[pa.ChunkedArray]) -> List[List[str]]:
        data = table.select([name for name in table.column_names if name not in self._partition_by])
        groups = partition_groups(columns, table.num_rows)
        files = []
        for n, (values, indexes) in enumerate(sorted(groups, key=lambda group: repr(group[0]))):
            part = data if len(groups) == 1 else data.take(pa.array(indexes))
            temp = os.path.join(TEMP_DIR, f"{txn}-{n:05d}.parquet.tmp")
            final = os.path.join(partition_dir(self._partition_by, values), f"part-{txn}-{n:05d}.parquet")
            with open(os.path.join(self._base_path, temp), "wb") as out:
                pq.write_table(part, out, compression=self._compression)
                out.flush()
                if self._durable:
                    os.fsync(out.fileno())
            files.append([temp, final])
        if self._durable:
            fsync_dir(os.path.join(self._base_path, TEMP_DIR))
        return files

    @staticmethod
    def _partition_column(table: pa.Table, rows: List[tuple], column: str) -> pa.ChunkedArray:
        """A partition column's directory values: the table's own string column, or derived row by row
        (`partition_value`: a day from a timestamp, a number as text)."""
        if column in table.column_names and table.schema.field(column).type == pa.string():
            return table.column(column)
        return pa.chunked_array([pa.array([partition_value(row, column) for row in rows], pa.string())])


def offset_runs(table: pa.Table) -> list:
    """The Kafka offsets of a table of records as the log keeps them: [[topic, partition, [[lo, hi], ...]], ...],
    sorted, each run of consecutive offsets inclusive."""
    if not table.num_rows:
        return []
    topics = pc.dictionary_encode(_one_chunk(table.column("topic")))
    codes = topics.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    partitions = table.column("partition").to_numpy().astype(np.int64)
    offsets = table.column("offset").to_numpy()
    order = np.lexsort((offsets, partitions, codes))
    codes, partitions, offsets = codes[order], partitions[order], offsets[order]
    # A run ends where the next offset is not the next number, or the next row is another partition's.
    ends = np.flatnonzero((np.diff(offsets) != 1) | (np.diff(partitions) != 0) | (np.diff(codes) != 0))
    runs: Dict[Tuple[str, int], List[List[int]]] = {}
    start = 0
    for end in [*ends.tolist(), len(offsets) - 1]:
        key = (topics.dictionary[codes[start]].as_py(), int(partitions[start]))
        runs.setdefault(key, []).append([int(offsets[start]), int(offsets[end])])
        start = end + 1
    # Duplicate offsets (the same record twice) leave a run [n, n] after one ending at n: merge them.
    return [[topic, partition, OffsetRanges(ranges).runs()] for (topic, partition), ranges in sorted(runs.items())]


def _one_chunk(column) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def partition_groups(columns: Sequence[pa.Array], length: int) -> List[Tuple[tuple, np.ndarray]]:
    """Rows by their partition values: [(values, row indexes)], None for a null value."""
    if not columns:
        return [((), np.arange(length))]
    group = np.zeros(length, dtype=np.int64)
    encoded = []
    for column in columns:
        codes = pc.dictionary_encode(_one_chunk(column), null_encoding="encode")
        encoded.append(codes)
        indices = codes.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        _, group = np.unique(group * len(codes.dictionary) + indices, return_inverse=True)
    order = np.argsort(group, kind="stable")
    starts = np.flatnonzero(np.diff(group[order], prepend=-1))
    groups = []
    for start, end in zip(starts.tolist(), [*starts[1:].tolist(), length]):
        first = order[start]
        values = tuple(codes.dictionary[codes.indices[first].as_py()].as_py() for codes in encoded)
        groups.append((values, order[start:end]))
    return groups


def commit_dir(base_path: str, checkpoint_dir: Optional[str], name: str) -> str:
    """Where a sink's commit log lives: per base path in the checkpoint dir, else next to the files."""
    if not checkpoint_dir:
        return os.path.join(base_path, DEFAULT_COMMIT_DIR)
    digest = hashlib.sha1(os.path.abspath(base_path).encode()).hexdigest()[:10]
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return os.path.join(checkpoint_dir, "sinks", f"parquet-{safe}-{digest}")


class WriteToParquet(Sink):
    """Rows in append mode -> Hive-partitioned Parquet files under `path`, each record once (module docstring).

    `row_type` (Hit by default; DeadLetter, WindowCount, ...) is checked against `partition_by` at build time.
    """

    def __init__(self, path: str, partition_by: Sequence[str] = DEFAULT_PARTITION_BY,
                 checkpoint_dir: Optional[str] = None, row_type: Type[tuple] = Hit, name: str = "",
                 dedupe_horizon: Optional[int] = DEFAULT_DEDUPE_HORIZON, compact_every: int = DEFAULT_COMPACT_EVERY,
                 max_batch_size: int = CONVERT_EVERY, rows_per_commit: int = ROWS_PER_COMMIT,
                 compression: str = "snappy", durable: bool = True,
                 retry: Optional[RetryPolicy] = None) -> None:
        if not path:
            raise ValueError("parquet sink: a base path is required (--parquet-path)")
        if "://" in path and not path.startswith("file://"):
            raise ValueError(f"parquet sink: {path} is not a local path; the exactly-once commit protocol needs a "
                             f"POSIX file system (rename, flock)")
        path = path[len("file://"):] if path.startswith("file://") else path
        partition_by = tuple(c.strip() for c in (partition_by.split(",") if isinstance(partition_by, str)
                                                 else partition_by) if c.strip())
        for column in partition_by:
            if not _COLUMN.match(column):
                raise ValueError(f"parquet sink: partition column {column!r} is not a column name")
            if not _derivable(row_type, column):
                raise ValueError(f"parquet sink: cannot partition {row_type.__name__} rows by {column!r}; their "
                                 f"columns are {', '.join(row_type._fields)}")
        if len(set(partition_by)) != len(partition_by):
            raise ValueError(f"parquet sink: partition columns repeat: {partition_by}")
        name = name or os.path.basename(os.path.normpath(path)) or "parquet"
        super().__init__(f"parquet.{name}", max_batch_size=max_batch_size, retry=retry)
        self._path = os.path.abspath(path)
        self._partition_by = partition_by
        self._log_dir = os.path.abspath(commit_dir(self._path, checkpoint_dir, name))
        check_log(self._log_dir)  # where the driver sees the path (a worker's own disk is checked at its setup)
        self._horizon = dedupe_horizon
        self._compact_every = compact_every
        self._compression = compression
        self._durable = durable
        self._rows_per_commit = rows_per_commit

    @property
    def path(self) -> str:
        return self._path

    def make_writer(self) -> ParquetWriter:
        return ParquetWriter(self._path, self._partition_by, self._log_dir, self._horizon, self._compact_every,
                             self._compression, self._durable, self._rows_per_commit)


class WriteDeadLettersToParquet(WriteToParquet):
    """DeadLetter rows -> `<path>/day=YYYY-MM-DD/part-*.parquet` (day of the Kafka timestamp), each record once."""

    def __init__(self, path: str, checkpoint_dir: Optional[str] = None, partition_by: Sequence[str] = ("day",),
                 **kwargs) -> None:
        super().__init__(path, partition_by=partition_by, checkpoint_dir=checkpoint_dir, row_type=DeadLetter,
                         name=kwargs.pop("name", "dead_letters"), **kwargs)


def dataset(path: str, partition_by: Sequence[str] = DEFAULT_PARTITION_BY):
    """A pyarrow dataset over the sink's files, partition columns read as strings (zipcode 02134 stays 02134)."""
    import pyarrow.dataset as ds
    partitioning = ds.partitioning(pa.schema([(c, pa.string()) for c in partition_by]), flavor="hive")
    return ds.dataset(path, format="parquet", partitioning=partitioning)


_SPARK_TYPES = {pa.string(): "STRING", pa.int32(): "INT", pa.int64(): "BIGINT", pa.bool_(): "BOOLEAN",
                pa.binary(): "BINARY", pa.timestamp("us", tz="UTC"): "TIMESTAMP"}


def spark_schema(row_type: type = Hit) -> str:
    """The DDL schema for Spark's reader, partition columns included as strings:
    `spark.read.schema(spark_schema()).parquet(path)`. Without it Spark's partition type inference reads zipcode
    02134 as the integer 2134, as pyarrow's and DuckDB's defaults do."""
    return ", ".join(f"`{field.name}` {_SPARK_TYPES[field.type]}" for field in schema_of(row_type))


def duckdb_source(path: str) -> str:
    """The DuckDB table expression over the sink's files (a new partition needs no extra step)."""
    glob = os.path.join(os.path.abspath(path), "**", "*.parquet").replace("'", "''")
    return f"read_parquet('{glob}', hive_partitioning = true, hive_types_autocast = false)"

