"""Parity with the seed's own system: Spark Structured Streaming and hitstream give the same window counts.

One fixed input on a real Kafka topic (3,000 hits over 2 hours of event time on 4 partitions, out-of-order hits and
malformed messages; hittime as ISO strings with Z and as epoch-ms integers). Spark reads it with the Kafka source and
`trigger(availableNow=True)`, parses with from_json, groups by `window(hittime, "10 minutes", "5 minutes",
"2 minutes")` and zipcode, counts, and writes complete mode to a memory sink. hitstream runs `zip_window_counts` on
the same topic, available-now on Prism, with a watermark delay of a day so that nothing is late. The two sets of
(window_start, window_end, zipcode, count) must be equal, and both must equal the generator's own record.

Needs the `spark` extra (pyspark) and Java 17+; the Kafka connector jars are fetched with mvn on first use
(bench/spark_jars.py). Without pyspark this test fails: CI installs the extra.
"""
import uuid

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

import runners
from bench import spark_blog
from hitstream.generator import ProduceSpec, produce
from pipelines.blog import build_pipeline
from tests.collect import CollectFn, collected

pytestmark = [pytest.mark.spark, pytest.mark.timeout(240)]

START_MS = 1795478400000 + 7 * 60_000 + 1234  # 2026-11-24T00:07:01.234Z: not on a window boundary
SPAN_S = 2 * 3600
SIZE_MS, PERIOD_MS, OFFSET_MS = 600_000, 300_000, 120_000


def _reference(events) -> set:
    """(window_start_ms, window_end_ms, zipcode, count) from the generator's record, in plain Python."""
    counts = {}
    for hittime_ms, zipcode, *_ in events:
        last_start = (hittime_ms - OFFSET_MS) // PERIOD_MS * PERIOD_MS + OFFSET_MS
        for start in range(last_start, hittime_ms - SIZE_MS, -PERIOD_MS):
            counts[(start, zipcode)] = counts.get((start, zipcode), 0) + 1
    return {(start, start + SIZE_MS, zipcode, n) for (start, zipcode), n in counts.items()}


def _spark_windows(bootstrap: str, topic: str, checkpoint: str) -> tuple:
    try:
        import pyspark  # noqa: F401  pylint: disable=unused-import
    except ImportError as err:  # a failure, not a skip: CI installs the `spark` extra
        pytest.fail(f"pyspark is not installed ({err}); install the extra: pip install -e '.[spark]'")
    from pyspark.sql import functions as F

    spark = spark_blog.spark_session(app="hitstream-parity")
    try:
        hits = spark_blog.parse_hits(spark_blog.read_kafka(spark, bootstrap, topic))
        windows = hits.groupBy(F.window("hittime", "10 minutes", "5 minutes", "2 minutes"), "zipcode").count()
        query = (windows.writeStream.queryName("parity_windows").format("memory").outputMode("complete")
                 .option("checkpointLocation", checkpoint).trigger(availableNow=True).start())
        query.awaitTermination()
        assert query.exception() is None, query.exception()
        rows = spark.sql("SELECT unix_millis(window.start) AS s, unix_millis(window.end) AS e, zipcode, count "
                         "FROM parity_windows").collect()
        # The same parse as a batch query: how many messages Spark kept.
        parsed = spark_blog.parse_hits(spark_blog.read_kafka(spark, bootstrap, topic, stream=False)).count()
    finally:
        spark.stop()
    return {(r["s"], r["e"], r["zipcode"], r["count"]) for r in rows}, len(rows), parsed


def _hitstream_windows(bootstrap: str, topic: str) -> tuple:
    name = uuid.uuid4().hex
    args = [f"--topic={topic}", f"--bootstrap-servers={bootstrap}", "--trigger=available-now",
            f"--group-id=g-{topic}", "--watermark-delay=1 day", "--sink=zip_window_counts=console:append"]
    options = PipelineOptions(args + runners.pipeline_args("prism", streaming=False))
    pipeline = beam.Pipeline(options=options)
    outputs = build_pipeline(pipeline, options)
    outputs["zip_window_counts:append"] | "CollectWindows" >> beam.ParDo(CollectFn(f"{name}-windows"))
    outputs["dead_letter"] | "CollectDeadLetters" >> beam.ParDo(CollectFn(f"{name}-dead"))
    pipeline.run().wait_until_finish()
    rows = [row for _, row in collected(f"{name}-windows")]
    got = {(int(r.window_start.timestamp() * 1000), int(r.window_end.timestamp() * 1000), r.zipcode, r.count)
           for r in rows}
    return got, len(rows), len(collected(f"{name}-dead"))


def test_spark_and_hitstream_window_counts_are_equal(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(partitions=4, prefix="spark-parity")
    report = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=3000, partitions=4,
                                 zipcodes=12, late_share=0.05, late_by_seconds=900, malformed_share=0.04,
                                 event_time_start_ms=START_MS, event_time_span_seconds=SPAN_S, seed=8))
    assert report.malformed > 0 and report.well_formed == len(report.events)
    reference = _reference(report.events)

    spark_set, spark_rows, spark_parsed = _spark_windows(kafka_bootstrap, topic, str(tmp_path / "checkpoint"))
    hitstream_set, hitstream_rows, dead_letters = _hitstream_windows(kafka_bootstrap, topic)

    # Malformed messages are out on both sides: dead letters in hitstream, filtered rows in Spark.
    assert dead_letters == report.malformed
    assert spark_parsed == report.well_formed
    # One row per (window, zipcode) on each side, and the sets equal.
    assert spark_rows == len(spark_set) and hitstream_rows == len(hitstream_set)
    only_spark, only_hitstream = sorted(spark_set - hitstream_set)[:5], sorted(hitstream_set - spark_set)[:5]
    assert spark_set == hitstream_set, f"only in Spark: {only_spark}; only in hitstream: {only_hitstream}"
    assert hitstream_set == reference
    # Windows are 10 minutes long and start 2 minutes past a 5-minute mark, on both sides.
    assert all(end - start == SIZE_MS and (start - OFFSET_MS) % PERIOD_MS == 0 for start, end, _, _ in spark_set)
