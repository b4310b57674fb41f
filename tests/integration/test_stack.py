"""The local stack works end to end: a real Kafka broker, MariaDB and Prism; no mocks."""
import time
import uuid
from pathlib import Path

import apache_beam as beam
import sqlalchemy
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to
from confluent_kafka import Consumer, Producer

import runners
import stack
from stack import beam_jars


def test_kafka_round_trip_on_three_partitions(kafka_bootstrap, topic_factory):
    topic = topic_factory(partitions=3)
    sent = {(i % 3, f"hit-{i}".encode()) for i in range(30)}
    errors = []
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for partition, value in sent:
        producer.produce(topic, value, key=b"94107", partition=partition,
                         on_delivery=lambda err, msg: errors.append(err) if err else None)
    assert producer.flush(30) == 0 and not errors

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"test-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    received = set()
    deadline = time.monotonic() + 60
    try:
        while len(received) < len(sent) and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                received.add((msg.partition(), msg.value()))
    finally:
        consumer.close()
    assert received == sent


def test_mariadb_table_round_trip(mysql_url):
    engine = sqlalchemy.create_engine(mysql_url)
    table = f"t_{uuid.uuid4().hex}"
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f"CREATE TABLE `{table}` (zip VARCHAR(16) PRIMARY KEY, count BIGINT NOT NULL)"))
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f"INSERT INTO `{table}` VALUES (:zip, :count)"),
                         [{"zip": "94107", "count": 3}, {"zip": "10001", "count": 5}])
        with engine.connect() as conn:
            rows = conn.execute(sqlalchemy.text(f"SELECT zip, count FROM `{table}` ORDER BY zip")).all()
        assert [tuple(row) for row in rows] == [("10001", 5), ("94107", 3)]
    finally:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f"DROP TABLE `{table}`"))
        engine.dispose()


def test_mariadb_scratch_database(mysql_url):
    engine = sqlalchemy.create_engine(mysql_url)
    database = f"hitstream_{uuid.uuid4().hex}"
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f"CREATE DATABASE `{database}`"))
            conn.execute(sqlalchemy.text(f"CREATE TABLE `{database}`.zip_test (zip VARCHAR(16), count BIGINT)"))
            conn.execute(sqlalchemy.text(f"DROP DATABASE `{database}`"))
    finally:
        engine.dispose()


def test_prism_runs_a_pipeline(prism_location):
    options = PipelineOptions(runner="PrismRunner", prism_location=prism_location, environment_type="LOOPBACK")
    with beam.Pipeline(options=options) as pipeline:
        counts = pipeline | beam.Create(["94107", "10001", "94107"]) | beam.combiners.Count.PerElement()
        assert_that(counts, equal_to([("94107", 2), ("10001", 1)]))


def test_a_users_prism_location_is_the_prism_a_job_runs_on(prism_location, tmp_path):
    own = tmp_path / "my-prism"
    own.symlink_to(prism_location)
    args = runners.pipeline_args("prism", streaming=False, user_args=[f"--prism_location={own}"])
    port = next(arg for arg in args if arg.startswith("--job_endpoint=")).rsplit(":", 1)[1]
    serving = [cmdline for cmdline in (path.read_bytes().split(b"\0") for path in Path("/proc").glob("[0-9]*/cmdline"))
               if cmdline[:3] == [str(own).encode(), b"--job_port", port.encode()]]
    assert serving, f"no Prism started from {own} serves port {port}"


def test_beam_jars_are_recorded():
    status = beam_jars.fetch_all()
    assert set(status) == set(beam_jars.JARS)
    for name, record in status.items():
        if record["status"] == "found":
            assert beam_jars.jar_path(name) == record["path"]
        else:
            assert record["status"] == "missing" and record["error"], record
            assert beam_jars.jar_path(name) is None


def test_status_reports_all_up(kafka_bootstrap, mysql_url, prism_location):
    report = stack.status()
    assert report["ok"], report
    assert report["kafka"]["healthy"] and report["mariadb"]["healthy"] and report["prism"]["built"]
