"""No password in any log: `hitstream run` on Prism (available-now), writing to the real MariaDB and Kafka, with
every secret given only through files and the environment, and every log it makes searched for them.

The database account is a scratch one, created for the test with its own password and dropped after, so the
stack's shared `hitstream` account is never changed. The Kafka secrets (sasl.password from --kafka-options-file,
ssl.key.password from HITSTREAM_KAFKA_SSL_KEY_PASSWORD) go to every Kafka client; the local broker is PLAINTEXT,
and librdkafka accepts and ignores them there.

Searched: the run's stdout and stderr (Python logging at INFO, Prism's own log at debug, the terminal panel), the
dashboard's JSON while the job runs, and the stack's logs under ~/.cache/hitstream/logs."""
import getpass
import os
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import pymysql
import pytest

from hitstream.generator import ProduceSpec, produce
from stack import mariadb, paths
from tests.security.net import free_port, get, other_addresses, refuses

DASHBOARD_PATHS = ("/progress", "/progress/recent", "/status", "/results", "/tables")


def _admin(sql: str) -> None:
    """Run SQL as the stack's socket-authenticated MariaDB admin; the SQL goes on stdin, never in argv."""
    config = paths.run_dir() / "mariadb.cnf"
    result = subprocess.run(["mariadb", f"--defaults-file={config}", f"--user={getpass.getuser()}"],
                            input=sql, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def scratch_account(mysql_url):
    """(user, password, database): a MariaDB account that exists only for this test."""
    name = f"hitstream_sec_{uuid.uuid4().hex[:12]}"
    password = f"db-secret-{uuid.uuid4().hex}"
    account = f"'{name}'@'{mariadb.HOST}'"
    _admin(f"CREATE DATABASE `{name}`; CREATE USER {account} IDENTIFIED BY '{password}'; "
           f"GRANT ALL PRIVILEGES ON `{name}`.* TO {account};")
    yield name, password, name
    _admin(f"DROP USER IF EXISTS {account}; DROP DATABASE IF EXISTS `{name}`;")


def _secret_file(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


@pytest.mark.timeout(600)
def test_passwords_from_files_and_environment_appear_in_no_log(
        kafka_bootstrap, topic_factory, prism_location, scratch_account, tmp_path):
    user, db_password, database = scratch_account
    kafka_password = f"kafka-secret-{uuid.uuid4().hex}"
    key_password = f"key-secret-{uuid.uuid4().hex}"
    secrets = (db_password, kafka_password, key_password)

    topic = topic_factory(partitions=2, prefix="security")
    output_topic = topic_factory(partitions=1, prefix="security-out")
    dead_letter_topic = topic_factory(partitions=1, prefix="security-dlq")
    report = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=400, partitions=2,
                                 zipcodes=8, malformed_share=0.05, seed=9, keep_events=False))

    env = {name: value for name, value in os.environ.items()
           if name != "HITSTREAM_DB_PASSWORD" and not name.startswith("HITSTREAM_KAFKA_")}
    env.update({
        "HITSTREAM_DB_PASSWORD_FILE": _secret_file(tmp_path / "db.password", db_password + "\n"),
        "HITSTREAM_KAFKA_SSL_KEY_PASSWORD": key_password,
        "HITSTREAM_PROGRESS": "1",  # the terminal panel, rendered into stderr too
    })
    kafka_file = _secret_file(tmp_path / "kafka.properties",
                              f"# the broker here is PLAINTEXT: librdkafka ignores SASL settings\n"
                              f"sasl.password={kafka_password}\n")
    port = free_port()
    jdbc_url = f"mysql+pymysql://{user}@{mariadb.HOST}:{mariadb.PORT}/{database}"
    argv = [sys.executable, "-m", "hitstream.cli", "--verbose", "run", f"--topic={topic}",
            f"--bootstrap-servers={kafka_bootstrap}", "--trigger=available-now", "--starting-offsets=earliest",
            f"--group-id=security-{uuid.uuid4().hex}", "--sink=zip_counts=jdbc:complete",
            "--sink=zip_counts=kafka:update", "--sink=zip_window_counts=memory:complete",
            f"--output-topic={output_topic}", f"--dead-letter-topic={dead_letter_topic}", f"--jdbc-url={jdbc_url}",
            f"--kafka-options-file={kafka_file}", "--dashboard", f"--dashboard-port={port}",
            f"--prism_location={prism_location}", "--prism_log_level=debug"]
    assert not any(secret in " ".join(argv) for secret in secrets)

    stdout_path, stderr_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    dashboard_bodies = []
    other_interfaces_refused = []
    with open(stdout_path, "w") as stdout, open(stderr_path, "w") as stderr:
        job = subprocess.Popen(argv, stdout=stdout, stderr=stderr, env=env, cwd=tmp_path)
        try:
            # While the job runs: read everything the dashboard serves, and check it answers on loopback only.
            while job.poll() is None:
                try:
                    for path in DASHBOARD_PATHS:
                        dashboard_bodies.append(str(get(port, path)))
                    query = urllib.parse.urlencode({"q": "SELECT * FROM zip_window_counts"})
                    dashboard_bodies.append(str(get(port, f"/sql?{query}")))
                    other_interfaces_refused.append(all(refuses(a, port) for a in other_addresses()))
                except OSError:
                    pass  # not serving yet, or already gone
                time.sleep(0.2)
            code = job.wait(timeout=540)
        finally:
            if job.poll() is None:
                job.kill()
    out, err = stdout_path.read_text(), stderr_path.read_text()
    assert code == 0, err[-5000:]

    # The run really used those secrets: the scratch account's password reached the JDBC sink on the worker...
    with pymysql.connect(host=mariadb.HOST, port=mariadb.PORT, user=user, password=db_password,
                         database=database) as conn, conn.cursor() as cur:
        cur.execute("SELECT zip, count FROM zip_test")
        assert dict(cur.fetchall()) == dict(report.zip_counts)
    # ...the logs were captured (Python's, Prism's), and the dashboard was read while the job ran.
    assert f"mysql+pymysql://{user}:***@{mariadb.HOST}:{mariadb.PORT}/{database}" in err
    assert "PrismRunner" in err and topic in err
    assert dashboard_bodies and other_interfaces_refused and all(other_interfaces_refused)

    stack_logs = {path.name: path.read_text(errors="replace") for path in paths.log_dir().glob("*.log")}
    assert stack_logs, "no stack logs found"
    places = {"stdout": out, "stderr": err, "dashboard JSON": "\n".join(dashboard_bodies), **stack_logs}
    leaks = [(secret, place) for secret in secrets for place, text in places.items() if secret in text]
    assert not leaks, f"secrets found in logs: {leaks}"
