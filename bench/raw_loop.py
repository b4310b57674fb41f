"""Contender (c) of the benchmark: the raw loop, what a user could write by hand instead of hitstream.

    python -m bench.raw_loop --topic T --count N                     # the counting loop, no sinks
    python -m bench.raw_loop --topic T --count N --sinks --report R  # the blog's sinks, checked against R

One process, one thread of Python, no framework: one confluent-kafka consumer assigned to every partition of the
topic from the earliest offset, `consume(num_messages=10000)` batches, until `events` messages have been read.

Without sinks (the practical limit of Python over Kafka): orjson parse and a dict count per zipcode.

With the blog's sinks, per consumed batch:
  * parse each value with hitstream's data contract (`transforms.parse.parse_value`, reused as a user would reuse a
    parser), counting the dead letters;
  * Parquet: the batch's hits with pyarrow's `write_dataset`, hive-partitioned `zipcode=<z>/day=<yyyy-mm-dd>/`, one
    file per (zipcode, day) per batch;
  * zip_counts in a dict; the zipcodes the batch changed are upserted into a MariaDB table `(zip, count)` with
    SQLAlchemy Core (`INSERT ... ON DUPLICATE KEY UPDATE`, one transaction per batch) and sent to a Kafka topic
    (key zipcode, value JSON {"zipcode", "count"}) in update mode;
  * zip_window_counts (10-minute windows every 5 minutes, 2 minutes past, on the hittime) in a dict: the blog's
    memory table.
At the end the producer is flushed. `check()` compares the Parquet files, the table and the topic with the
generator's report.

What it leaves out compared with hitstream: no exactly-once (a crash between the Parquet write, the upsert and the
produce leaves the sinks out of step, and nothing records which offsets were written), no restart (no checkpoint:
a new run starts from the earliest offset and writes every hit again), no event-time lateness handling (no
watermark: every hit counts in its windows however late, and no window is ever final or dropped), no retries of a
failed write, and dead letters are only counted, not written anywhere.
"""
from __future__ import annotations

import argparse
import datetime
import json
import pickle
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Optional

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import sqlalchemy as sa
from confluent_kafka import Consumer, Producer, TopicPartition
from sqlalchemy.dialects.mysql import insert

from bench.reference import differences, expected, latest, read_topic, table_counts
from hitstream.generator import ensure_topic
from stack import mariadb
from transforms.kafka_source import KafkaSourceConfig, resolve_partitions
from transforms.parse import ParseError, parse_value
from transforms.sinks.parquet import dataset
from transforms.times import iso_utc

BATCH = 10_000
SLIDE_MS, WINDOW_MS, OFFSET_MS = 300_000, 600_000, 120_000
OPTIONAL_FIELDS = ("isp", "ip", "city", "state", "country", "user_id", "url")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_MS = datetime.timedelta(milliseconds=1)


def run_raw(bootstrap: str, topic: str, events: int, sinks: bool = False, workdir: Optional[str] = None,
            jdbc_url: Optional[str] = None) -> dict:
    """Read `events` messages of `topic` from the earliest offset; see the module docstring.

    Returns seconds (the loop), wall_seconds (with sinks, the loop plus their set-up), events_per_second (events
    over seconds) and peak_rss_mb (None: the loop runs in the caller's process). With `sinks`, also what it wrote:
    hits, dead_letters, hits_path (Parquet under `workdir`, a new temporary folder when None), jdbc_table (at
    `jdbc_url`, default the local stack's MariaDB), output_topic, kafka_messages, and zip_window_counts as rows
    [window_start, window_end, zipcode, count].
    """
    consumer = _consumer(bootstrap, topic)
    try:
        if sinks:
            return _run_with_sinks(consumer, bootstrap, topic, events, workdir, jdbc_url)
        return _run_counting(consumer, events)
    finally:
        consumer.close()


def _consumer(bootstrap: str, topic: str) -> Consumer:
    config = KafkaSourceConfig(bootstrap_servers=bootstrap, subscribe=(topic,), starting_offsets="earliest",
                               ending_offsets="latest", group_id=f"raw-{uuid.uuid4().hex}")
    consumer = Consumer(config.consumer_config())
    consumer.assign([TopicPartition(s.topic, s.partition, s.start) for s in resolve_partitions(config)])
    return consumer


def _run_counting(consumer: Consumer, events: int) -> dict:
    counts, seen = {}, 0
    started = time.perf_counter()
    while seen < events:
        for message in consumer.consume(num_messages=BATCH, timeout=1.0):
            if message.error() is not None:
                continue
            seen += 1
            try:
                zipcode = orjson.loads(message.value()).get("zipcode")
            except (orjson.JSONDecodeError, AttributeError):
                continue
            counts[zipcode] = counts.get(zipcode, 0) + 1
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "wall_seconds": seconds, "events_per_second": events / seconds, "peak_rss_mb": None}


def _run_with_sinks(consumer: Consumer, bootstrap: str, topic: str, events: int, workdir: Optional[str],
                    jdbc_url: Optional[str]) -> dict:
    wall_started = time.perf_counter()
    run_id = uuid.uuid4().hex[:8]
    hits_path = Path(workdir or tempfile.mkdtemp(prefix="raw-loop-")) / f"raw-{run_id}" / "hits"
    if jdbc_url is None:
        jdbc_url = mariadb.url()
    engine = sa.create_engine(jdbc_url)
    table = sa.Table(f"zip_test_raw_{run_id}", sa.MetaData(), sa.Column("zip", sa.String(64), primary_key=True),
                     sa.Column("count", sa.BigInteger, nullable=False))
    table.metadata.create_all(engine)
    upsert = insert(table)
    upsert = upsert.on_duplicate_key_update(count=upsert.inserted["count"])
    output_topic = f"{topic}-raw-counts-{run_id}"
    ensure_topic(bootstrap, output_topic, 1)
    producer = Producer({"bootstrap.servers": bootstrap})

    zip_counts, windows = {}, {}
    seen = hits_total = dead_letters = kafka_messages = batch_number = 0
    started = time.perf_counter()
    while seen < events:
        batch = consumer.consume(num_messages=BATCH, timeout=1.0)
        hits, changed = [], set()
        for message in batch:
            if message.error() is not None:
                continue
            seen += 1
            try:
                hit = parse_value(message.value())
            except ParseError:
                dead_letters += 1
                continue
            hit["partition"], hit["offset"] = message.partition(), message.offset()
            hit["kafka_timestamp"] = message.timestamp()[1]
            hits.append(hit)
            zipcode = hit["zipcode"]
            zip_counts[zipcode] = zip_counts.get(zipcode, 0) + 1
            changed.add(zipcode)
            for start in window_starts((hit["hittime"] - _EPOCH) // _MS):
                key = (start, zipcode)
                windows[key] = windows.get(key, 0) + 1
        if not hits:
            continue
        write_hits(hits, hits_path, topic, batch_number)
        batch_number += 1
        hits_total += len(hits)
        rows = [{"zip": zipcode, "count": zip_counts[zipcode]} for zipcode in changed]
        with engine.begin() as connection:
            connection.execute(upsert, rows)
        for row in rows:
            producer.produce(output_topic, key=row["zip"].encode(),
                             value=orjson.dumps({"zipcode": row["zip"], "count": row["count"]}))
        kafka_messages += len(rows)
        producer.poll(0)  # serve delivery reports, so the producer's queue does not fill up
    unsent = producer.flush(60)
    seconds = time.perf_counter() - started
    engine.dispose()
    if unsent:
        raise RuntimeError(f"raw loop: {unsent} messages to {output_topic} not delivered within 60 s")
    window_rows = [[iso_utc(_EPOCH + start * _MS), iso_utc(_EPOCH + (start + WINDOW_MS) * _MS), zipcode, count]
                   for (start, zipcode), count in sorted(windows.items())]
    return {"seconds": seconds, "wall_seconds": time.perf_counter() - wall_started,
            "events_per_second": events / seconds, "peak_rss_mb": None, "hits": hits_total,
            "dead_letters": dead_letters, "hits_path": str(hits_path), "jdbc_table": table.name,
            "output_topic": output_topic, "kafka_messages": kafka_messages, "zip_window_counts": window_rows}


def window_starts(ms: int) -> tuple:
    """Starts (epoch ms) of the windows holding a hit at `ms`: a window is twice the slide, so there are two, the one
    from the last boundary at or before `ms` and the one a slide earlier."""
    start = (ms - OFFSET_MS) // SLIDE_MS * SLIDE_MS + OFFSET_MS
    return start, start - SLIDE_MS


def write_hits(hits: list, path: Path, topic: str, batch_number: int) -> None:
    """Parsed hits (parse_value's dicts, plus partition, offset and kafka_timestamp) -> one Parquet file per
    (zipcode, day) under `path`, hive layout; the partition columns live in the directory names only."""
    columns = {"hittime": pa.array([h["hittime"] for h in hits], pa.timestamp("us", tz="UTC")),
               "zipcode": pa.array([h["zipcode"] for h in hits], pa.string())}
    for name in OPTIONAL_FIELDS:
        columns[name] = pa.array([h[name] for h in hits], pa.string())
    columns["day"] = pa.array([h["day"] for h in hits], pa.string())
    columns["topic"] = pa.array([topic] * len(hits), pa.string())
    for name, kind in (("partition", pa.int32()), ("offset", pa.int64()), ("kafka_timestamp", pa.int64())):
        columns[name] = pa.array([h[name] for h in hits], kind)
    partitioning = ds.partitioning(pa.schema([("zipcode", pa.string()), ("day", pa.string())]), flavor="hive")
    # overwrite_or_ignore: earlier batches' files stay; each batch's names are new, so none is overwritten.
    ds.write_dataset(pa.table(columns), str(path), format="parquet", partitioning=partitioning,
                     basename_template=f"part-{batch_number:06d}-{{i}}.parquet",
                     existing_data_behavior="overwrite_or_ignore")


def parquet_hits(path: str) -> dict:
    """{zipcode: hits} in the Parquet files under `path`; zipcodes read as strings (02134 stays 02134)."""
    table = dataset(path).to_table(columns=["zipcode"])
    return {row["values"]: row["counts"] for row in pc.value_counts(table["zipcode"]).to_pylist()}


def parquet_day_mismatches(path: str) -> int:
    """Rows whose `day=` directory is not the UTC day of their hittime."""
    table = dataset(path).to_table(columns=["hittime", "day"])
    return len(table) - pc.sum(pc.equal(pc.strftime(table["hittime"], "%Y-%m-%d"), table["day"])).as_py()


def check(result: dict, report, bootstrap: str, jdbc_url: Optional[str] = None) -> list:
    """Problems with what run_raw(..., sinks=True) wrote, one line each; [] when every sink equals the reference.

    The reference is the generator's report (`zip_counts`, `malformed`, and `events` for the windows when it kept
    them), never the loop's own counts."""
    want = dict(report.zip_counts)
    problems = [f"parquet: {d}" for d in differences(want, parquet_hits(result["hits_path"]))]
    wrong_days = parquet_day_mismatches(result["hits_path"])
    if wrong_days:
        problems.append(f"parquet: {wrong_days} hits under a day= directory that is not their hittime's UTC day")
    table = table_counts(jdbc_url or mariadb.url(), result["jdbc_table"])
    problems += [f"mariadb: {d}" for d in differences(want, table)]
    problems += [f"kafka: {d}" for d in differences(want, latest(read_topic(bootstrap, result["output_topic"]),
                                                                 False))]
    if report.events:
        got = {(start, end, zipcode): count for start, end, zipcode, count in result["zip_window_counts"]}
        problems += [f"zip_window_counts: {d}" for d in differences(expected(report)["zip_window_counts"], got)]
    if result["dead_letters"] != report.malformed:
        problems.append(f"dead letters: {result['dead_letters']}, want {report.malformed}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True, help="messages to read (the topic's message count)")
    parser.add_argument("--sinks", action="store_true", help="write the blog's sinks (Parquet, MariaDB, Kafka)")
    parser.add_argument("--workdir", default=None, help="where the Parquet files go (default: a temp dir)")
    parser.add_argument("--jdbc-url", default=None, help="SQLAlchemy URL (default: the local stack's MariaDB)")
    parser.add_argument("--report", default=None, help="with --sinks: check against this pickled produce report")
    args = parser.parse_args(argv)
    result = run_raw(args.bootstrap_servers, args.topic, args.count, args.sinks, args.workdir, args.jdbc_url)
    print(json.dumps({k: v for k, v in result.items() if k != "zip_window_counts"}, indent=2))
    if not (args.sinks and args.report):
        return 0
    with open(args.report, "rb") as source:
        report = pickle.load(source)
    problems = check(result, report, args.bootstrap_servers, args.jdbc_url)
    print("\n".join(problems) or "equal to the reference (Parquet, MariaDB, Kafka, windows, dead letters)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
