"""Spark's `foreach` and `foreachBatch` sinks: user code, for systems hitstream has no sink for, or for fan-out.

**ForeachWriter**, as in Spark: subclass it and implement

* `open(partition_id, epoch_id) -> bool`: prepare for one batch; return False to skip it;
* `process(row)`: one row (ZipCount, WindowCount, Hit, ...);
* `close(error)`: the batch ended, with the exception that ended it or None.

A batch is a bundle's rows in update and append modes (`partition_id` identifies the worker's writer instance,
`epoch_id` counts its batches), or one complete-mode Snapshot (`partition_id` 0, `epoch_id` the snapshot's
batch id). Unlike Spark's, Beam's bundles are not replayed with the same (partition_id, epoch_id), so make
`process` idempotent by the row's key (as the example below does) rather than by epoch. When `process` or `close`
raises, the bundle fails and the runner retries it.

**foreach_batch(fn)**: `fn(rows, batch_id)` once per batch, with the batch's rows as a list (Spark passes a
DataFrame; `pyarrow.Table.from_pylist([r._asdict() for r in rows])` makes one).

Example: one query fanned out to two systems, Kafka and SQLite, from the same rows:

    import sqlite3
    from confluent_kafka import Producer
    from transforms.sinks.foreach import ForeachWriter, WriteToForeach

    class KafkaAndSqlite(ForeachWriter):
        def __init__(self, bootstrap, topic, db_path):
            self.bootstrap, self.topic, self.db_path = bootstrap, topic, db_path

        def open(self, partition_id, epoch_id):
            self.producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True})
            self.db = sqlite3.connect(self.db_path)
            self.db.execute("CREATE TABLE IF NOT EXISTS zip_test (zip TEXT PRIMARY KEY, count INTEGER)")
            return True

        def process(self, row):
            self.producer.produce(self.topic, key=row.zipcode.encode(), value=f"{row.zipcode}:{row.count}")
            self.db.execute("INSERT INTO zip_test VALUES (?, ?) ON CONFLICT (zip) DO UPDATE SET count = "
                            "excluded.count", (row.zipcode, row.count))

        def close(self, error):
            if error is None:
                self.db.commit()
                if self.producer.flush(30):
                    raise RuntimeError("undelivered messages")
            self.db.close()

    counts | "FanOut" >> WriteToForeach(KafkaAndSqlite("127.0.0.1:9092", "zip-counts", "/tmp/zips.db"))

`KafkaAndSqliteFanOut` below is that example, written with hitstream's own sinks' writers so it also checks Kafka
deliveries and retries; `hitstream run --sink zip_counts=foreach:update` uses it by default.
"""
from __future__ import annotations

import logging
import uuid
from typing import Callable, Dict, List, Optional

from transforms.rows import Snapshot
from transforms.sinks.base import RetryPolicy, Sink, SinkWriter
from transforms.sinks.jdbc import WriteToJdbc
from transforms.sinks.kafka import WriteToKafka

_LOGGER = logging.getLogger(__name__)


class ForeachWriter:
    """Spark's ForeachWriter. Instances are pickled to the workers; open connections in `open`, not `__init__`."""

    def open(self, partition_id: int, epoch_id: int) -> bool:
        return True

    def process(self, row: tuple) -> None:
        raise NotImplementedError

    def close(self, error: Optional[BaseException]) -> None:
        pass


class _ForeachAdapter(SinkWriter):
    """Drives a ForeachWriter from the sink base's batches."""

    def __init__(self, writer: ForeachWriter) -> None:
        self._writer = writer
        self._partition_id = 0

    def setup(self) -> None:
        # A stable id per worker instance: Spark's partition id has no Beam equivalent.
        self._partition_id = uuid.uuid4().int & 0x7FFFFFFF

    def _run(self, rows, partition_id: int, epoch_id: int) -> None:
        if not self._writer.open(partition_id, epoch_id):
            self._writer.close(None)
            return
        try:
            for row in rows:
                self._writer.process(row)
        except BaseException as error:
            self._writer.close(error)
            raise
        self._writer.close(None)

    def write_rows(self, rows: List[tuple], batch_id: int) -> None:
        self._run(rows, self._partition_id, batch_id)

    def write_snapshot(self, snapshot: Snapshot) -> None:
        self._run(snapshot.rows, 0, snapshot.batch_id)


class WriteToForeach(Sink):
    """Rows or Snapshots -> a user ForeachWriter (open / process / close per batch)."""

    def __init__(self, writer: ForeachWriter, name: str = "", max_batch_size: int = 10_000) -> None:
        if not isinstance(writer, ForeachWriter):
            raise TypeError(f"foreach sink: {writer!r} is not a ForeachWriter (open/process/close)")
        super().__init__(f"foreach.{name or type(writer).__name__}", max_batch_size=max_batch_size,
                         retry=RetryPolicy(max_attempts=1))
        self._writer = writer

    def make_writer(self) -> SinkWriter:
        return _ForeachAdapter(self._writer)


class _BatchFnWriter(SinkWriter):
    def __init__(self, fn: Callable[[List[tuple], int], None]) -> None:
        self._fn = fn

    def write_rows(self, rows: List[tuple], batch_id: int) -> None:
        self._fn(list(rows), batch_id)

    def write_snapshot(self, snapshot: Snapshot) -> None:
        self._fn(list(snapshot.rows), snapshot.batch_id)


class WriteToForeachBatch(Sink):
    """Rows or Snapshots -> `fn(rows, batch_id)` per batch (Spark's foreachBatch)."""

    def __init__(self, fn: Callable[[List[tuple], int], None], name: str = "",
                 max_batch_size: int = 10_000) -> None:
        if not callable(fn):
            raise TypeError("foreach_batch: fn must be callable as fn(rows, batch_id)")
        super().__init__(f"foreach_batch.{name or getattr(fn, '__name__', 'fn')}", max_batch_size=max_batch_size,
                         retry=RetryPolicy(max_attempts=1))
        self._fn = fn

    def make_writer(self) -> SinkWriter:
        return _BatchFnWriter(self._fn)


def foreach_batch(fn: Callable[[List[tuple], int], None], name: str = "") -> WriteToForeachBatch:
    """`counts | foreach_batch(lambda rows, batch_id: ...)`: Spark's `writeStream.foreachBatch(fn)`."""
    return WriteToForeachBatch(fn, name)


class KafkaAndSqliteFanOut(ForeachWriter):
    """The fan-out example: every row to a Kafka topic (blog's `zipcode:count` text) and upserted into SQLite.

    Each batch is one SQLite transaction and one checked Kafka flush; a failure in either fails the batch, and the
    retry is harmless (upsert by key; Kafka consumers keep the latest count per zipcode).
    """

    def __init__(self, bootstrap_servers: str, topic: str, sqlite_url: str, table: Optional[str] = None,
                 query: str = "zip_counts", producer_config: Optional[Dict[str, str]] = None) -> None:
        self._kafka = WriteToKafka(bootstrap_servers, topic, "text", producer_config=producer_config).make_writer()
        self._jdbc = WriteToJdbc(sqlite_url, table, query=query).make_writer()
        self._ready = False
        self._rows: List[tuple] = []

    def open(self, partition_id: int, epoch_id: int) -> bool:
        if not self._ready:
            self._kafka.setup()
            self._jdbc.setup()
            self._ready = True
        self._kafka.start_bundle()
        self._rows = []
        return True

    def process(self, row: tuple) -> None:
        self._rows.append(row)

    def close(self, error: Optional[BaseException]) -> None:
        if error is not None or not self._rows:
            return
        self._kafka.write_rows(self._rows, 0)
        self._jdbc.write_rows(self._rows, 0)
        self._kafka.finish_bundle()
