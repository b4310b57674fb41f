"""Contender (b) of the benchmark: the blog's system itself, Spark Structured Streaming, on the same topic.

    python -m bench.spark_blog --count 1000000          # produce 1M hits (8 partitions), run, print the table
    python -m bench.spark_blog --topic T --count N      # reuse a topic that holds N messages
    python -m bench.spark_blog --workload core --count 200000   # the blog core on bench.reference's input

pyspark (`pip install -e '.[spark]'`) with the spark-sql-kafka-0-10 jars from Maven Central (bench/spark_jars.py),
`local[2]`, every query with `Trigger.AvailableNow` from the earliest offset. Two workloads. `blog`
(`run_spark_blog()`), the blog's queries and sinks:

| query | sink | mode |
|---|---|---|
| hits (parsed) | Parquet, partitioned by zipcode and day | append |
| zip_counts | MariaDB `zip_test_spark(zip, count)` through foreachBatch, upserts in one transaction | complete |
| zip_counts | Kafka output topic, key zipcode, value JSON {"zipcode", "count"} | update |
| zip_window_counts | memory table `zip_window_counts`, window(hittime, 10 min, 5 min, 2 min) | complete |

`core` (`run_spark_core()`), the blog core every contender runs (contract in bench/peers/__init__.py, checked by
bench/reference.py), all to Kafka topics of the caller's:

| query | sink | mode |
|---|---|---|
| dead letters: the raw value of each message the parse refuses | dead-letter topic | append |
| zip_counts | zip topic, JSON {"zipcode", "count"} | update |
| zip_window_counts, watermark 10 min | window topic, JSON {"zipcode", "count", "window_start", "window_end"} | update |

Both counts are keyed by zipcode; the window bounds are ISO-8601 UTC with milliseconds and Z
(`2026-03-15T22:02:00.000Z`). In update mode Spark writes a message per changed key per micro-batch, so the last
message per key is the final count.

As in the blog, each sink is its own streaming query, so Spark reads the topic once per query (four times, three for
the core); they run at the same time. `spark.sql.shuffle.partitions` is 2 (the default 200 makes every stateful
batch run 200 state-store tasks on 2 cores, which would be an unfair handicap).

The parse applies hitstream's data contract (SPEC "Data contract"), so both systems count the same rows: valid
UTF-8, a JSON object, `hittime` a string with Z or an offset or an integer of epoch ms (years 1..9999), `zipcode` a
non-empty string, the optional fields strings or null. `from_json` alone would coerce `"zipcode": 94107` to the
string "94107", so each field is read as a VARIANT and its JSON type checked with `schema_of_variant`.

Both workloads run Spark in a child process (a fresh JVM each time, as `spark-submit` would) and sample the RSS of
that whole process tree (the Python driver, the launcher and the JVM). `seconds` is the wall time of the
queries, from their start to the last one's end, without the session start-up (reported apart as
`startup_seconds`); events/s is the topic's message count over `seconds`.

Blog workload, measured on 2026-11-24 on the 2-core dev machine, while other test suites shared it (load average 5
to 9, so these are low): 200k hits, median of 3: 3,987 events/s (35 to 51 s), peak RSS 1.9 GB; 1M hits: 7,560
events/s (132 s), peak RSS 2.3 GB; 1M with --lenient-parse: 10,002 events/s, 2.8 GB. Session start-up 10 to 17 s on
top. Core workload, one run on 2026-12-06 at load average ~6 (rough): 200k hits, 3,674 events/s (54 s), peak RSS
0.9 GB.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]

WINDOW_SIZE, WINDOW_PERIOD, WINDOW_OFFSET = "10 minutes", "5 minutes", "2 minutes"
WATERMARK_DELAY = "10 minutes"
OPTIONAL_FIELDS = ("isp", "ip", "city", "state", "country", "user_id", "url")
_JSON_SCHEMA = ", ".join(f"{name} VARIANT" for name in ("hittime", "zipcode") + OPTIONAL_FIELDS)
_INT_TYPES = "('TINYINT', 'SMALLINT', 'INT', 'BIGINT')"
# Epoch ms of 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z: the years hitstream's parse accepts.
_MIN_MS, _MAX_MS = -62135596800000, 253402300799999
# An ISO time must carry Z or an offset (hitstream refuses naive times rather than guess a zone).
_OFFSET_RE = r"(?i)(z|[+-][0-9]{2}(:?[0-9]{2})?)$"
DEFAULT_JDBC_TABLE = "zip_test_spark"


# ---------------------------------------------------------------------------------------------------------------
# Session, source, parse and queries (imported by tests/integration/test_spark_parity.py too)

def spark_session(app: str = "hitstream-spark-blog", master: str = "local[2]", shuffle_partitions: int = 2,
                  driver_memory: str = "1g"):
    """A local SparkSession with the Kafka connector jars on `spark.jars`, times in UTC, no UI."""
    from pyspark.sql import SparkSession

    from bench.spark_jars import spark_jars_conf

    spark = (SparkSession.builder.master(master).appName(app)
             .config("spark.jars", spark_jars_conf())
             .config("spark.driver.memory", driver_memory)
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
             .config("spark.sql.streaming.forceDeleteTempCheckpointLocation", "true")
             .getOrCreate())
    spark.sparkContext.setLogLevel("WARN")
    return spark


def read_kafka(spark, bootstrap: str, topic: str, stream: bool = True):
    """The blog's Kafka source: every record of `topic` from the earliest offset."""
    reader = (spark.readStream if stream else spark.read).format("kafka") \
        .option("kafka.bootstrap.servers", bootstrap) \
        .option("subscribe", topic) \
        .option("startingOffsets", "earliest") \
        .option("failOnDataLoss", "true")
    if not stream:
        reader = reader.option("endingOffsets", "latest")
    return reader.load()


_KAFKA_COLUMNS = ("topic", "partition", "offset", "kafka_timestamp")


def _contract(raw, strict: bool):
    """Kafka rows -> (typed, valid): `typed` holds hittime (TIMESTAMP, UTC), zipcode, the optional fields, the raw
    `value` and the Kafka metadata; `valid` (never null, so hits and dead letters split the input exactly) tells
    whether the row keeps the data contract."""
    from pyspark.sql import functions as F

    meta = ["topic", "partition", "offset", F.col("timestamp").alias("kafka_timestamp"), "value"]
    if not strict:
        schema = ", ".join(f"{name} STRING" for name in ("hittime", "zipcode") + OPTIONAL_FIELDS)
        j = raw.select(F.from_json(F.col("value").cast("string"), schema).alias("j"), *meta)
        hittime = F.coalesce(F.expr("try_to_timestamp(j.hittime)"),
                             F.expr("timestamp_millis(try_cast(j.hittime AS BIGINT))"))
        typed = j.select(hittime.alias("hittime"), "j.zipcode", *[f"j.{name}" for name in OPTIONAL_FIELDS],
                         *_KAFKA_COLUMNS, "value")
        valid = F.col("hittime").isNotNull() & F.col("zipcode").isNotNull() & (F.col("zipcode") != "")
        return typed, F.coalesce(valid, F.lit(False))

    # Each projection carries a non-deterministic column (`_fence`, the partition id), so the optimizer can neither
    # push the validity filter below it nor merge it with the next one. Pushed down, the filter would run one
    # pruned from_json per field it tests, ten JSON parses per record instead of one.
    fields = raw.select(
        F.expr("is_valid_utf8(value)").alias("utf8"),
        F.from_json(F.col("value").cast("string"), _JSON_SCHEMA).alias("j"),
        *meta, F.spark_partition_id().alias("_fence"))
    hittime = F.expr(f"""
        CASE schema_of_variant(j.hittime)
          WHEN 'STRING' THEN
            CASE WHEN try_variant_get(j.hittime, '$', 'string') RLIKE '{_OFFSET_RE}'
                 THEN try_to_timestamp(try_variant_get(j.hittime, '$', 'string')) END
          ELSE
            CASE WHEN schema_of_variant(j.hittime) IN {_INT_TYPES}
                  AND try_variant_get(j.hittime, '$', 'bigint') BETWEEN {_MIN_MS} AND {_MAX_MS}
                 THEN timestamp_millis(try_variant_get(j.hittime, '$', 'bigint')) END
        END""")
    zipcode = F.expr("CASE WHEN schema_of_variant(j.zipcode) = 'STRING' "
                     "THEN try_variant_get(j.zipcode, '$', 'string') END")
    optional_ok = " AND ".join(f"(j.{name} IS NULL OR schema_of_variant(j.{name}) IN ('STRING', 'VOID'))"
                               for name in OPTIONAL_FIELDS)
    typed = fields.select(
        hittime.alias("hittime"), zipcode.alias("zipcode"),
        *[F.expr(f"try_variant_get(j.{name}, '$', 'string')").alias(name) for name in OPTIONAL_FIELDS],
        *_KAFKA_COLUMNS, "value", F.col("utf8").alias("_utf8"),
        F.expr(optional_ok).alias("_optional_ok"), (F.col("_fence") + F.spark_partition_id()).alias("_fence"))
    valid = (F.col("_fence") >= 0) & F.col("_utf8") & F.col("_optional_ok") & F.col("hittime").isNotNull() \
        & F.col("zipcode").isNotNull() & (F.col("zipcode") != "")
    return typed, F.coalesce(valid, F.lit(False))


def parse_hits(raw, strict: bool = True):
    """Kafka rows -> hits: hittime (TIMESTAMP, UTC), zipcode, the optional fields, day, topic, partition, offset,
    kafka_timestamp. Rows that break the data contract are left out (hitstream dead-letters them).

    strict=False is the plain blog-style parse, from_json with a STRING schema: about 3x cheaper, but it takes a
    mistyped field as its JSON text (`"zipcode": 94107` counts as zipcode "94107") and a naive ISO time as UTC.
    """
    from pyspark.sql import functions as F

    typed, valid = _contract(raw, strict)
    return typed.where(valid).select("hittime", "zipcode", *OPTIONAL_FIELDS,
                                     F.date_format("hittime", "yyyy-MM-dd").alias("day"), *_KAFKA_COLUMNS)


def dead_letters(raw, strict: bool = True):
    """Kafka rows -> the raw `value` of each row that breaks the data contract (what hitstream dead-letters)."""
    typed, valid = _contract(raw, strict)
    return typed.where(~valid).select("value")


def zip_counts(hits):
    return hits.groupBy("zipcode").count()


def zip_window_counts(hits, size: str = WINDOW_SIZE, period: str = WINDOW_PERIOD, offset: str = WINDOW_OFFSET):
    """The blog's windowed count: window(hittime, size, period, startTime) and zipcode."""
    from pyspark.sql import functions as F

    return hits.groupBy(F.window("hittime", size, period, offset), "zipcode").count().select(
        F.col("window.start").alias("window_start"), F.col("window.end").alias("window_end"), "zipcode", "count")


# ---------------------------------------------------------------------------------------------------------------
# The blog's sinks, all queries with Trigger.AvailableNow

def _mysql_params(url: str) -> dict:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return {"host": parsed.host or "127.0.0.1", "port": parsed.port or 3306, "user": parsed.username,
            "password": parsed.password or os.environ.get("HITSTREAM_DB_PASSWORD", ""), "database": parsed.database}


class JdbcCompleteWriter:
    """foreachBatch of zip_counts in complete mode: the table ends up holding exactly the batch, in one transaction
    (upserts by key, then the keys the batch no longer has are deleted)."""

    def __init__(self, url: str, table: str):
        self.params, self.table = _mysql_params(url), table

    def _connect(self):
        import pymysql

        return pymysql.connect(**self.params, autocommit=False)

    def create(self) -> None:
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE TABLE IF NOT EXISTS `{self.table}` "
                        "(zip VARCHAR(64) PRIMARY KEY, count BIGINT NOT NULL)")
            cur.execute(f"DELETE FROM `{self.table}`")
            conn.commit()

    def __call__(self, batch_df, batch_id: int) -> None:
        rows = [(row["zipcode"], row["count"]) for row in batch_df.collect()]
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute("CREATE TEMPORARY TABLE keep_keys (zip VARCHAR(64) PRIMARY KEY)")
            if rows:
                cur.executemany(f"INSERT INTO `{self.table}` (zip, count) VALUES (%s, %s) "
                                "ON DUPLICATE KEY UPDATE count = VALUES(count)", rows)
                cur.executemany("INSERT INTO keep_keys (zip) VALUES (%s)", [(zip_,) for zip_, _ in rows])
            cur.execute(f"DELETE FROM `{self.table}` WHERE zip NOT IN (SELECT zip FROM keep_keys)")
            conn.commit()

    def table_rows(self) -> dict:
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute(f"SELECT zip, count FROM `{self.table}`")
            return {zip_: int(count) for zip_, count in cur.fetchall()}


def _writer(frame, name: str, mode: str, checkpoints: Path):
    """The writer of one query of a run: named, a checkpoint of its own, Trigger.AvailableNow."""
    return frame.writeStream.queryName(name).outputMode(mode) \
        .option("checkpointLocation", str(checkpoints / name)).trigger(availableNow=True)


def _to_kafka(frame, name: str, mode: str, checkpoints: Path, bootstrap: str, topic: str):
    return _writer(frame, name, mode, checkpoints).format("kafka") \
        .option("kafka.bootstrap.servers", bootstrap).option("topic", topic).start()


def _keyed_json(frame, *fields):
    """Kafka key zipcode, value the JSON object of `fields` (column names or aliased expressions)."""
    from pyspark.sql import functions as F

    return frame.select(F.col("zipcode").alias("key"), F.to_json(F.struct(*fields)).alias("value"))


def _await_all(queries: list, started: float) -> dict:
    """Wait for every query; seconds from `started` to the last one's end, and per query its input rows and where
    its time went (Spark's StreamingQueryProgress.durationMs, summed over its batches)."""
    for query in queries:
        query.awaitTermination()
    seconds = time.perf_counter() - started
    for query in queries:
        if query.exception() is not None:
            raise RuntimeError(f"spark query {query.name} failed: {query.exception()}")
    durations = {}
    for query in queries:
        phases: dict = {}
        for progress in query.recentProgress:
            for phase, ms in progress["durationMs"].items():
                phases[phase] = phases.get(phase, 0) + ms
        durations[query.name] = phases
    return {"seconds": seconds,
            "input_rows": {q.name: sum(p["numInputRows"] for p in q.recentProgress) for q in queries},
            "duration_ms": durations}


def run_queries(spark, bootstrap: str, topic: str, workdir: str, jdbc_url: Optional[str] = None,
                jdbc_table: str = DEFAULT_JDBC_TABLE, output_topic: Optional[str] = None, strict: bool = True) -> dict:
    """Start the blog's four streaming queries with availableNow, wait for all, and return timings and row counts."""
    from hitstream.generator import ensure_topic

    work = Path(workdir)
    checkpoints = work / "checkpoints"
    hits_path = work / "hits"
    output_topic = output_topic or f"{topic}-spark-counts-{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, output_topic, 1)
    jdbc = JdbcCompleteWriter(jdbc_url, jdbc_table) if jdbc_url else None
    if jdbc:
        jdbc.create()

    hits = parse_hits(read_kafka(spark, bootstrap, topic), strict=strict)
    counts = zip_counts(hits)
    windows = zip_window_counts(hits)
    started = time.perf_counter()
    queries = [
        _writer(hits, "hits", "append", checkpoints).format("parquet").partitionBy("zipcode", "day")
        .option("path", str(hits_path)).start(),
        _to_kafka(_keyed_json(counts, "zipcode", "count"), "zip_counts_kafka", "update", checkpoints, bootstrap,
                  output_topic),
        _writer(windows, "zip_window_counts", "complete", checkpoints).format("memory").start(),
    ]
    if jdbc:
        queries.append(_writer(counts, "zip_counts_jdbc", "complete", checkpoints).foreachBatch(jdbc).start())
    result = _await_all(queries, started)
    result.update(rows={"hits_parquet": spark.read.parquet(str(hits_path)).count(),
                        "zip_window_counts_memory": spark.sql("SELECT count(*) FROM zip_window_counts").first()[0],
                        "kafka_messages": _topic_message_count(bootstrap, output_topic)},
                  output_topic=output_topic, parse="strict" if strict else "lenient")
    if jdbc:
        table = jdbc.table_rows()
        result["rows"]["zip_counts_jdbc"] = len(table)
        result["rows"]["zip_counts_jdbc_total"] = sum(table.values())
    return result


def run_core_queries(spark, bootstrap: str, topic: str, zip_topic: str, window_topic: str, dead_letter_topic: str,
                     workdir: str) -> dict:
    """Start the blog core's three streaming queries with availableNow (strict parse), wait for all, and return
    timings and the output topics' message counts."""
    from pyspark.sql import functions as F

    checkpoints = Path(workdir) / "checkpoints"
    raw = read_kafka(spark, bootstrap, topic)
    hits = parse_hits(raw)
    # The blog's watermark; the input is at most minutes out of order, so no hit is late.
    windows = zip_window_counts(hits.withWatermark("hittime", WATERMARK_DELAY))
    iso = "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"  # the session's time zone is UTC, so the literal Z is true
    started = time.perf_counter()
    queries = [
        _to_kafka(dead_letters(raw), "dead_letters", "append", checkpoints, bootstrap, dead_letter_topic),
        _to_kafka(_keyed_json(zip_counts(hits), "zipcode", "count"), "zip_counts_kafka", "update", checkpoints,
                  bootstrap, zip_topic),
        _to_kafka(_keyed_json(windows, "zipcode", "count", F.date_format("window_start", iso).alias("window_start"),
                              F.date_format("window_end", iso).alias("window_end")),
                  "zip_window_counts_kafka", "update", checkpoints, bootstrap, window_topic),
    ]
    result = _await_all(queries, started)
    result.update(rows={"dead_letters": _topic_message_count(bootstrap, dead_letter_topic),
                        "zip_counts_kafka": _topic_message_count(bootstrap, zip_topic),
                        "zip_window_counts_kafka": _topic_message_count(bootstrap, window_topic)},
                  parse="strict")
    return result


def _topic_message_count(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"spark-bench-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


# ---------------------------------------------------------------------------------------------------------------
# Measurement: the Spark run in a child process, its tree's RSS sampled from here

def child_env() -> dict:
    """The environment of a measured child process: this one's, with the repository first on PYTHONPATH."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


def _tree_rss_by_command(root: int) -> collections.Counter:
    """RSS in bytes of `root` and every descendant, from /proc, summed per command name (e.g. python, prism)."""
    children: dict = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    totals, stack, page = collections.Counter(), [root], os.sysconf("SC_PAGE_SIZE")
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/comm") as comm, open(f"/proc/{pid}/statm", "rb") as statm:
                totals[comm.read().strip()] += int(statm.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
        stack.extend(children.get(pid, ()))
    return totals


class PeakRss:
    """Samples a process tree's RSS every `interval` seconds in a thread; `.peak_mb` when stopped."""

    def __init__(self, pid: int, interval: float = 0.2, apart: str = ""):
        self.pid, self.interval, self.peak = pid, interval, 0
        self.apart, self.peak_apart = apart, 0  # the peak of one command's processes (e.g. prism) on its own
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            by_command = _tree_rss_by_command(self.pid)  # one walk of /proc gives the tree and the part apart
            self.peak = max(self.peak, sum(by_command.values()))
            if self.apart:
                self.peak_apart = max(self.peak_apart, by_command[self.apart])
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return self.peak / 2 ** 20


def _run_child(bootstrap: str, topic: str, workdir: str, workload_args: list, timeout: float) -> dict:
    """Run one workload in a fresh `--child` process over `topic`, sampling its tree's RSS; its result plus events,
    events_per_second, peak_rss_mb and wall_seconds."""
    Path(workdir).mkdir(parents=True, exist_ok=True)
    result_path = Path(workdir) / f"spark-result-{uuid.uuid4().hex}.json"
    cmd = [sys.executable, "-m", "bench.spark_blog", "--child", "--bootstrap-servers", bootstrap, "--topic", topic,
           "--workdir", str(Path(workdir) / f"run-{uuid.uuid4().hex[:8]}"), "--result", str(result_path),
           *workload_args]
    started = time.perf_counter()
    log_path = Path(workdir) / "spark-child.log"
    with open(log_path, "wb") as log:
        child = subprocess.Popen(cmd, cwd=str(REPO), env=child_env(), stdout=log, stderr=subprocess.STDOUT)
        with PeakRss(child.pid) as rss:
            try:
                code = child.wait(timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
                raise
    wall = time.perf_counter() - started
    if code != 0 or not result_path.exists():
        tail = log_path.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"spark child exited {code}; see {log_path}:\n{tail}")
    result = json.loads(result_path.read_text())
    total = _topic_message_count(bootstrap, topic)
    result.update(events=total, events_per_second=total / result["seconds"], peak_rss_mb=rss.peak_mb,
                  wall_seconds=wall)
    return result


def run_spark_blog(bootstrap: str, topic: str, workdir: str, jdbc_url: Optional[str] = "default",
                   strict: bool = True, timeout: float = 1800) -> dict:
    """Run the blog's queries on Spark over `topic` (available-now) in a fresh child process.

    Returns events_per_second (the topic's messages over `seconds`), seconds (query wall time), startup_seconds,
    wall_seconds (the child's whole life, JVM start included), peak_rss_mb (Python driver + JVM), and rows (per
    sink). jdbc_url "default" is the local stack's MariaDB; None leaves the JDBC sink out.
    """
    if jdbc_url == "default":
        from stack import mariadb
        jdbc_url = mariadb.url()
    # Always passed: the child's own default ("default") is not a URL.
    workload_args = ["--workload", "blog", "--jdbc-url", jdbc_url or "none"]
    if not strict:
        workload_args.append("--lenient-parse")
    return _run_child(bootstrap, topic, workdir, workload_args, timeout)


def run_spark_core(bootstrap: str, topic: str, zip_topic: str, window_topic: str, dead_letter_topic: str,
                   workdir: str, timeout: float = 1800) -> dict:
    """Run the blog core on Spark over `topic` (available-now) in a fresh child process, writing the three output
    topics (made with one partition unless they exist). The same figures as run_spark_blog; rows counts the
    messages of each output topic."""
    from hitstream.generator import ensure_topic

    for output in (zip_topic, window_topic, dead_letter_topic):
        ensure_topic(bootstrap, output, 1)
    return _run_child(bootstrap, topic, workdir, ["--workload", "core", "--zip-topic", zip_topic, "--window-topic",
                                                  window_topic, "--dead-letter-topic", dead_letter_topic], timeout)


def _child(args) -> None:
    started = time.perf_counter()
    spark = spark_session()
    startup = time.perf_counter() - started
    try:
        if args.workload == "core":
            result = run_core_queries(spark, args.bootstrap_servers, args.topic, args.zip_topic, args.window_topic,
                                      args.dead_letter_topic, args.workdir)
        else:
            result = run_queries(spark, args.bootstrap_servers, args.topic, args.workdir,
                                 jdbc_url=None if args.jdbc_url == "none" else args.jdbc_url,
                                 strict=not args.lenient_parse)
    finally:
        spark.stop()
    result["startup_seconds"] = startup
    Path(args.result).write_text(json.dumps(result))


# ---------------------------------------------------------------------------------------------------------------
# Stand-alone: produce, run, print

def produce_bench_topic(bootstrap: str, count: int, partitions: int = 8, topic: Optional[str] = None,
                        seed: int = 42):
    """The benchmark's input: `count` hits on `partitions` partitions, 50 zipcodes (Zipf), 1% late by up to 5 min,
    0.1% malformed, over 3 hours of event time."""
    from hitstream.generator import ProduceSpec, produce

    topic = topic or f"bench-spark-{uuid.uuid4().hex[:8]}"
    return produce(ProduceSpec(topic=topic, bootstrap_servers=bootstrap, count=count, partitions=partitions,
                               zipcodes=50, late_share=0.01, late_by_seconds=300, malformed_share=0.001,
                               event_time_start_ms=1795478400000, event_time_span_seconds=3 * 3600, seed=seed,
                               keep_events=False))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--count", type=int, default=1_000_000, help="hits to produce (default: 1M)")
    parser.add_argument("--partitions", type=int, default=8, help="of the produced blog topic (the core's has 8)")
    parser.add_argument("--topic", default=None, help="an existing topic to read instead of producing one")
    parser.add_argument("--repeat", type=int, default=1, help="runs over the same topic; the median is shown")
    parser.add_argument("--workdir", default=None, help="checkpoints, Parquet output (default: a temp dir)")
    parser.add_argument("--jdbc-url", default="default",
                        help="SQLAlchemy URL of MariaDB/MySQL (default: the local stack's); 'none' to skip")
    parser.add_argument("--lenient-parse", action="store_true",
                        help="from_json with a STRING schema instead of the exact data contract (faster; takes "
                             "mistyped fields as text)")
    parser.add_argument("--workload", choices=("blog", "core"), default="blog",
                        help="blog: the blog's four queries and sinks (default); core: the blog core, three Kafka "
                             "outputs (produces bench.reference's input when no --topic is given)")
    for name in ("zip", "window", "dead-letter"):
        parser.add_argument(f"--{name}-topic", default=None,
                            help=f"core: the {name} output topic (default: a new one per run)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workload == "core" and args.lenient_parse:
        parser.error("the blog core's dead letters need the strict parse; --lenient-parse is for --workload blog")
    if args.child:
        _child(args)
        return
    jdbc_url = None if args.jdbc_url == "none" else args.jdbc_url
    topic = args.topic
    if topic is None:
        if args.workload == "core":
            from bench.reference import blog_core_spec
            from hitstream.generator import produce

            spec = blog_core_spec(f"bench-core-{uuid.uuid4().hex[:8]}", args.count, args.bootstrap_servers)
            report = produce(dataclasses.replace(spec, keep_events=False))
        else:
            report = produce_bench_topic(args.bootstrap_servers, args.count, args.partitions)
        topic = report.topic
        print(f"produced {report.produced} messages ({report.malformed} malformed) to {topic} "
              f"in {report.seconds:.1f}s", flush=True)
    with tempfile.TemporaryDirectory(prefix="hitstream-spark-bench-", dir=args.workdir) as work:
        runs = []
        for i in range(args.repeat):
            run_dir = str(Path(work) / f"r{i}")
            if args.workload == "core":
                outputs = {f"{name}_topic": getattr(args, f"{name}_topic")
                           or f"{topic}-spark-{name.replace('_', '-')}-{uuid.uuid4().hex[:8]}"
                           for name in ("zip", "window", "dead_letter")}
                runs.append(run_spark_core(args.bootstrap_servers, topic, workdir=run_dir, **outputs))
            else:
                runs.append(run_spark_blog(args.bootstrap_servers, topic, run_dir, jdbc_url=jdbc_url,
                                           strict=not args.lenient_parse))
            print(f"run {i + 1}: {json.dumps(runs[-1], default=str)}", flush=True)
    runs.sort(key=lambda r: r["events_per_second"])
    median = runs[len(runs) // 2]
    print("\n| contender | events | seconds | events/s | start-up s | peak RSS MB |\n|---|---|---|---|---|---|")
    print(f"| Spark {_pyspark_version()} Structured Streaming, local[2], availableNow, {args.workload} | "
          f"{median['events']:,} | {median['seconds']:.1f} | {median['events_per_second']:,.0f} | "
          f"{median['startup_seconds']:.1f} | {median['peak_rss_mb']:,.0f} |")
    print(f"rows: {median['rows']}")


def _pyspark_version() -> str:
    try:
        import pyspark
        return pyspark.__version__
    except ImportError:
        return "?"


if __name__ == "__main__":
    main()
