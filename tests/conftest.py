"""Shared fixtures: the local stack (Kafka, MariaDB, Prism) for integration tests.

Each fixture starts what it needs if it is not running yet (idempotent and quick when the
stack is up), so a test run does not depend on `python -m stack up` having run first.
"""
import uuid
from pathlib import Path

import pytest

# Everything in these folders talks to the local stack.
_STACK_DIRS = tuple(Path(__file__).parent / name for name in ("integration", "reliability", "security"))


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: needs the local stack (Kafka, MariaDB, Prism)")
    config.addinivalue_line("markers", "spark: needs pyspark (the `spark` extra) and Java 17+")


def pytest_collection_modifyitems(items):
    # Tests in the stack folders need Kafka/MariaDB/Prism; `-m "not integration"` skips them.
    for item in items:
        if any(item.path.is_relative_to(folder) for folder in _STACK_DIRS):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    from stack import kafka

    kafka.start()
    return kafka.BOOTSTRAP


@pytest.fixture(scope="session")
def topic_factory(kafka_bootstrap):
    """create(partitions=1, prefix="test") -> name of a new, empty, uuid-named topic."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from hitstream.generator import wait_for_leaders

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created = []

    def create(partitions: int = 1, prefix: str = "test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex}"
        # Kept whatever their records' timestamps: tests stamp records with fixed hittimes (2026-03-15, 2026-11-23),
        # and the broker's time-based retention (7 days) deleted those at its next check, every 5 minutes, from
        # under a running test. The Java streaming test then found its partitions starting at 33 and 256, not 0.
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                      config={"retention.ms": "-1"})])[name].result(30)
        created.append(name)
        wait_for_leaders(admin, name, partitions)
        return name

    yield create
    if created:
        for future in admin.delete_topics(created).values():
            future.exception(30)  # best effort: a failed delete only leaves a stray topic


@pytest.fixture(scope="session")
def mysql_url() -> str:
    """SQLAlchemy URL of the stack's MariaDB database `hitstream`."""
    from stack import mariadb

    mariadb.start()
    return mariadb.url()


@pytest.fixture(scope="session")
def prism_location() -> str:
    """Path of the Prism binary, for --prism_location."""
    from stack import prism

    return prism.ensure_prism()
