"""Restart semantics with --checkpoint-dir, on Prism against the real Kafka and MariaDB.

- Two available-now runs over a growing topic: the second goes on from the first's counts (the totals cover both
  parts of the topic, while the second run reads only the new part).
- kill -9 at random moments while a producer writes, then restart, `scale(3, 20)` times; a final available-now
  drain; every sink then equals a reference computed from what the producer reported: 0 lost, 0 duplicated.

Sinks: hits -> Parquet (per Kafka record), zip_counts -> MariaDB complete (per key) and Kafka update (per key, last
value), zip_window_counts -> MariaDB update (per window and key), dead letters -> Parquet.
"""
from __future__ import annotations

import collections
import datetime
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import duckdb
import orjson
import pymysql
import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer, TopicPartition

from hitstream.generator import ProduceSpec, produce
from stack import mariadb
from tests.reliability.scale import scale

pytestmark = pytest.mark.timeout(3600)

REPO = Path(__file__).resolve().parents[2]
UTC = datetime.timezone.utc
WINDOW_SIZE_MS, WINDOW_PERIOD_MS, WINDOW_OFFSET_MS = 600_000, 300_000, 120_000


@pytest.fixture
def scratch_db():
    """A scratch MariaDB database (hitstream_<hex>), dropped afterwards; yields its SQLAlchemy URL."""
    name = f"hitstream_{uuid.uuid4().hex[:12]}"
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    yield mariadb.url().rsplit("/", 1)[0] + f"/{name}"
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


def job_args(topic: str, out_topic: str, db_url: str, work: Path, group: str) -> list:
    return [
        f"--topic={topic}", "--bootstrap-servers=127.0.0.1:9092", f"--group-id={group}",
        "--starting-offsets=earliest", "--watermark-delay=1 hour", "--console-num-rows=1",
        "--sink=hits=parquet", f"--parquet-path={work / 'hits'}",
        "--sink=zip_counts=jdbc:complete", "--sink=zip_counts=kafka:update", f"--output-topic={out_topic}",
        "--sink=zip_window_counts=jdbc:update", f"--jdbc-url={db_url}",
        f"--dead-letter-path={work / 'dead'}", f"--checkpoint-dir={work / 'checkpoint'}",
    ]


def start_job(args: list, trigger: str, log: Path, runner: str = "prism") -> subprocess.Popen:
    """`hitstream run` in its own process group, so one killpg takes the launcher, the worker and Prism."""
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "pipelines.blog", "--runner", runner, f"--trigger={trigger}",
                                 *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def drain(args: list, log: Path, runner: str = "prism") -> None:
    job = start_job(args, "available-now", log, runner)
    assert job.wait(timeout=900) == 0, f"the available-now drain failed; see {log}:\n{log.read_text()[-3000:]}"


def window_reference(events) -> dict:
    """(window_start, zipcode) -> count, independently in DuckDB: every event is in two 10-minute windows."""
    db = duckdb.connect()
    db.execute("CREATE TABLE ref (hittime_ms BIGINT, zipcode VARCHAR)")
    db.executemany("INSERT INTO ref VALUES (?, ?)", [(e[0], e[1]) for e in events])
    rows = db.execute(f"""
        WITH b AS (SELECT zipcode, (hittime_ms - {WINDOW_OFFSET_MS}) // {WINDOW_PERIOD_MS} * {WINDOW_PERIOD_MS}
                                   + {WINDOW_OFFSET_MS} AS bucket FROM ref)
        SELECT start, zipcode, count(*) FROM (
            SELECT zipcode, bucket AS start FROM b UNION ALL SELECT zipcode, bucket - {WINDOW_PERIOD_MS} FROM b)
        GROUP BY ALL""").fetchall()
    return {(datetime.datetime.fromtimestamp(start / 1000, UTC).replace(tzinfo=None), zipcode): n
            for start, zipcode, n in rows}


def last_values(topic: str) -> tuple:
    """(last count per zipcode, messages) on the Kafka output topic."""
    consumer = Consumer({"bootstrap.servers": "127.0.0.1:9092", "group.id": f"check-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in metadata}
        consumer.assign([TopicPartition(topic, p, 0) for p in metadata])
        last, seen, deadline = {}, collections.Counter(), time.monotonic() + 60
        while any(seen[p] < end for p, end in ends.items()) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            seen[message.partition()] += 1
            row = orjson.loads(message.value())
            last[row["zipcode"]] = row["count"]
        return last, sum(seen.values())
    finally:
        consumer.close()


def check_sinks(reports: list, db_url: str, out_topic: str, work: Path) -> dict:
    """Compare every sink with the producers' reports; returns the figures (lost, duplicated per sink)."""
    events = [e for report in reports for e in report.events]
    malformed = sum(report.malformed for report in reports)
    zip_reference = collections.Counter(e[1] for e in events)
    figures = {}

    hits = duckdb.sql(f"SELECT partition, \"offset\" FROM read_parquet('{work / 'hits'}/**/*.parquet', "
                      "hive_partitioning = true)").fetchall()
    written = collections.Counter(hits)
    expected = {(e[3], e[4]) for e in events}
    figures["parquet hits"] = (len(expected - set(written)), sum(n - 1 for n in written.values() if n > 1))
    assert set(written) == expected and max(written.values()) == 1, figures

    dead = duckdb.sql(f"SELECT partition, \"offset\" FROM read_parquet('{work / 'dead'}/**/*.parquet', "
                      "hive_partitioning = true)").fetchall()
    figures["parquet dead letters"] = (malformed - len(set(dead)), len(dead) - len(set(dead)))
    assert len(dead) == len(set(dead)) == malformed, figures

    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        zips = dict(conn.execute(sa.text("SELECT zip, count FROM zip_test")).all())
        windows = {(start, zipcode): n for start, _, zipcode, n in
                   conn.execute(sa.text("SELECT window_start, window_end, zipcode, count FROM zip_window_counts"))}
    engine.dispose()
    figures["jdbc zip_counts"] = (sum(max(0, n - zips.get(k, 0)) for k, n in zip_reference.items()),
                                  sum(max(0, n - zip_reference.get(k, 0)) for k, n in zips.items()))
    assert zips == dict(zip_reference), figures
    window_ref = window_reference(events)
    figures["jdbc zip_window_counts"] = (
        sum(max(0, n - windows.get(k, 0)) for k, n in window_ref.items()),
        sum(max(0, n - window_ref.get(k, 0)) for k, n in windows.items()))
    assert windows == window_ref, figures

    last, _ = last_values(out_topic)
    figures["kafka zip_counts"] = (sum(max(0, n - last.get(k, 0)) for k, n in zip_reference.items()),
                                   sum(max(0, n - zip_reference.get(k, 0)) for k, n in last.items()))
    assert last == dict(zip_reference), figures
    return figures


def saved_offsets(work: Path) -> dict:
    root = work / "checkpoint" / "aggregates"
    return {int(f.stem): orjson.loads(f.read_bytes())["offset"] for f in root.glob("*/*.json")}


@pytest.mark.parametrize("runner", ["prism", "direct"])
def test_a_second_available_now_run_goes_on_from_the_first(runner, kafka_bootstrap, topic_factory, scratch_db,
                                                           tmp_path):
    topic, out_topic = topic_factory(partitions=4, prefix="restart"), topic_factory(partitions=1, prefix="out")
    start_ms = 1795478400000  # 2026-11-23T19:20:00Z
    args = job_args(topic, out_topic, scratch_db, tmp_path, f"g-{topic}")
    first = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=6000, partitions=4,
                                zipcodes=30, malformed_share=0.02, event_time_start_ms=start_ms,
                                event_time_span_seconds=3600, seed=1))
    drain(args, tmp_path / "run1.log", runner)
    after_first = saved_offsets(tmp_path)
    assert sum(after_first.values()) == first.produced, after_first  # the bounded end is saved

    second = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=4000, partitions=4,
                                 zipcodes=30, malformed_share=0.02, event_time_start_ms=start_ms + 1800_000,
                                 event_time_span_seconds=3600, seed=2))
    drain(args, tmp_path / "run2.log", runner)
    assert sum(saved_offsets(tmp_path).values()) == first.produced + second.produced
    # The second run read only the new records: its Kafka source started at the saved offsets.
    log = (tmp_path / "run2.log").read_text()
    for partition, offset in after_first.items():
        assert f"partition={partition}, start={offset}," in log, log[-3000:]
    check_sinks([first, second], scratch_db, out_topic, tmp_path)


def test_kill_9_and_restart_lose_and_duplicate_nothing(kafka_bootstrap, topic_factory, scratch_db, tmp_path):
    cycles = scale(3, 20)
    topic, out_topic = topic_factory(partitions=4, prefix="crash"), topic_factory(partitions=1, prefix="out")
    args = job_args(topic, out_topic, scratch_db, tmp_path, f"g-{topic}")
    rng = random.Random(7)
    reports: list = []
    # A producer that writes all through the kills: ~150 hits/s, event times near now, 2% malformed.
    spec = ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=10**9, rate=150, partitions=4,
                       zipcodes=25, malformed_share=0.02, seed=3)
    producing = threading.Event()
    producing.set()

    def produce_while_killing():
        seed = 3
        while producing.is_set():
            reports.append(produce(ProduceSpec(**{**spec.__dict__, "count": 300, "seed": seed})))
            seed += 1

    producer = threading.Thread(target=produce_while_killing, daemon=True)
    producer.start()
    kills = []
    try:
        for cycle in range(cycles):
            job = start_job(args, "processing-time=1s", tmp_path / "streaming.log")
            alive_for = rng.uniform(4, 14)
            time.sleep(alive_for)
            assert job.poll() is None, f"the job exited by itself (rc {job.returncode}); see streaming.log"
            os.killpg(job.pid, signal.SIGKILL)
            job.wait(timeout=30)
            kills.append(round(alive_for, 1))
    finally:
        producing.clear()
        producer.join(timeout=60)
    drain(args, tmp_path / "drain.log")
    figures = check_sinks(reports, scratch_db, out_topic, tmp_path)
    produced = sum(r.produced for r in reports)
    print(f"\nkill -9: {cycles} cycles (alive {kills} s), {produced} records produced; "
          f"(lost, duplicated) per sink: {figures}")
    assert len(saved_offsets(tmp_path)) == 4
