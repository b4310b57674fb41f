"""A single-node Apache Kafka 4 (KRaft: broker and controller in one JVM) on 127.0.0.1.

The jars come from Maven Central through `mvn` (stack/kafka-pom.xml), so no download
from Apache's mirrors is needed. The broker is ready when a produce + consume round trip
works, which is also what `status()` checks.
"""
import base64
import logging
import subprocess
import time
import uuid
from importlib import resources
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from stack import paths, process
from stack.build_tools import mvn_copy_dependencies
from stack.versions import KAFKA_VERSION

_LOGGER = logging.getLogger(__name__)

NAME = "kafka"
HOST = "127.0.0.1"
PORT = 9092
CONTROLLER_PORT = 9093
BOOTSTRAP = f"{HOST}:{PORT}"
_HEALTH_TOPIC = "__hitstream_health"

_SERVER_PROPERTIES = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "listeners": f"PLAINTEXT://{HOST}:{PORT},CONTROLLER://{HOST}:{CONTROLLER_PORT}",
    "advertised.listeners": f"PLAINTEXT://{HOST}:{PORT}",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    # A dynamic quorum of one, as `StorageTool format --standalone` expects.
    "controller.quorum.bootstrap.servers": f"{HOST}:{CONTROLLER_PORT}",
    "num.partitions": "1",
    "default.replication.factor": "1",
    "auto.create.topics.enable": "true",
    # Internal topics default to 3 replicas, which a single node can never satisfy.
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    # Tests start consumer groups all the time; don't wait 3 s for more members.
    "group.initial.rebalance.delay.ms": "0",
    # Messages up to 16 MiB (the default is about 1 MB): the fault suite sends 5 MB values, and their dead letters
    # (base64, about 4/3 the size) go to a topic the dead-letter sink creates with a higher limit of its own.
    "message.max.bytes": str(16 * 1024 * 1024),
    # ACLs are checked, and everything without one is allowed: the fault suite denies one topic to show that an
    # authorization error fails a job at once instead of being retried.
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "allow.everyone.if.no.acl.found": "true",
}


def libs_dir() -> Path:
    return paths.tool_dir("kafka") / KAFKA_VERSION


def fetch_jars() -> Path:
    """Resolve kafka_2.13 and its dependencies into the cache once per Kafka version."""
    libs = libs_dir()
    if not (libs / ".complete").exists():
        _LOGGER.info("fetching Kafka %s jars with mvn into %s", KAFKA_VERSION, libs)
    return mvn_copy_dependencies("kafka-pom.xml", {"kafka.version": KAFKA_VERSION}, libs,
                                 f"mvn fetching Kafka {KAFKA_VERSION}")


def _log_dirs() -> Path:
    return paths.data_dir("kafka")


def _write_config() -> Path:
    props = dict(_SERVER_PROPERTIES, **{"log.dirs": str(_log_dirs())})
    config = paths.run_dir() / "kafka-server.properties"
    config.write_text("".join(f"{key}={value}\n" for key, value in props.items()))
    return config


def _java(libs: Path) -> list:
    log4j = resources.files("stack").joinpath("kafka-log4j2.xml")
    return ["java", "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*"]


def _format_storage(libs: Path, config: Path) -> None:
    """Write meta.properties and the initial quorum, once per data dir."""
    if (_log_dirs() / "meta.properties").exists():
        return
    # Kafka cluster ids are 16 random bytes in unpadded URL-safe base64.
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    result = subprocess.run(
        _java(libs) + ["kafka.tools.StorageTool", "format", "--standalone",
                       "--cluster-id", cluster_id, "--config", str(config)],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"Kafka storage format failed:\n{result.stdout}{result.stderr}")
    _LOGGER.info("formatted Kafka storage in %s (cluster %s)", _log_dirs(), cluster_id)


def _client_config(timeout: float) -> dict:
    return {
        "bootstrap.servers": BOOTSTRAP,
        "socket.connection.setup.timeout.ms": int(timeout * 1000),
        # librdkafka prints connection errors to stderr by default; while waiting for
        # the broker those are expected, so send them to logging instead.
        "logger": logging.getLogger(f"{__name__}.client"),
    }


def healthy(timeout: float = 10.0) -> bool:
    """True when a message produced now can be consumed back."""
    if not process.port_in_use(PORT):
        return False
    token = uuid.uuid4().hex.encode()
    delivered = []
    producer = Producer(dict(_client_config(timeout), **{"message.timeout.ms": int(timeout * 1000)}))
    producer.produce(_HEALTH_TOPIC, token, on_delivery=lambda err, msg: delivered.append((err, msg)))
    producer.flush(timeout)
    if not delivered or delivered[0][0] is not None:
        return False
    msg = delivered[0][1]
    consumer = Consumer(dict(_client_config(timeout), **{"group.id": "hitstream-health", "enable.auto.commit": False}))
    try:
        consumer.assign([TopicPartition(_HEALTH_TOPIC, msg.partition(), msg.offset())])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = consumer.poll(0.5)
            if got is not None and got.error() is None and got.value() == token:
                return True
        return False
    except KafkaException:
        return False
    finally:
        consumer.close()


def start(timeout: float = 120.0) -> None:
    """Start the broker unless it is already healthy; return once it is."""
    if healthy():
        return
    pid = process.running_pid(NAME)
    if pid is None:
        for port in (PORT, CONTROLLER_PORT):
            if process.port_in_use(port):
                raise RuntimeError(f"{HOST}:{port} is taken by a process that is not this stack's Kafka")
        libs = fetch_jars()
        config = _write_config()
        _format_storage(libs, config)
        pid = process.spawn(NAME, _java(libs) + ["kafka.Kafka", str(config)])
    process.wait_until_ready(NAME, pid, healthy, timeout)
    _LOGGER.info("Kafka %s ready at %s", KAFKA_VERSION, BOOTSTRAP)


def stop() -> None:
    process.stop(NAME)


def status() -> dict:
    return {
        "version": KAFKA_VERSION,
        "bootstrap": BOOTSTRAP,
        "pid": process.running_pid(NAME),
        "healthy": healthy(timeout=5),
        "log": str(process.log_file(NAME)),
    }
