"""Preflight: checks that fail before anything starts (the broker, the database, the folders a job writes), each
with the fix in its message. A mode a query forbids is refused earlier, when the options are parsed."""
from __future__ import annotations

import logging
import os
import socket
from typing import Optional

import sqlalchemy
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from pipelines.options import HitstreamOptions, Settings, kafka_client_settings
from pipelines.sinks import SinkSettings
from transforms.sinks.jdbc import DEFAULT_URL, mask_url, resolve_url

_LOGGER = logging.getLogger(__name__)


def preflight(hs: HitstreamOptions, settings: Settings) -> None:
    """Every check the job's options call for: the broker, the database, the folders it writes."""
    kinds = {choice.sink for choice in settings.sinks}
    if hs.source == "kafka" or "kafka" in kinds or hs.dead_letter_topic:
        check_reachable(first_bootstrap(hs.bootstrap_servers), "the Kafka broker",
                        "Start the local stack with `hitstream up`, or pass --bootstrap-servers.")
    if hs.source == "kafka" and not (hs.subscribe_pattern or hs.assign):
        check_topics(hs)
    sinks = SinkSettings.from_options(hs)
    for choice in settings.sinks:
        own = sinks.for_choice(choice)
        if choice.sink in ("jdbc", "foreach"):
            check_database(own.jdbc_url)
        if choice.sink == "parquet":
            what = f"the path= of --sink {choice.query}=parquet" if choice.setting("path") else "--parquet-path"
            check_writable(own.parquet_path_for(choice), what)
    for path, what in ((hs.checkpoint_dir, "--checkpoint-dir"), (hs.dead_letter_path, "--dead-letter-path")):
        if path:
            check_writable(path, what)


def check_reachable(host_port: str, what: str, fix: str, timeout: float = 3.0) -> None:
    """Fail early, with the fix in the message, when a TCP service does not answer."""
    host, _, port = host_port.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except (OSError, ValueError) as error:
        raise SystemExit(f"hitstream: {what} at {host_port} is unreachable ({error}). {fix}") from None


def check_topics(hs: HitstreamOptions, timeout: float = 10.0) -> None:
    """The subscribed topics exist (inside the job, a missing one ends it with a traceback), or fail with the fix."""
    topics = [topic.strip() for topic in hs.topic.split(",") if topic.strip()]
    admin = AdminClient({"bootstrap.servers": hs.bootstrap_servers, **kafka_client_settings(hs)})
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as error:
        raise SystemExit(f"hitstream: could not list the topics at {hs.bootstrap_servers} ({error}). Check "
                         "--bootstrap-servers and the Kafka client settings.") from None
    missing = [topic for topic in topics if topic not in existing]
    if missing:
        raise SystemExit(f"hitstream: Kafka topic(s) {', '.join(missing)} do not exist at {hs.bootstrap_servers}. "
                         f"Create them (`hitstream produce --topic {missing[0]}` creates one as it writes, or "
                         f"kafka-topics.sh --create), check --topic, or use --subscribe-pattern to read topics "
                         f"as they appear.")


def check_database(url: Optional[str]) -> None:
    """Connect once to the JDBC sink's database (default: the embedded SQLite file), or fail with the fix."""
    if url and sqlalchemy.engine.make_url(url).password is not None:
        _LOGGER.warning("--jdbc-url carries a password, which shows in `ps`, shell history and the pipeline "
                        "options; leave it out and set HITSTREAM_DB_PASSWORD or HITSTREAM_DB_PASSWORD_FILE")
    target = resolve_url(url or DEFAULT_URL)
    if target.drivername.startswith("sqlite") and target.database:
        check_writable(os.path.dirname(os.path.abspath(target.database)), "the SQLite folder")
    try:
        engine = sqlalchemy.create_engine(target)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as error:  # any driver error: report it, with the URL masked
        reason = str(error).splitlines()[0]
        raise SystemExit(f"hitstream: the database at {mask_url(target)} is unreachable ({reason}). Start the "
                         "local stack with `hitstream up`, or fix --jdbc-url.") from None


def check_writable(path: str, what: str) -> None:
    folder = os.path.abspath(path)
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, ".hitstream-write-check")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        raise SystemExit(f"hitstream: {what} {folder} is not writable ({error}); choose another folder.") from None


def first_bootstrap(servers: str) -> str:
    return servers.split(",")[0].strip()
