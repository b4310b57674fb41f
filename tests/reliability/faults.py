"""Shared by the fault tests: a scratch MariaDB database, reading each sink back, waiting for the sinks to settle,
and the one line of figures each test prints (fault, runs, records produced, lost, duplicated).

Sinks are read with plain clients (DuckDB over the Parquet files, SQLAlchemy, confluent-kafka), never through the
pipeline, so what they hold can be compared with the reference the generator or the fuzzer recorded.
"""
from __future__ import annotations

import collections
import contextlib
import datetime
import time
import uuid
from typing import Dict, Iterator, List, Set, Tuple

import apache_beam as beam
import duckdb
import orjson
import pyarrow as pa
import sqlalchemy as sa
from confluent_kafka import Consumer, TopicPartition

from apache_beam.options.pipeline_options import PipelineOptions

import runners
from pipelines.blog import build_pipeline
from stack.process import wait_for as wait_until  # noqa: F401 (the fault tests poll their sinks with it)

UTC = datetime.timezone.utc


@contextlib.contextmanager
def scratch_database(mysql_url: str) -> Iterator[str]:
    """A new database `hitstream_<uuid>` on the stack's MariaDB (the account may create those); yields its URL.
    The JDBC sinks then use their default table names without meeting other tests' tables."""
    name = f"hitstream_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(mysql_url, pool_pre_ping=True)  # the server may have restarted in between
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}`"))
    try:
        yield str(sa.engine.make_url(mysql_url).set(database=name).render_as_string(hide_password=False))
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


def table_rows(url: str, table: str) -> List[tuple]:
    """Every row of `table`, or [] while the sink has not created it yet (or the database is away)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(table):
                return []
            return [tuple(row) for row in conn.execute(sa.text(f"SELECT * FROM `{table}`"))]
    except sa.exc.OperationalError:
        return []
    finally:
        engine.dispose()


def window_rows(url: str) -> Dict[tuple, int]:
    """(window_start, zipcode) -> count of the JDBC sink's zip_window_counts table, window_start as naive UTC (as
    window_reference has it; SQLite gives ISO text back, MariaDB a datetime)."""
    rows = {}
    for start, _, zipcode, n in table_rows(url, "zip_window_counts"):
        moment = start if isinstance(start, datetime.datetime) else datetime.datetime.fromisoformat(start)
        rows[(moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment, zipcode)] = n
    return rows


def parquet_coordinates(path: str) -> List[Tuple[int, int]]:
    """(partition, offset) of every row in the Parquet files under `path`, duplicates kept."""
    try:
        return [tuple(row) for row in duckdb.connect().execute(
            f"SELECT \"partition\", \"offset\" FROM read_parquet('{path}/**/*.parquet', hive_partitioning=true)"
        ).fetchall()]
    except duckdb.IOException:  # no file committed yet
        return []


def consume_all(bootstrap: str, topic: str, timeout: float = 60.0) -> List[Tuple[int, int, bytes, bytes]]:
    """(partition, offset, key, value) of every message the topic holds now, in offset order per partition."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "logger": _QUIET})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions}
        wanted = {p: high for p, (low, high) in ends.items() if high > low}
        consumer.assign([TopicPartition(topic, p, ends[p][0]) for p in wanted])
        got, done = [], {p: ends[p][0] for p in wanted}
        deadline = time.monotonic() + timeout
        while any(done[p] < wanted[p] for p in wanted) and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=1.0):
                if message.error() is None:
                    got.append((message.partition(), message.offset(), message.key(), message.value()))
                    done[message.partition()] = message.offset() + 1
        return sorted(got)
    finally:
        consumer.close()


class _Quiet:
    """librdkafka's logger: reading while a broker restarts is expected to log connection errors."""

    def log(self, *args, **kwargs) -> None:
        pass


_QUIET = _Quiet()


def latest_counts(bootstrap: str, topic: str) -> Dict[str, int]:
    """The Kafka sink's zip_counts: per key, the highest count sent (counts only grow; a resend repeats one)."""
    latest: Dict[str, int] = {}
    for _, _, key, value in consume_all(bootstrap, topic):
        count = orjson.loads(value)["count"]
        latest[key.decode()] = max(latest.get(key.decode(), 0), count)
    return latest


def topic_reference(bootstrap: str, topic: str) -> Tuple[Set[Tuple[int, int]], Dict[str, int], int]:
    """What the input topic holds, read back: the (partition, offset) of every hit, the count per zipcode and the
    number of malformed messages. For tests whose producer may lose acknowledgements in an outage, so its own report
    cannot be the reference. A hit is a generator JSON object (it always has a user_id; none of the generator's
    MALFORMED_VALUES has one)."""
    hits, zip_counts, malformed = set(), collections.Counter(), 0
    for partition, offset, _, value in consume_all(bootstrap, topic):
        if b'"user_id"' in value:
            hits.add((partition, offset))
            zip_counts[orjson.loads(value)["zipcode"]] += 1
        else:
            malformed += 1
    return hits, dict(zip_counts), malformed


def dead_letter_coordinates(bootstrap: str, topic: str) -> List[Tuple[int, int]]:
    """(partition, offset) of the original message of every record on a dead-letter topic, duplicates kept."""
    return [(doc["partition"], doc["offset"]) for doc in
            (orjson.loads(value) for _, _, _, value in consume_all(bootstrap, topic))]


def late_flags(events, delay_s: int) -> list:
    """The lateness rule in plain Python, per partition in offset order: a hit is late when its hittime is older
    than its partition's highest hittime so far minus the delay. One flag per (hittime_ms, ..., partition, offset)
    event, in the given order."""
    flags, highest = {}, {}
    for hittime_ms, *_, partition, offset in sorted(events, key=lambda e: (e[-2], e[-1])):
        top = highest.get(partition)
        flags[(partition, offset)] = top is not None and hittime_ms < top - delay_s * 1000
        highest[partition] = hittime_ms if top is None else max(top, hittime_ms)
    return [flags[(e[-2], e[-1])] for e in events]


def window_reference(events) -> Dict[tuple, int]:
    """(window_start, zipcode) -> hits, for 10-minute windows every 5 minutes starting 2 minutes past the hour, from
    (hittime_ms, zipcode, ...) events, computed in DuckDB. window_start is a naive UTC datetime, as MariaDB returns."""
    db = duckdb.connect()
    # Handed over as Arrow columns: executemany inserts row by row, about a minute for 200,000 events.
    ref = pa.table({"hittime_ms": pa.array([e[0] for e in events], pa.int64()),
                    "zipcode": pa.array([e[1] for e in events], pa.string())})
    db.register("ref", ref)
    rows = db.execute("""
        WITH b AS (SELECT zipcode, (hittime_ms - 120000) // 300000 * 300000 + 120000 AS bucket FROM ref)
        SELECT start, zipcode, count(*) FROM (
            SELECT zipcode, bucket AS start FROM b UNION ALL SELECT zipcode, bucket - 300000 FROM b)
        GROUP BY ALL""").fetchall()
    return {(datetime.datetime.fromtimestamp(start / 1000, UTC).replace(tzinfo=None), zipcode): n
            for start, zipcode, n in rows}


def count_diff(got: Dict, want: Dict) -> Tuple[int, int]:
    """(lost, duplicated) between counts per key: what is missing from `got`, and what it has too much of."""
    lost = sum(max(0, n - got.get(key, 0)) for key, n in want.items())
    extra = sum(max(0, n - want.get(key, 0)) for key, n in got.items())
    return lost, extra


def record_diff(got: List[tuple], want: set) -> Tuple[int, int]:
    """(lost, duplicated) between records keyed by coordinates: missing ones, and copies beyond the first (or
    records that should not be there at all)."""
    seen = collections.Counter(got)
    lost = len(want - set(seen))
    extra = sum(n - 1 for n in seen.values()) + len(set(seen) - want)
    return lost, extra


def print_figures(capsys, fault: str, runs: int, produced: int, lost: int, duplicated: int, **more) -> None:
    """One line per test for the README's reliability table, shown even when pytest captures output."""
    extra = "".join(f" {key}={value}" for key, value in more.items())
    with capsys.disabled():
        print(f"\nFAULT {fault}: runs={runs} produced={produced} lost={lost} duplicated={duplicated}{extra}",
              flush=True)


def start_on_prism(args: List[str], streaming: bool = False):
    """The blog's pipeline built from `args` (hitstream run's options) and submitted to Prism: the running result."""
    options = PipelineOptions(list(args) + runners.pipeline_args("prism", streaming=streaming))
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, options)
    return pipeline.run()
