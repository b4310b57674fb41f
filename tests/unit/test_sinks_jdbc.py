"""Tests for transforms/sinks/jdbc.py on a real SQLite file: upserts, complete-mode replacement, identifiers,
password masking, and which database errors count as transient. MariaDB runs in tests/integration/."""
from __future__ import annotations

import datetime
import logging

import pymysql
import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from transforms.rows import DeadLetter, Hit, IspCount, Snapshot, WindowCount, ZipCount
from transforms.sinks.base import RetryPolicy, SinkWriteFn
from transforms.sinks.jdbc import (
    JdbcWriter, WriteToJdbc, is_transient_db_error, mask_url, resolve_url, validate_identifier)

pytestmark = pytest.mark.timeout(60)

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 11, 23, 19, 2, tzinfo=UTC)
T1 = T0 + datetime.timedelta(minutes=10)


def _rows(url: str, table: str) -> list:
    with sa.create_engine(url).connect() as conn:
        return sorted(tuple(r) for r in conn.execute(sa.text(f'SELECT * FROM "{table}"')))


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/sink.db"


def test_blog_table_zip_test_is_created_and_upserted(url):
    writer = WriteToJdbc(url, query="zip_counts").make_writer()
    writer.setup()
    writer.write_rows([ZipCount("94107", 1), ZipCount("10001", 2)], 0)
    writer.write_rows([ZipCount("94107", 4)], 1)
    writer.write_rows([ZipCount("94107", 4)], 1)  # a retried batch changes nothing
    assert _rows(url, "zip_test") == [("10001", 2), ("94107", 4)]
    columns = [c["name"] for c in sa.inspect(sa.create_engine(url)).get_columns("zip_test")]
    assert columns == ["zip", "count"]


def test_complete_snapshots_leave_exactly_the_latest_result(url):
    writer = JdbcWriter(url, "windows", WindowCount)
    writer.setup()
    writer.write_snapshot(Snapshot(0, (WindowCount(T0, T1, "a", 1), WindowCount(T0, T1, "b", 2))))
    writer.write_snapshot(Snapshot(1, (WindowCount(T0, T1, "b", 5), WindowCount(T1, T1, "c", 1))))
    got = [(row[2], row[3]) for row in _rows(url, "windows")]
    assert sorted(got) == [("b", 5), ("c", 1)]
    writer.write_snapshot(Snapshot(2, ()))
    assert _rows(url, "windows") == []


def test_null_isp_is_stored_as_empty_string(url):
    writer = JdbcWriter(url, "isps", IspCount)
    writer.setup()
    writer.write_rows([IspCount(None, 2), IspCount("Cox", 1)], 0)
    assert _rows(url, "isps") == [("", 2), ("Cox", 1)]


def test_hits_and_dead_letters_are_idempotent_by_kafka_coordinates(url):
    hit = Hit(T0, "94107", "Cox", None, None, None, None, None, "/x", "2026-11-23", "hits", 1, 9, 5)
    writer = JdbcWriter(url, "hits", Hit)
    writer.setup()
    writer.write_rows([hit], 0)
    writer.write_rows([hit], 1)
    assert len(_rows(url, "hits")) == 1
    dead = JdbcWriter(url, "dead", DeadLetter)
    dead.setup()
    dead.write_rows([DeadLetter("hits", 0, 3, 7, None, b"\xff", "bad utf-8", "parse")], 0)
    assert _rows(url, "dead") == [("hits", 0, 3, 7, None, b"\xff", "bad utf-8", "parse")]


@pytest.mark.parametrize("name", ["zip_test; DROP TABLE x", "zip test", "1abc", "a" * 65, "x'--", 'x"', ""])
def test_hostile_or_odd_table_names_are_refused(name):
    with pytest.raises(ValueError, match="refused"):
        WriteToJdbc("sqlite:///x.db", name, query="zip_counts")
    with pytest.raises(ValueError):
        validate_identifier(name)


def test_reserved_words_are_quoted(url):
    writer = JdbcWriter(url, "select", ZipCount)  # a legal identifier that is also a keyword
    writer.setup()
    writer.write_rows([ZipCount("1", 1)], 0)
    assert _rows(url, "select") == [("1", 1)]


def test_an_existing_table_without_a_key_is_refused(url):
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text("CREATE TABLE zip_test (zip TEXT, count INTEGER)"))
    writer = WriteToJdbc(url, query="zip_counts").make_writer()
    with pytest.raises(ValueError, match="primary key"):
        writer.setup()


def test_passwords_are_masked_and_may_come_from_the_environment(monkeypatch, caplog, tmp_path):
    assert mask_url("mysql+pymysql://u:s3cret@h:3306/db") == "mysql+pymysql://u:***@h:3306/db"
    monkeypatch.setenv("HITSTREAM_DB_PASSWORD", "fromenv")
    assert resolve_url("mysql+pymysql://u@h/db").password == "fromenv"
    assert resolve_url("mysql+pymysql://u:inline@h/db").password == "inline"
    assert "s3cret" not in repr(JdbcWriter("mysql+pymysql://u:s3cret@h/db", "t", ZipCount))
    with caplog.at_level(logging.DEBUG):
        writer = JdbcWriter(f"sqlite:///{tmp_path}/p.db", "t", ZipCount)
        writer.setup()
    assert "fromenv" not in caplog.text


def _operational(code: int, text: str) -> sa_exc.OperationalError:
    return sa_exc.OperationalError("INSERT ...", {}, pymysql.err.OperationalError(code, text))


def test_transient_errors():
    assert is_transient_db_error(_operational(1213, "Deadlock found when trying to get lock"))
    assert is_transient_db_error(_operational(2006, "MySQL server has gone away"))
    assert is_transient_db_error(_operational(2013, "Lost connection to MySQL server during query"))
    assert is_transient_db_error(_operational(2003, "Can't connect to MySQL server"))
    assert not is_transient_db_error(_operational(1045, "Access denied"))
    assert not is_transient_db_error(sa_exc.IntegrityError("INSERT", {}, pymysql.err.IntegrityError(1062, "dup")))
    assert not is_transient_db_error(ValueError("bad"))


def test_a_deadlock_is_retried_by_the_sink(url):
    writer = JdbcWriter(url, "zip_test", ZipCount)
    real = writer.write_rows
    failures = [_operational(1213, "Deadlock found")]

    def flaky(rows, batch_id):
        if failures:
            raise failures.pop()
        real(rows, batch_id)

    writer.write_rows = flaky
    fn = SinkWriteFn(writer, "jdbc.zip_test", retry=RetryPolicy(initial_backoff=0.0))
    fn.setup()
    fn.start_bundle()
    fn.process(ZipCount("94107", 7))
    fn.finish_bundle()
    assert _rows(url, "zip_test") == [("94107", 7)]
