"""The JDBC sink against the real MariaDB (and a real SQLite file), on Prism: tables equal the generator's reference in
complete and update modes; complete mode leaves exactly the latest snapshot; a killed connection does not lose a
batch. Tables are uuid-named and dropped afterwards."""
from __future__ import annotations

import datetime
import threading
import time
import uuid

import apache_beam as beam
import pytest
import sqlalchemy as sa
from apache_beam.options.pipeline_options import PipelineOptions

import runners
from hitstream.generator import ProduceSpec, produce
from pipelines.blog import build_pipeline
from transforms.rows import Snapshot, WindowCount, ZipCount
from transforms.sinks.base import SinkWriteFn
from transforms.sinks.jdbc import JdbcWriter, WriteToJdbc
from tests.reliability.faults import window_reference

pytestmark = pytest.mark.timeout(900)

UTC = datetime.timezone.utc
START_MS = 1795478400000  # 2026-11-23T19:20:00Z


@pytest.fixture
def mysql_table(mysql_url):
    names = []

    def make(prefix: str = "t") -> str:
        names.append(f"{prefix}_{uuid.uuid4().hex[:12]}")
        return names[-1]

    yield make
    with sa.create_engine(mysql_url).begin() as conn:
        for name in names:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS `{name}`"))


def _table(url: str, name: str) -> list:
    with sa.create_engine(url).connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(f"SELECT * FROM {name}"))]


def test_mariadb_and_sqlite_tables_equal_the_reference(kafka_bootstrap, topic_factory, mysql_url, mysql_table,
                                                       tmp_path):
    topic = topic_factory(partitions=4, prefix="sink-jdbc")
    report = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=20_000, partitions=4,
                                 zipcodes=40, malformed_share=0.02, event_time_start_ms=START_MS,
                                 event_time_span_seconds=3 * 3600, seed=21))
    zip_table, window_table = mysql_table("zip_test"), mysql_table("windows")
    sqlite_url = f"sqlite:///{tmp_path}/hitstream.db"
    args = [f"--topic={topic}", f"--bootstrap-servers={kafka_bootstrap}", "--trigger=available-now",
            f"--group-id=g-{topic}", "--sink=zip_counts=jdbc:complete", "--sink=zip_window_counts=console:update",
            "--sink=isp_counts=console:update", f"--jdbc-url={mysql_url}", f"--jdbc-table={zip_table}",
            "--console-num-rows=1"]
    options = PipelineOptions(args + runners.pipeline_args("prism", streaming=False))
    pipeline = beam.Pipeline(options=options)
    outputs = build_pipeline(pipeline, options)
    outputs["zip_window_counts:update"] | "WindowsToMariaDB" >> WriteToJdbc(
        mysql_url, window_table, query="zip_window_counts")
    outputs["isp_counts:update"] | "IspsToSQLite" >> WriteToJdbc(sqlite_url, query="isp_counts")
    pipeline.run().wait_until_finish()

    assert dict(_table(mysql_url, zip_table)) == dict(report.zip_counts)
    windows = {(start, zipcode): n for start, end, zipcode, n in _table(mysql_url, window_table)}
    assert windows == window_reference(report.events)
    assert all(end - start == datetime.timedelta(minutes=10) for start, end, _, _ in _table(mysql_url, window_table))
    assert dict(_table(sqlite_url, "isp_counts")) == dict(report.isp_counts)


def test_complete_mode_in_mariadb_leaves_exactly_the_latest_snapshot(mysql_url, mysql_table):
    table = mysql_table("complete")
    writer = JdbcWriter(mysql_url, table, ZipCount)
    fn = SinkWriteFn(writer, f"jdbc.{table}")
    fn.setup()
    first = Snapshot(0, (ZipCount("10001", 4), ZipCount("60601", 2), ZipCount("94107", 7)))
    second = Snapshot(1, (ZipCount("94107", 9), ZipCount("02134", 1)))  # 10001 and 60601 vanished, 02134 is new
    for snapshot in (first, second):
        fn.start_bundle()
        fn.process(snapshot)
        fn.finish_bundle()
        assert sorted(_table(mysql_url, table)) == sorted(snapshot.rows)
    # Window tables are keyed by (window_start, window_end, zipcode).
    windows = mysql_table("complete_windows")
    writer = JdbcWriter(mysql_url, windows, WindowCount)
    writer.setup()
    t0 = datetime.datetime(2026, 11, 23, 19, 2, tzinfo=UTC)
    t1, t2 = t0 + datetime.timedelta(minutes=5), t0 + datetime.timedelta(minutes=10)
    writer.write_snapshot(Snapshot(0, (WindowCount(t0, t2, "a", 1), WindowCount(t1, t1 + (t2 - t0), "a", 1))))
    writer.write_snapshot(Snapshot(1, (WindowCount(t1, t1 + (t2 - t0), "a", 3),)))
    assert _table(mysql_url, windows) == [(t1.replace(tzinfo=None), (t1 + (t2 - t0)).replace(tzinfo=None), "a", 3)]


def test_streaming_complete_mode_tracks_the_result_after_each_trigger(kafka_bootstrap, topic_factory, mysql_url,
                                                                      mysql_table):
    topic = topic_factory(partitions=2, prefix="sink-jdbc-live")
    table = mysql_table("zip_live")
    args = [f"--topic={topic}", f"--bootstrap-servers={kafka_bootstrap}", "--trigger=processing-time=1s",
            f"--group-id=g-{topic}", "--sink=zip_counts=jdbc:complete", f"--jdbc-url={mysql_url}",
            f"--jdbc-table={table}"]
    options = PipelineOptions(args + runners.pipeline_args("prism", streaming=True))
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, options)
    result = pipeline.run()
    try:
        expected = {}
        for wave, (zipcodes, seed) in enumerate([(3, 1), (8, 2)]):
            report = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=1500, partitions=2,
                                         zipcodes=zipcodes, seed=seed, keep_events=False))
            for zipcode, n in report.zip_counts.items():
                expected[zipcode] = expected.get(zipcode, 0) + n
            deadline = time.time() + 90
            while time.time() < deadline:
                got = dict(_table(mysql_url, table)) if sa.inspect(sa.create_engine(mysql_url)).has_table(table) \
                    else {}
                if got == expected:
                    break
                time.sleep(0.5)
            assert got == expected, f"wave {wave}"
    finally:
        result.cancel()


def test_a_killed_connection_does_not_lose_a_batch(mysql_url, mysql_table):
    table = mysql_table("killed")
    writer = JdbcWriter(mysql_url, table, ZipCount)
    fn = SinkWriteFn(writer, f"jdbc.{table}")
    fn.setup()
    fn.start_bundle()
    fn.process(ZipCount("1", 1))
    fn.finish_bundle()
    with writer._engine.connect() as conn:
        victim = conn.execute(sa.text("SELECT CONNECTION_ID()")).scalar()
    with sa.create_engine(mysql_url).connect() as admin:
        admin.execute(sa.text(f"KILL CONNECTION {int(victim)}"))
    fn.start_bundle()
    fn.process(ZipCount("1", 2))
    fn.process(ZipCount("2", 1))
    fn.finish_bundle()
    assert sorted(_table(mysql_url, table)) == [("1", 2), ("2", 1)]


def test_concurrent_upserts_from_several_writers_converge(mysql_url, mysql_table):
    # Four workers upserting overlapping keys in different orders: InnoDB may deadlock them; the base retries.
    table = mysql_table("concurrent")
    rows = [ZipCount(f"{i:05d}", n) for n in range(1, 6) for i in range(300)]
    errors = []

    def work(seed: int) -> None:
        try:
            writer = JdbcWriter(mysql_url, table, ZipCount)
            fn = SinkWriteFn(writer, f"jdbc.{table}", max_batch_size=100)
            fn.setup()
            ordered = sorted(rows, key=lambda r: hash((seed, r.zipcode)))
            for n in range(1, 6):
                fn.start_bundle()
                for row in ordered:
                    if row.count == n:
                        fn.process(row)
                fn.finish_bundle()
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert dict(_table(mysql_url, table)) == {f"{i:05d}": 5 for i in range(300)}
