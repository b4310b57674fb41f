"""Runner conformance: one produced input, available-now, on every runner that can be had here.

Every runner's sink contents (Parquet, the JDBC sink on SQLite and on MariaDB, a Kafka topic, the dead-letter topic)
and, where the workers share the test's process, its query results must be identical and equal the generator's
reference. A runner that cannot be had is reported as an expected failure carrying the exact reason (never a silent
pass).
"""
import uuid

import apache_beam as beam
import duckdb
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState

import runners
from hitstream.generator import ProduceSpec, produce
from pipelines.blog import build_pipeline
from tests.collect import CollectFn, collected
from tests.reliability.faults import (dead_letter_coordinates, latest_counts, scratch_database, table_rows,
                                      window_reference)

QUERIES = ("zip_counts:complete", "isp_counts:update", "zip_window_counts:append", "dead_letter")


@pytest.fixture(scope="module")
def produced(kafka_bootstrap, topic_factory):
    topic = topic_factory(partitions=3, prefix="conformance")
    report = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=4000, partitions=3,
                                 zipcodes=10, malformed_share=0.02, event_time_start_ms=1795478400000,
                                 event_time_span_seconds=3600, seed=5))
    return topic, report


RESULTS = {}
SEPARATE_WORKERS = {"prism-cluster"}  # runners whose workers run in processes of their own


def _sink_contents(workdir, bootstrap: str, output_topic: str, dead_letter_topic: str, jdbc_url: str) -> dict:
    """What the runner's sinks hold: Parquet hits (DuckDB), the JDBC zip_test table, the Kafka topic's last value
    per key, and the dead-letter topic's records by their source coordinates."""
    hits = duckdb.connect().execute(
        f"SELECT zipcode, day, topic, \"partition\", \"offset\" FROM read_parquet('{workdir}/hits/**/*.parquet', "
        "hive_partitioning=true) ORDER BY \"partition\", \"offset\"").fetchall()
    return {"parquet_hits": hits, "jdbc_zip_test": sorted(table_rows(jdbc_url, "zip_test")),
            "kafka_latest": sorted(latest_counts(bootstrap, output_topic).items()),
            "dead_letters": sorted(dead_letter_coordinates(bootstrap, dead_letter_topic))}


def _run_on(runner: str, topic: str, bootstrap: str, workdir, topic_factory, jdbc_url: str, extra=()) -> dict:
    """Run the job on `runner`; its sinks' contents, and on runners whose workers share this process, what each
    query emitted (tests/collect.py gathers it in this process's memory)."""
    try:
        runner_args = runners.pipeline_args(runner, streaming=False, job_name=f"conformance-{runner}")
    except runners.RunnerUnavailable as error:
        pytest.xfail(f"{runner} cannot be had here: {error}")
    name = uuid.uuid4().hex
    output_topic = topic_factory(partitions=1, prefix="conf-out")
    dead_letter_topic = topic_factory(partitions=1, prefix="conf-dlq")
    args = [f"--topic={topic}", f"--bootstrap-servers={bootstrap}", "--trigger=available-now",
            f"--group-id=g-{runner}-{name}", "--watermark-delay=1 day", "--sink=zip_counts=console:complete",
            "--sink=isp_counts=console:update", "--sink=zip_window_counts=console:append",
            "--sink=hits=parquet", f"--parquet-path={workdir / 'hits'}", "--sink=zip_counts=jdbc:complete",
            f"--jdbc-url={jdbc_url}", "--sink=zip_counts=kafka:update", f"--output-topic={output_topic}",
            f"--dead-letter-topic={dead_letter_topic}", *extra]
    options = PipelineOptions(args + runner_args)
    pipeline = beam.Pipeline(options=options)
    outputs = build_pipeline(pipeline, options)
    in_process = runner not in SEPARATE_WORKERS
    if in_process:
        for query in QUERIES:
            outputs[query] | f"Collect{query}" >> beam.ParDo(CollectFn(f"{name}-{query}"))
    assert pipeline.run().wait_until_finish() == PipelineState.DONE
    results = _sink_contents(workdir, bootstrap, output_topic, dead_letter_topic, jdbc_url)
    if in_process:
        results.update({query: sorted((row for _, row in collected(f"{name}-{query}")), key=repr)
                        for query in QUERIES})
    return results


@pytest.mark.parametrize("runner,database", [("prism", "sqlite"), ("direct", "sqlite"), ("prism-cluster", "sqlite"),
                                             ("prism-cluster", "mariadb"), ("flink", "sqlite"), ("spark", "sqlite")])
def test_same_results_on_every_runner(runner, database, produced, kafka_bootstrap, topic_factory, mysql_url,
                                      tmp_path):
    topic, report = produced
    with scratch_database(mysql_url) as mariadb_url:
        jdbc_url = f"sqlite:///{tmp_path / 'sink.db'}" if database == "sqlite" else mariadb_url
        results = _run_on(runner, topic, kafka_bootstrap, tmp_path, topic_factory, jdbc_url)
    if runner not in SEPARATE_WORKERS:
        (snapshot,) = results["zip_counts:complete"]  # available-now: one final snapshot
        assert dict(snapshot.rows) == dict(report.zip_counts)
        assert len(results["dead_letter"]) == report.malformed
    # Every sink holds the reference: each well-formed record once in Parquet, the totals in JDBC and Kafka, each
    # malformed record once in the dead-letter topic.
    assert len(results["parquet_hits"]) == report.well_formed
    assert len({(h[3], h[4]) for h in results["parquet_hits"]}) == report.well_formed
    assert dict(results["jdbc_zip_test"]) == dict(report.zip_counts) == dict(results["kafka_latest"])
    assert len(set(results["dead_letters"])) == report.malformed
    RESULTS[f"{runner}/{database}"] = results
    for other, their in RESULTS.items():
        shared = their.keys() & results.keys()
        assert {key: their[key] for key in shared} == {key: results[key] for key in shared}, \
            f"{runner}/{database} differs from {other}"


def test_java_kafka_read_equals_the_native_one(kafka_bootstrap, topic_factory, tmp_path):
    """Beam's Java ReadFromKafka and WriteToKafka (`--kafka-io java --kafka-sink-io java`, the Java steps in a PROCESS
    environment on Prism) against the native read and sink, available-now, on the same topic: every sink and query
    the same (the Kafka topic by its last value per key), and equal to the reference. The
    records carry their hittime as Kafka timestamp, so both reads window on it with --timestamp-policy create-time
    (the Java read's watermark follows Kafka timestamps: see transforms/kafka_java.py); the windows are checked against
    DuckDB's."""
    topic = topic_factory(partitions=3, prefix="conformance-java")
    report = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=4000, partitions=3,
                                 zipcodes=10, malformed_share=0.02, event_time_start_ms=1795478400000,
                                 event_time_span_seconds=3600, seed=6, kafka_timestamp_is_hittime=True))
    results = {}
    for kafka_io in ("native", "java"):
        workdir = tmp_path / kafka_io
        workdir.mkdir()
        results[kafka_io] = _run_on("prism", topic, kafka_bootstrap, workdir, topic_factory,
                                    f"sqlite:///{workdir / 'sink.db'}",
                                    extra=[f"--kafka-io={kafka_io}", f"--kafka-sink-io={kafka_io}",
                                           "--timestamp-policy=create-time"])
    java = results["java"]
    assert len({(h[3], h[4]) for h in java["parquet_hits"]}) == len(java["parquet_hits"]) == report.well_formed
    assert dict(java["jdbc_zip_test"]) == dict(report.zip_counts) == dict(java["kafka_latest"])
    assert len(set(java["dead_letters"])) == report.malformed
    # Both reads' windows equal DuckDB's. The malformed records carry their send time, days after the hittimes:
    # a dead letter must not move the native read's watermark, or every later hit of its partition is late.
    for kafka_io, result in results.items():
        windows = {(row.window_start.replace(tzinfo=None), row.zipcode): row.count
                   for row in result.pop("zip_window_counts:append")}
        assert windows == window_reference(report.events), kafka_io
    assert java == results["native"]


def test_java_kafka_read_refuses_hittime_windows(kafka_bootstrap):
    args = ["--topic=t", f"--bootstrap-servers={kafka_bootstrap}", "--trigger=available-now", "--kafka-io=java",
            "--sink=zip_window_counts=console:append"]
    options = PipelineOptions(args + runners.pipeline_args("prism", streaming=False))
    with pytest.raises(ValueError, match="cannot window on hittime"):
        build_pipeline(beam.Pipeline(options=options), options)


def test_java_kafka_available_now_refuses_what_a_record_count_cannot_bound(kafka_bootstrap, topic_factory):
    """Java KafkaIO's bounded read splits its record count evenly among readers from 10,000 records on, which would
    stop short on one partition group and wait forever on another: refused before the job starts."""
    topic = topic_factory(partitions=4, prefix="java-bounded")
    produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=10_000, partitions=4, seed=2,
                        keep_events=False))
    args = [f"--topic={topic}", f"--bootstrap-servers={kafka_bootstrap}", "--trigger=available-now",
            "--starting-offsets=earliest", "--kafka-io=java", "--sink=zip_counts=console:complete"]
    options = PipelineOptions(args + runners.pipeline_args("prism", streaming=False))
    with pytest.raises(ValueError, match="fewer than 10,000 records, and the topic holds 10,000"):
        build_pipeline(beam.Pipeline(options=options), options)
