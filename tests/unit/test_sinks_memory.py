"""Tests for transforms/sinks/memory.py and hitstream/server.py: output-mode rules of the memory table, read-only
SQL (DuckDB with external access off), the HTTP endpoint behind `hitstream sql`, and the remote-runner refusal."""
from __future__ import annotations

import datetime
import uuid

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from hitstream import server
from transforms.rows import Hit, IspCount, Snapshot, WindowCount, ZipCount
from hitstream.sql_client import RemoteSqlError, query_remote
from runners.locality import RemoteRunnerError, check_local_runner
from transforms.sinks.memory import MemoryWriter
from transforms.sinks.memory_store import STORE, SqlError, memory_sql, memory_sql_result

pytestmark = pytest.mark.timeout(60)

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 11, 23, 19, 2, tzinfo=UTC)
T1 = T0 + datetime.timedelta(minutes=10)


@pytest.fixture
def table():
    name = f"t_{uuid.uuid4().hex[:10]}"
    yield name
    STORE.drop(name)


def test_update_upserts_by_key(table):
    writer = MemoryWriter(table, append=False)
    writer.write_rows([ZipCount("94107", 1), ZipCount("10001", 2)], 0)
    writer.write_rows([ZipCount("94107", 5)], 1)
    assert memory_sql(f"SELECT * FROM {table} ORDER BY zipcode") == [("10001", 2), ("94107", 5)]


def test_update_treats_a_null_key_as_one_group(table):
    writer = MemoryWriter(table, append=False)
    writer.write_rows([IspCount(None, 1), IspCount("Cox", 1)], 0)
    writer.write_rows([IspCount(None, 4)], 1)
    assert sorted(memory_sql(f"SELECT * FROM {table}"), key=repr) == sorted([(None, 4), ("Cox", 1)], key=repr)


def test_complete_replaces_the_whole_table(table):
    writer = MemoryWriter(table, append=False)
    writer.write_snapshot(Snapshot(0, (WindowCount(T0, T1, "a", 1), WindowCount(T0, T1, "b", 2))))
    writer.write_snapshot(Snapshot(1, (WindowCount(T0, T1, "b", 3),)))
    assert memory_sql(f"SELECT zipcode, count FROM {table}") == [("b", 3)]
    assert memory_sql(f"SELECT window_start FROM {table}")[0][0] == T0


def test_append_inserts_each_key_once(table):
    writer = MemoryWriter(table, append=True)
    hit = Hit(T0, "94107", "Cox", None, None, None, None, None, None, "2026-11-23", "hits", 0, 7, 0)
    writer.write_rows([hit], 0)
    writer.write_rows([hit, hit._replace(offset=8)], 1)  # a replay of offset 7 and a new record
    assert memory_sql(f"SELECT \"offset\" FROM {table} ORDER BY 1") == [(7,), (8,)]


@pytest.mark.parametrize("query", [
    "COPY zc TO '/tmp/hitstream-leak.csv'",
    "ATTACH '/tmp/hitstream-other.db' AS other",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM '/etc/passwd'",
    "INSERT INTO {t} VALUES ('x', 1)",
    "UPDATE {t} SET count = 0",
    "DELETE FROM {t}",
    "DROP TABLE {t}",
    "CREATE TABLE evil AS SELECT 1",
    "SELECT 1; DROP TABLE {t}",
    "SET enable_external_access = true",
    "PRAGMA database_list",
    "INSTALL httpfs",
    "LOAD httpfs",
    "CALL pragma_version()",
    "EXPORT DATABASE '/tmp/hitstream-export'",
    "",
])
def test_user_sql_is_refused_unless_a_read_only_select(table, query):
    MemoryWriter(table, append=False).write_rows([ZipCount("1", 1)], 0)
    with pytest.raises(SqlError):
        memory_sql(query.format(t=table))
    assert memory_sql(f"SELECT * FROM {table}") == [("1", 1)]  # and nothing changed


def test_row_limit_and_timeout(table):
    MemoryWriter(table, append=False).write_rows(
        [ZipCount(str(i), i) for i in range(50)], 0)
    result = memory_sql_result(f"SELECT * FROM {table}", row_limit=10)
    assert len(result.rows) == 10 and result.truncated and result.columns == ("zipcode", "count")
    with pytest.raises(SqlError, match="cancelled"):
        memory_sql_result("SELECT count(*) FROM range(1000000000000)", timeout=1)


def test_hitstream_sql_endpoint_answers_and_refuses(table):
    MemoryWriter(table, append=False).write_rows([ZipCount("94107", 3)], 0)
    http = server.ensure_started(0)  # port 0: any free port
    port = http.server_port
    try:
        result = query_remote(f"SELECT zipcode, count FROM {table}", port=port)
        assert result.rows == [("94107", 3)] and "94107" in str(result)
        with pytest.raises(RemoteSqlError, match="only SELECT"):
            query_remote(f"DROP TABLE {table}", port=port)
        with pytest.raises(RemoteSqlError, match="Permission|disabled"):
            query_remote("SELECT * FROM read_csv('/etc/passwd')", port=port)
    finally:
        server.stop(0)
    assert http.server_address[0] == "127.0.0.1"


def test_query_remote_without_a_job_says_what_to_do():
    with pytest.raises(RemoteSqlError, match="memory sink"):
        query_remote("SELECT 1", port=1)


@pytest.mark.parametrize("args", [
    ["--runner=DataflowRunner"],
    ["--runner=FlinkRunner", "--flink_master=flink.example.com:8081"],
    ["--runner=SparkRunner", "--spark_master_url=spark://cluster:7077"],
    ["--runner=PortableRunner", "--environment_type=DOCKER"],
])
def test_remote_runners_refuse_the_memory_sink(args):
    with pytest.raises(RemoteRunnerError, match="memory sink"):
        check_local_runner(PipelineOptions(args))


@pytest.mark.parametrize("args", [
    ["--runner=PrismRunner", "--environment_type=LOOPBACK"],
    ["--runner=DirectRunner"],
    ["--runner=FlinkRunner", "--flink_master=[local]", "--environment_type=LOOPBACK"],
    ["--runner=SparkRunner", "--spark_master_url=local[2]", "--environment_type=LOOPBACK"],
])
def test_local_runners_allow_the_memory_sink(args):
    check_local_runner(PipelineOptions(args))
