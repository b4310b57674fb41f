"""The memory sink: Spark's `format("memory").queryName(name)`, a named in-process table you can query with SQL.

The table (in `memory_store.STORE`) holds the query's current result under the output-mode rules:

* update: rows are upserted by their key (zipcode; window and zipcode; ...);
* complete: each Snapshot replaces the whole table, in one transaction;
* append: rows are inserted, once per key (a replayed Kafka record or window does not appear twice).

The sink needs the job's workers in this process (Prism or the DirectRunner, LOOPBACK): the pipeline refuses it
elsewhere before the job is submitted (`runners.locality.check_local_runner`), as Spark would refuse a memory sink
on a cluster it cannot collect to.
"""
from __future__ import annotations

from typing import List

from transforms.rows import Snapshot
from transforms.sinks.base import RetryPolicy, Sink, SinkWriter
from transforms.sinks.memory_store import STORE, TABLE_NAME


class MemoryWriter(SinkWriter):
    def __init__(self, table: str, append: bool) -> None:
        self._table = table
        self._append = append

    def write_rows(self, rows: List[tuple], batch_id: int) -> None:
        if self._append:
            STORE.insert_new(self._table, rows)
        else:
            STORE.upsert(self._table, rows)

    def write_snapshot(self, snapshot: Snapshot) -> None:
        STORE.replace(self._table, snapshot.rows)


class WriteToMemory(Sink):
    """Rows or Snapshots -> the in-process table `table` (Spark's queryName), queryable with `memory_sql`.

    `append=True` inserts each key once (append mode); otherwise rows are upserted (update mode). Snapshots
    (complete mode) replace the table. `hitstream run` serves SQL over the tables (`hitstream sql`, the dashboard's
    SQL box) from the driver, whose process holds them.
    """

    def __init__(self, table: str, append: bool = False, max_batch_size: int = 10_000) -> None:
        super().__init__(f"memory.{table}", max_batch_size=max_batch_size, retry=RetryPolicy(max_attempts=1))
        if not TABLE_NAME.fullmatch(table or ""):  # not match: its `$` accepts a trailing newline
            raise ValueError(f"memory sink: table name {table!r} must match {TABLE_NAME.pattern}")
        self._table = table
        self._append = append

    def make_writer(self) -> MemoryWriter:
        return MemoryWriter(self._table, self._append)
