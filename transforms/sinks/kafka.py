"""The Kafka sink: each emitted row becomes one message (the blog's KafkaSink ForeachWriter, as a real sink).

* **Producer:** confluent-kafka with `enable.idempotence=true` and `acks=all`, so the producer's own retries never
  duplicate or reorder a message. Extra client settings (SASL/SSL, ...) pass through `producer_config`.
* **Key:** the zipcode as UTF-8 bytes (the ISP for isp_counts; the original key for dead letters).
* **Value:** JSON, `{"zipcode": "94107", "count": 42}` plus `"window_start"` and `"window_end"` (ISO-8601, UTC,
  milliseconds, `Z`) for windowed rows; or, with `value_format="text"`, the blog's `zipcode:count` (windowed rows:
  `window_start,window_end,zipcode:count`). Hits are always JSON, with every field.
* **Topic:** the `topic` option, or, when it is None, each row's own `topic` column, as Spark's Kafka sink does.
* **Modes:** update sends the rows that changed in the trigger, complete sends every row of each Snapshot.
* **Delivery is checked.** Every delivery report is read; `finish_bundle` flushes, re-sends messages that failed
  with a retriable error (with backoff, through the sink base), and raises if any is still undelivered, so the
  bundle fails and the runner retries it: a row is never dropped. A retried bundle may send a row again, so the
  guarantee is at-least-once per row, and a consumer that keeps the latest value per key sees exact counts.

`WriteDeadLettersToKafka` sends DeadLetter rows to a dead-letter topic: the value is JSON with the origin topic,
partition, offset and timestamp, the raw key and value bytes in base64, the error and the step that failed, and the
source record's headers (`[{"key", "value_base64"}]`, or null when the read does not include headers).

**Size limits.** A dead letter is about 4/3 of the bad message (base64) plus its error, so a message the input topic
accepted can be too big for a topic with the same limit. The dead-letter sink therefore raises its producer's
`message.max.bytes` to `DEAD_LETTER_MAX_MESSAGE_BYTES` (32 MiB: a 24 MiB bad message still fits) and, when the
dead-letter topic does not exist yet, creates it with `max.message.bytes` set to the same (an existing topic is left
as it is). A message that is still too big (for the producer, or for the topic) is never dropped: the bundle fails
with a message naming the record, its size and the setting to raise, so the job stops loudly instead of losing it.
"""
from __future__ import annotations

import base64
import datetime
import logging
from typing import Any, Dict, List, Optional, Tuple

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from transforms.rows import DeadLetter, Snapshot
from transforms.times import iso_utc
from transforms.sinks.base import RetryPolicy, Sink, SinkWriter

_LOGGER = logging.getLogger(__name__)

VALUE_FORMATS = ("json", "text")
DEFAULT_FLUSH_TIMEOUT = 60.0
DEAD_LETTER_MAX_MESSAGE_BYTES = 32 * 1024 * 1024


class DeliveryError(RuntimeError):
    """Messages of this bundle were not delivered. `retriable` says whether sending them again may succeed;
    `stalled`, that they are still queued in the producer (its flush timed out)."""

    def __init__(self, message: str, retriable: bool, stalled: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.stalled = stalled


def _base64(value: bytes) -> str:
    return base64.b64encode(bytes(value)).decode()


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return _base64(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def encode_key(row: tuple) -> Optional[bytes]:
    """Message key: zipcode (or ISP, or a dead letter's original key) as bytes."""
    if isinstance(row, DeadLetter):
        return row.key
    for field in ("zipcode", "isp"):
        if field in row._fields:
            value = getattr(row, field)
            return None if value is None else str(value).encode()
    return None


def row_to_dict(row: tuple) -> Dict[str, Any]:
    out = {}
    for name, value in zip(row._fields, row):
        out[name] = iso_utc(value) if isinstance(value, datetime.datetime) else value
    return out


def encode_value(row: tuple, value_format: str = "json") -> bytes:
    """Message value: JSON of the row, or the blog's `zipcode:count` text for count rows."""
    if isinstance(row, DeadLetter):
        return orjson.dumps({"topic": row.topic, "partition": row.partition, "offset": row.offset,
                             "timestamp": row.kafka_timestamp,
                             "key_base64": None if row.key is None else _base64(row.key),
                             "value_base64": None if row.value is None else _base64(row.value),
                             "error": row.error, "step": row.step,
                             "headers": None if row.headers is None else [
                                 {"key": key, "value_base64": None if value is None else _base64(value)}
                                 for key, value in row.headers]})
    if value_format == "text" and row._fields[-1] == "count":
        parts = ["null" if v is None else iso_utc(v) if isinstance(v, datetime.datetime) else str(v)
                 for v in row[:-1]]
        return f"{','.join(parts)}:{row[-1]}".encode()
    return orjson.dumps(row_to_dict(row), default=_json_default)


class KafkaWriter(SinkWriter):
    """Produces each row; checks every delivery by the end of the bundle. See the module docstring."""

    def __init__(self, bootstrap_servers: str, topic: Optional[str], value_format: str,
                 producer_config: Dict[str, str], flush_timeout: float) -> None:
        self._config = {"bootstrap.servers": bootstrap_servers, "enable.idempotence": True, "acks": "all",
                        "linger.ms": 5, "compression.type": "lz4", **producer_config}
        self._topic = topic
        self._value_format = value_format
        self._flush_timeout = flush_timeout
        self._producer: Optional[Producer] = None
        self._generation = 0
        self._failed: List[Tuple[str, Optional[bytes], bytes, str, KafkaError]] = []
        self.delivered = 0

    def setup(self) -> None:
        self._producer = Producer(self._config)

    def teardown(self) -> None:
        if self._producer is not None:
            self._producer.flush(self._flush_timeout)
            self._producer = None

    def start_bundle(self) -> None:
        # Messages of a failed bundle are sent again by the runner's retry; their late reports must not count here.
        self._generation += 1
        self._failed = []

    def is_transient(self, error: BaseException) -> bool:
        if isinstance(error, DeliveryError):
            return error.retriable
        if isinstance(error, KafkaException):
            return bool(error.args and isinstance(error.args[0], KafkaError) and error.args[0].retriable())
        return isinstance(error, BufferError)

    def _topic_of(self, row: tuple) -> str:
        if self._topic:
            return self._topic
        topic = getattr(row, "topic", None)
        if not topic:
            raise ValueError(f"kafka sink: no topic option and the row has no topic column: {row!r}")
        return topic

    def _produce(self, topic: str, key: Optional[bytes], value: bytes, what: str) -> None:
        generation = self._generation

        def on_delivery(error: Optional[KafkaError], message) -> None:
            if error is None:
                self.delivered += 1
            elif generation == self._generation:
                self._failed.append((topic, key, value, what, error))

        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:  # the local queue is full: serve delivery reports until there is room
                self._producer.poll(0.1)
            except KafkaException as error:
                if error.args and error.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    raise DeliveryError(_too_large(topic, key, value, what, error.args[0]), retriable=False) from None
                raise
        self._producer.poll(0)

    def _send(self, rows) -> None:
        for row in rows:
            key = encode_key(row)
            self._produce(self._topic_of(row), key, encode_value(row, self._value_format), _describe(row, key))

    def write_rows(self, rows: List[tuple], batch_id: int) -> None:
        self._send(rows)

    def write_snapshot(self, snapshot: Snapshot) -> None:
        self._send(snapshot.rows)

    def finish_bundle(self) -> None:
        failed, self._failed = self._failed, []
        for topic, key, value, what, _error in failed:  # a retry: send again what failed last time
            self._produce(topic, key, value, what)
        remaining = self._producer.flush(self._flush_timeout)
        if remaining:
            raise DeliveryError(f"kafka sink: {remaining} message(s) still undelivered after "
                                f"{self._flush_timeout:g}s", retriable=True, stalled=True)
        for topic, key, value, what, error in self._failed:
            if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:  # sending it again cannot help: say what to change
                raise DeliveryError(_too_large(topic, key, value, what, error), retriable=False)
        if self._failed:
            errors = [error for *_, error in self._failed]
            retriable = all(error.retriable() or error.code() in (KafkaError._MSG_TIMED_OUT, KafkaError._TRANSPORT,
                                                                  KafkaError._ALL_BROKERS_DOWN)
                            for error in errors)
            raise DeliveryError(f"kafka sink: {len(errors)} message(s) failed, e.g. {errors[0]}", retriable)

    def on_retry(self, error: BaseException) -> None:
        """After a broker restart librdkafka has been seen to deliver nothing more, however long it is given (the
        broker-restart fault test, 1 run in about 10). So when a flush timed out, take the stuck messages back
        (purged, they come back to the delivery reports as failed, for the retry to send again) and send with a new
        producer."""
        if not (isinstance(error, DeliveryError) and error.stalled):
            return
        _LOGGER.warning("kafka sink: messages stalled in the producer for %gs; sending them again with a new one",
                        self._flush_timeout)
        self._producer.purge(in_queue=True, in_flight=True)
        self._producer.flush(0)  # serve the purged messages' delivery reports
        self._producer = Producer(self._config)


def _describe(row: tuple, key: Optional[bytes]) -> str:
    """How an error names the row a message came from."""
    if isinstance(row, DeadLetter):
        return f"the dead letter of {row.topic} [{row.partition}] offset {row.offset}"
    return f"the row with key {key!r}"


def _too_large(topic: str, key: Optional[bytes], value: bytes, what: str, error: KafkaError) -> str:
    size = len(value) + len(key or b"")
    return (f"kafka sink: {what} is a {size:,}-byte message, more than topic {topic} or the producer accepts "
            f"({error.str()}). It is not dropped: the bundle fails. Raise the topic's max.message.bytes "
            f"(kafka-configs.sh --alter --entity-type topics --entity-name {topic} --add-config "
            f"max.message.bytes=<bytes>) and the producer's message.max.bytes (--kafka-option "
            f"message.max.bytes=<bytes>), or, for dead letters, use --dead-letter-path (Parquet has no size limit).")


class DeadLetterKafkaWriter(KafkaWriter):
    """A KafkaWriter that creates its topic, when absent, with room for dead letters of large messages."""

    def setup(self) -> None:
        super().setup()
        config = {"max.message.bytes": str(self._config["message.max.bytes"])}
        admin = AdminClient({key: value for key, value in self._config.items()
                             if key == "bootstrap.servers" or key.startswith(("security.", "sasl.", "ssl."))})
        try:
            if self._topic in admin.list_topics(timeout=10).topics:
                return
            admin.create_topics([NewTopic(self._topic, num_partitions=-1, replication_factor=-1,
                                          config=config)])[self._topic].result(timeout=30)
            _LOGGER.info("dead-letter kafka sink: created topic %s with %s", self._topic, config)
        except KafkaException as error:
            # Another worker created it first, or the broker is away (then auto-creation makes the topic with the
            # broker's limit, and a dead letter too big for it fails its bundle with the fix in the message).
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                _LOGGER.warning("dead-letter kafka sink: could not create topic %s with %s: %s", self._topic, config,
                                error)


class WriteToKafka(Sink):
    """Rows (update/append) or Snapshots (complete) -> one Kafka message per row."""

    def __init__(self, bootstrap_servers: str, topic: Optional[str], value_format: str = "json",
                 producer_config: Optional[Dict[str, str]] = None, flush_timeout: float = DEFAULT_FLUSH_TIMEOUT,
                 name: str = "", max_batch_size: int = 10_000, retry: Optional[RetryPolicy] = None) -> None:
        if value_format not in VALUE_FORMATS:
            raise ValueError(f"kafka sink: value format {value_format!r}; choose from {', '.join(VALUE_FORMATS)}")
        if not bootstrap_servers:
            raise ValueError("kafka sink: bootstrap servers are required")
        if topic is not None and not topic:
            raise ValueError("kafka sink: the topic is empty; give one, or None to use each row's topic column")
        super().__init__(f"kafka.{name or topic or 'by_row'}", max_batch_size=max_batch_size, retry=retry)
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self._value_format = value_format
        self._producer_config = dict(producer_config or {})
        self._flush_timeout = flush_timeout

    def make_writer(self) -> KafkaWriter:
        return KafkaWriter(self._bootstrap, self._topic, self._value_format, self._producer_config,
                           self._flush_timeout)


class WriteDeadLettersToKafka(WriteToKafka):
    """DeadLetter rows -> the dead-letter topic, one JSON message each (raw bytes in base64)."""

    def __init__(self, bootstrap_servers: str, topic: str, **kwargs) -> None:
        if not topic:
            raise ValueError("dead-letter kafka sink: a topic is required (--dead-letter-topic)")
        producer_config = {"message.max.bytes": DEAD_LETTER_MAX_MESSAGE_BYTES,
                           **(kwargs.pop("producer_config", None) or {})}
        super().__init__(bootstrap_servers, topic, "json", name=kwargs.pop("name", f"dead_letters.{topic}"),
                         producer_config=producer_config, **kwargs)

    def make_writer(self) -> DeadLetterKafkaWriter:
        return DeadLetterKafkaWriter(self._bootstrap, self._topic, self._value_format, self._producer_config,
                                     self._flush_timeout)
