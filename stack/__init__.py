"""The local stack: Kafka, MariaDB, the Prism binary, Beam's Python boot program (the prism-cluster workers) and the
optional Beam jars.

`python -m stack up|down|status`. Services run as detached processes with pid files and
logs under the cache dir (stack.paths), so they outlive the process that started them.
"""
import logging
import os
import time

from stack import beam_jars, java_kafkaio, kafka, mariadb, prism, python_worker, versions

_LOGGER = logging.getLogger(__name__)


def up() -> None:
    """Build or fetch what is missing and start what is not running; idempotent."""
    for step, action in [("prism", prism.ensure_prism), ("python boot", python_worker.ensure_boot),
                         ("beam jars", beam_jars.fetch_all),
                         ("kafka", kafka.start), ("mariadb", mariadb.start)]:
        started = time.monotonic()
        action()
        _LOGGER.info("%s ready in %.1fs", step, time.monotonic() - started)


def down() -> None:
    kafka.stop()
    mariadb.stop()


def status() -> dict:
    """What is up; status()["ok"] is True when Kafka, MariaDB and Prism all are."""
    report = {
        "beam_version": versions.BEAM_VERSION,
        "kafka": kafka.status(),
        "mariadb": mariadb.status(),
        "prism": {"path": prism.prism_path(), "built": os.access(prism.prism_path(), os.X_OK)},
        "python_worker": python_worker.status(),
        "java_kafkaio": java_kafkaio.status(),
        "beam_jars": beam_jars.load_status(),
    }
    report["ok"] = report["kafka"]["healthy"] and report["mariadb"]["healthy"] and report["prism"]["built"]
    return report
