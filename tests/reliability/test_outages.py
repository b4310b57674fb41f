"""Outages of the systems around a running job: the Kafka broker, then the database, each stopped mid-stream.

The job streams on Prism with a processing-time trigger while the generator produces at a steady rate; in the middle
the broker (or MariaDB) is stopped for a while and started again. The job is never restarted: it must recover by
itself. Once the producer has finished, the sinks are polled until they equal the reference (the generator's record
of every hit Kafka acknowledged) or a timeout passes, and the test counts what was lost and duplicated.

Each test leaves the stack's Kafka and MariaDB running, pass or fail: other tests need them.
"""
from __future__ import annotations

import threading
import time

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState
from confluent_kafka import KafkaException

import runners
from hitstream.generator import ProduceSpec, produce
from pipelines.blog import build_pipeline
from stack import kafka as stack_kafka
from stack import mariadb as stack_mariadb
from tests.reliability.faults import (count_diff, dead_letter_coordinates, latest_counts, parquet_coordinates,
                                      print_figures, record_diff, scratch_database, table_rows, topic_reference,
                                      wait_until, window_reference)
from tests.reliability.scale import scale

pytestmark = pytest.mark.timeout(scale(420, 1200))

RATE = scale(200, 1000)  # hits per second
SECONDS = scale(40, 120)  # of producing
OUTAGE_AT = scale(8, 30)  # seconds into producing
SETTLE_TIMEOUT = scale(150, 300)  # seconds after the producer ends for the sinks to equal the reference


def _start_job(topic: str, bootstrap: str, *sinks: str, extra=()) -> object:
    args = [f"--topic={topic}", f"--bootstrap-servers={bootstrap}", "--trigger=processing-time=1s",
            f"--group-id=g-{topic}", "--starting-offsets=earliest", *[f"--sink={s}" for s in sinks], *extra]
    options = PipelineOptions(args + runners.pipeline_args("prism", streaming=True))
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, options)
    return pipeline.run()


def _produce_with_outage(topic: str, bootstrap: str, outage, seed: int, strict: bool = True):
    """Produce RATE hits/s for SECONDS; `outage()` runs OUTAGE_AT seconds in. Returns the generator's report
    (`strict`: see generator.produce)."""
    spec = ProduceSpec(topic=topic, bootstrap_servers=bootstrap, count=RATE * SECONDS, rate=RATE, partitions=3,
                       zipcodes=25, malformed_share=0.01, seed=seed)
    reports, errors = [], []

    def work():
        try:
            reports.append(produce(spec, strict=strict))
        except Exception as error:  # reported by the assertion below
            errors.append(error)

    producer = threading.Thread(target=work, name="producer")
    producer.start()
    time.sleep(OUTAGE_AT)
    outage()
    producer.join(SECONDS + 180)
    assert not errors and reports, f"the producer did not survive the outage: {errors}"
    return reports[0]


def _outage(service, seconds: float, measured: dict):
    """A function that stops a service of the stack for `seconds`, starts it again and records how long it was away
    (stop and start included) in measured["seconds"]."""
    def stop_and_start():
        started = time.monotonic()
        service.stop()
        time.sleep(seconds)
        service.start()
        measured["seconds"] = time.monotonic() - started
    return stop_and_start


def test_broker_restart_mid_stream(kafka_bootstrap, topic_factory, mysql_url, tmp_path, capsys):
    topic = topic_factory(partitions=3, prefix="fault-broker")
    out_topic = topic_factory(partitions=1, prefix="fault-broker-out")
    dlq_topic = topic_factory(partitions=1, prefix="fault-broker-dlq")
    with scratch_database(mysql_url) as db_url:
        result = _start_job(topic, kafka_bootstrap, "hits=parquet", "zip_counts=jdbc:complete",
                            "zip_counts=kafka:update", extra=[f"--parquet-path={tmp_path / 'hits'}",
                                                              f"--jdbc-url={db_url}", f"--output-topic={out_topic}",
                                                              f"--dead-letter-topic={dlq_topic}"])
        outage = {}
        try:
            # The test's own producer lives through the restart too, and librdkafka has been seen (1 run in 9)
            # to deliver nothing more after it within the flush; so the reference is the topic, read back.
            report = _produce_with_outage(topic, kafka_bootstrap, _outage(stack_kafka, 20, outage), seed=31,
                                          strict=False)
            hits_ref, zip_ref, malformed = topic_reference(kafka_bootstrap, topic)
            sinks = {}

            def settled():
                sinks["parquet"] = parquet_coordinates(str(tmp_path / "hits"))
                sinks["jdbc"] = dict(table_rows(db_url, "zip_test"))
                try:
                    sinks["kafka"] = latest_counts(kafka_bootstrap, out_topic)
                    sinks["dlq"] = dead_letter_coordinates(kafka_bootstrap, dlq_topic)
                except KafkaException:  # the restarted broker has not led every partition again yet
                    return False
                equal = (set(sinks["parquet"]) == hits_ref and sinks["jdbc"] == zip_ref and sinks["kafka"] == zip_ref
                         and len(set(sinks["dlq"])) == malformed)
                return equal or PipelineState.is_terminal(result.state)  # a failed job: nothing more will come

            wait_until(settled, SETTLE_TIMEOUT, interval=2.0)
            job_state = result.state
        finally:
            stack_kafka.start()  # idempotent: a no-op when the broker is up
            result.cancel()

    parquet_lost, parquet_dup = record_diff(sinks["parquet"], hits_ref)
    jdbc_lost, jdbc_dup = count_diff(sinks["jdbc"], zip_ref)
    kafka_lost, kafka_dup = count_diff(sinks["kafka"], zip_ref)
    dlq = set(sinks["dlq"])
    print_figures(capsys, "broker restart", 1, len(hits_ref) + malformed, parquet_lost + jdbc_lost + kafka_lost,
                  parquet_dup + jdbc_dup + kafka_dup, outage_s=round(outage.get("seconds", 0), 1),
                  well_formed=len(hits_ref), producer_unacknowledged=report.undelivered, dead_letters=len(dlq),
                  dead_letter_resends=len(sinks["dlq"]) - len(dlq),
                  per_sink=f"parquet:{parquet_lost}/{parquet_dup},jdbc:{jdbc_lost}/{jdbc_dup},"
                           f"kafka:{kafka_lost}/{kafka_dup}")
    assert job_state == "RUNNING", f"the job did not keep running through the outage: {job_state}"
    assert (parquet_lost, parquet_dup) == (0, 0), "Parquet: every hit exactly once"
    assert sinks["jdbc"] == zip_ref, "JDBC zip_test equals the reference"
    assert sinks["kafka"] == zip_ref, "the Kafka sink's last count per zipcode equals the reference"
    # Dead letters: each malformed message once by its coordinates (the Kafka sink may resend one), none of a hit.
    assert len(dlq) == malformed and not dlq & hits_ref


def test_database_outage_mid_stream(kafka_bootstrap, topic_factory, mysql_url, capsys, caplog):
    topic = topic_factory(partitions=3, prefix="fault-db")
    with scratch_database(mysql_url) as db_url:
        result = _start_job(topic, kafka_bootstrap, "zip_counts=jdbc:complete", "zip_window_counts=jdbc:update",
                            extra=[f"--jdbc-url={db_url}"])
        outage = {}
        try:
            with caplog.at_level("WARNING", logger="transforms.sinks"):
                report = _produce_with_outage(topic, kafka_bootstrap, _outage(stack_mariadb, 30, outage), seed=32)
                zip_ref = dict(report.zip_counts)
                windows_ref = window_reference(report.events)
                sinks = {}

                def settled():
                    sinks["zip_test"] = dict(table_rows(db_url, "zip_test"))
                    sinks["windows"] = {(start, zipcode): n for start, _, zipcode, n in
                                        table_rows(db_url, "zip_window_counts")}
                    equal = sinks["zip_test"] == zip_ref and sinks["windows"] == windows_ref
                    return equal or PipelineState.is_terminal(result.state)  # a failed job: nothing more will come

                wait_until(settled, SETTLE_TIMEOUT, interval=2.0)
                job_state = result.state
        finally:
            stack_mariadb.start()  # idempotent: a no-op when the server is up
            result.cancel()

    zip_lost, zip_dup = count_diff(sinks["zip_test"], zip_ref)
    win_lost, win_dup = count_diff(sinks["windows"], windows_ref)
    retries = [r for r in caplog.records if "retrying" in r.getMessage() and "jdbc" in r.getMessage()]
    print_figures(capsys, "database outage", 1, report.produced, zip_lost + win_lost, zip_dup + win_dup,
                  outage_s=round(outage.get("seconds", 0), 1), well_formed=report.well_formed,
                  jdbc_retries_logged=len(retries), per_table=f"zip_test:{zip_lost}/{zip_dup},"
                                                           f"zip_window_counts:{win_lost}/{win_dup}")
    assert job_state == "RUNNING", f"the job did not keep running through the outage: {job_state}"
    assert sinks["zip_test"] == zip_ref, "zip_test equals the reference"
    assert sinks["windows"] == windows_ref, "zip_window_counts equals the DuckDB reference"
    assert retries, "the JDBC sink logged its retries while the database was away"
