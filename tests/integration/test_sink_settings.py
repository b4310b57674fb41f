"""Settings per sink (`--sink QUERY=SINK[:MODE],KEY=VALUE...`), end to end on Prism against the real broker and
MariaDB: one available-now job writes zip_counts and zip_window_counts each to a topic and a table of its own, and
Parquet windows to a folder of their own, partitioned by day then zipcode, while the job-wide --output-topic gets nothing. Every one equals the
reference computed from the produced hits (the generator's totals, DuckDB's windows)."""
import datetime
import uuid

import duckdb
import orjson
import pytest
import sqlalchemy as sa

from hitstream.generator import ProduceSpec, produce
from pipelines.blog import run
from tests.reliability.faults import consume_all, latest_counts, table_rows, window_reference

pytestmark = pytest.mark.timeout(300)

UTC = datetime.timezone.utc


def _naive_utc(value) -> datetime.datetime:
    moment = value if isinstance(value, datetime.datetime) else datetime.datetime.fromisoformat(value)
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def test_two_queries_to_topics_and_tables_of_their_own(kafka_bootstrap, topic_factory, mysql_url, tmp_path):
    topic = topic_factory(partitions=3, prefix="per-sink")
    counts_topic, windows_topic, shared_topic = (topic_factory(prefix=f"per-sink-{name}")
                                                 for name in ("counts", "windows", "shared"))
    suffix = uuid.uuid4().hex[:8]
    totals_table, windows_table = f"totals_{suffix}", f"windows_{suffix}"
    report = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=5000, partitions=3,
                                 zipcodes=12, malformed_share=0.01, event_time_start_ms=1795478400000,
                                 event_time_span_seconds=7200, seed=17))
    sqlite_url = f"sqlite:///{tmp_path / 'job-wide.db'}"
    code = run(["--runner", "prism", f"--topic={topic}", f"--bootstrap-servers={kafka_bootstrap}",
                "--trigger=available-now", "--starting-offsets=earliest", f"--group-id=g-{topic}",
                f"--output-topic={shared_topic}", f"--jdbc-url={sqlite_url}",
                f"--parquet-path={tmp_path / 'job-wide' / 'hits'}",
                f"--sink=zip_counts=kafka:update,topic={counts_topic}",
                f"--sink=zip_window_counts=kafka:update,topic={windows_topic}",
                f"--sink=zip_counts=jdbc:complete,url={mysql_url},table={totals_table}",
                f"--sink=zip_window_counts=jdbc:update,url={mysql_url},table={windows_table}",
                f"--sink=zip_window_counts=parquet:append,path={tmp_path / 'windows'},partition-by=day,zipcode"])
    assert code == 0
    try:
        windows_ref = window_reference(report.events)
        assert latest_counts(kafka_bootstrap, counts_topic) == dict(report.zip_counts)
        kafka_windows = {}
        for _, _, _, value in consume_all(kafka_bootstrap, windows_topic):
            row = orjson.loads(value)
            key = (_naive_utc(row["window_start"]), row["zipcode"])
            kafka_windows[key] = max(kafka_windows.get(key, 0), row["count"])
        assert kafka_windows == windows_ref
        assert dict(table_rows(mysql_url, totals_table)) == dict(report.zip_counts)
        assert {(_naive_utc(start), zipcode): n for start, _, zipcode, n in table_rows(mysql_url, windows_table)} \
            == windows_ref
        parquet = duckdb.sql(f"SELECT window_start, zipcode, count FROM read_parquet('{tmp_path / 'windows'}/**/*."
                             f"parquet', hive_partitioning = true, hive_types_autocast = false)").fetchall()
        assert {(_naive_utc(start), zipcode): n for start, zipcode, n in parquet} == windows_ref
        days = [p for p in (tmp_path / "windows").iterdir() if p.is_dir() and not p.name.startswith("_")]
        assert days and all(d.name.startswith("day=") and any(z.name.startswith("zipcode=") for z in d.iterdir())
                            for d in days), "partitioned by day, then zipcode"
        assert consume_all(kafka_bootstrap, shared_topic, timeout=5) == [], "the job-wide topic got nothing"
        assert not (tmp_path / "job-wide.db").exists(), "the job-wide database was not touched"
    finally:
        engine = sa.create_engine(mysql_url)
        with engine.begin() as conn:
            for table in (totals_table, windows_table):
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()
