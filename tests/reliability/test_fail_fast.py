"""Errors that retrying cannot fix fail the job within seconds, with the cause in the message (issue 19, part 4).

`hitstream run` as a user starts it, on Prism, against the real MariaDB and Kafka: a database account without INSERT,
one without CREATE for a table that is missing, a topic the broker's ACLs deny, and a topic whose size limit is
below every message. The sinks' retry loop (about 2 minutes for JDBC) is for transient errors only, so each job must
end well before it would have run out. Each prints a `FAULT` figures line with the seconds it took.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient, NewTopic,
                                   ResourcePatternType, ResourceType)

from hitstream.generator import ProduceSpec, produce
from stack import mariadb
from tests.reliability.faults import print_figures, scratch_database
from transforms.rows import ZipCount
from transforms.sinks.jdbc import JDBC_RETRY, JdbcWriter

REPO = Path(__file__).resolve().parents[2]
HITS = 300
# Prism's start and the first bundle take about 10 s here; the JDBC retry loop alone would take JDBC_RETRY's budget.
BOUND_SECONDS = 60
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def hits_topic(kafka_bootstrap, topic_factory):
    topic = topic_factory(partitions=2, prefix="failfast")
    produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=HITS, partitions=2))
    return topic


def _run(capsys, fault: str, topic: str, bootstrap: str, *sink_args: str, env=None) -> str:
    """`hitstream run` until it ends; asserts it failed within BOUND_SECONDS and returns its stderr."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "hitstream.cli", "run", "--runner", "prism", f"--topic={topic}",
                           f"--bootstrap-servers={bootstrap}", f"--group-id=g-{uuid.uuid4().hex}",
                           "--trigger=available-now", *sink_args],
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "HITSTREAM_PROGRESS": "0",
                                         **(env or {})},
                          capture_output=True, text=True, timeout=BOUND_SECONDS * 3)
    seconds = time.monotonic() - started
    # Nothing is lost or duplicated to count: the job stops before its sink can write.
    print_figures(capsys, f"fail fast: {fault}", 1, HITS, "n/a", "n/a", seconds=f"{seconds:.1f}", exit_code=done.returncode,
                  bound=BOUND_SECONDS, jdbc_retry_budget=f"{JDBC_RETRY.budget():.0f}")
    assert done.returncode != 0, done.stderr[-3000:]
    assert seconds < BOUND_SECONDS, f"{fault}: took {seconds:.1f} s"
    return done.stderr


@pytest.fixture
def restricted_account(mysql_url):
    """make(database, grants) -> (URL, password) of a new account that holds only `grants` on `database`, dropped
    after. The password goes in HITSTREAM_DB_PASSWORD, as the README advises, not in the URL."""
    made = []

    def make(database: str, grants: str) -> str:
        user, password = f"ff{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
        mariadb.admin_sql(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}';\n"
                          f"GRANT {grants} ON `{database}`.* TO '{user}'@'127.0.0.1';")
        made.append(user)
        stack_url = sa.engine.make_url(mysql_url)
        url = sa.engine.URL.create(stack_url.drivername, username=user, host=stack_url.host, port=stack_url.port,
                                   database=database)
        return url.render_as_string(), {"HITSTREAM_DB_PASSWORD": password}

    yield make
    if made:
        mariadb.admin_sql("".join(f"DROP USER IF EXISTS '{user}'@'127.0.0.1';\n" for user in made))


def _database(url: str) -> str:
    return sa.engine.make_url(url).database


def test_a_jdbc_account_without_insert_fails_fast(kafka_bootstrap, hits_topic, mysql_url, restricted_account,
                                                 capsys):
    with scratch_database(mysql_url) as db_url:
        owner = JdbcWriter(db_url, "zip_test", ZipCount)
        owner.setup()  # the table exists, made by an account that may
        owner.teardown()
        reader, password = restricted_account(_database(db_url), "SELECT")
        stderr = _run(capsys, "jdbc without INSERT", hits_topic, kafka_bootstrap, "--sink=zip_counts=jdbc:update",
                      f"--jdbc-url={reader}", env=password)
    assert "INSERT, UPDATE command denied" in stderr and "zip_test" in stderr, stderr[-3000:]


def test_a_missing_table_the_account_may_not_create_fails_fast(kafka_bootstrap, hits_topic, mysql_url,
                                                               restricted_account, capsys):
    with scratch_database(mysql_url) as db_url:
        writer, password = restricted_account(_database(db_url), "SELECT, INSERT, UPDATE, DELETE")
        stderr = _run(capsys, "jdbc table missing, no CREATE", hits_topic, kafka_bootstrap,
                      "--sink=zip_counts=jdbc:update", f"--jdbc-url={writer}", env=password)
    assert "CREATE command denied" in stderr and "zip_test" in stderr, stderr[-3000:]


def test_a_topic_the_acls_deny_fails_fast(kafka_bootstrap, hits_topic, topic_factory, capsys):
    output = topic_factory(partitions=1, prefix="failfast-denied")
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    deny = AclBinding(ResourceType.TOPIC, output, ResourcePatternType.LITERAL, "User:ANONYMOUS", "*",
                      AclOperation.WRITE, AclPermissionType.DENY)
    admin.create_acls([deny])[deny].result(30)
    try:
        stderr = _run(capsys, "kafka topic authorization", hits_topic, kafka_bootstrap,
                      "--sink=zip_counts=kafka:update", f"--output-topic={output}")
    finally:
        admin.delete_acls([AclBindingFilter(ResourceType.TOPIC, output, ResourcePatternType.LITERAL, "User:ANONYMOUS",
                                            "*", AclOperation.WRITE, AclPermissionType.DENY)])
    assert "authorization" in stderr.lower() and output in stderr, stderr[-3000:]


def test_a_topic_too_small_for_any_message_fails_fast(kafka_bootstrap, hits_topic, capsys):
    output = f"failfast-small-{uuid.uuid4().hex}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(output, 1, 1, config={"max.message.bytes": "16"})])[output].result(30)
    try:
        stderr = _run(capsys, "kafka message too large", hits_topic, kafka_bootstrap,
                      "--sink=zip_counts=kafka:update", f"--output-topic={output}")
    finally:
        admin.delete_topics([output])
    assert "max.message.bytes" in stderr and output in stderr, stderr[-3000:]
