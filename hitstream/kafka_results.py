"""The current results as a job's Kafka sink wrote them: what the dashboard charts when the workers run in other
processes (`--runner prism-cluster`, a cluster), where the sinks' rows never pass through this process.

A consumer thread reads the sink's topic from the start and keeps, per query and key, the row with the highest
count (`transforms.rows.replaces`), the same rule REGISTRY applies to the rows the sinks hand it in-process. Values
must be JSON (`--kafka-value-format json`, the default); each row is told by its fields, so one topic may carry
several queries.
"""
from __future__ import annotations

import datetime
import logging
import threading
import uuid
from typing import Dict, List, Mapping, Optional

import orjson
from confluent_kafka import Consumer

from transforms.catalog import AGGREGATION_OF_ROW
from transforms.rows import replaces, result_key

_LOGGER = logging.getLogger(__name__)

# The aggregations' (query, row type) by the row type's field names.
_ROW_TYPES = {row_type._fields: (query, row_type) for row_type, query in AGGREGATION_OF_ROW.items()}


def decode(value: bytes) -> Optional[tuple]:
    """(query, row) of one JSON message of the Kafka sink; None for anything else."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or tuple(doc) not in _ROW_TYPES:
        return None
    query, row_type = _ROW_TYPES[tuple(doc)]
    fields = [datetime.datetime.fromisoformat(v) if name.startswith("window_") else v for name, v in doc.items()]
    return query, row_type(*fields)


class KafkaResults:
    """Tails `topic` in a thread from `start()` to `close()`; `results()` is {query: [current rows]}."""

    def __init__(self, bootstrap_servers: str, topic: str, client_settings: Mapping[str, str] = ()) -> None:
        self._config = {**dict(client_settings), "bootstrap.servers": bootstrap_servers,
                        "group.id": f"hitstream-dashboard-{uuid.uuid4().hex}", "auto.offset.reset": "earliest",
                        "enable.auto.commit": False}
        self._topic = topic
        self._lock = threading.Lock()
        self._tables: Dict[str, Dict[tuple, tuple]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tail, name=f"hitstream-results-{topic}", daemon=True)

    def start(self) -> "KafkaResults":
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def results(self) -> Dict[str, List[tuple]]:
        with self._lock:
            return {query: list(table.values()) for query, table in self._tables.items()}

    def _tail(self) -> None:
        consumer = Consumer(self._config)
        consumer.subscribe([self._topic])
        try:
            while not self._stop.is_set():
                for message in consumer.consume(num_messages=500, timeout=0.5):
                    if message.error() is not None:
                        _LOGGER.warning("dashboard results: %s: %s", self._topic, message.error())
                        continue
                    decoded = decode(message.value() or b"")
                    if decoded is not None:
                        self._keep(*decoded)
        finally:
            consumer.close()

    def _keep(self, query: str, row: tuple) -> None:
        with self._lock:
            table = self._tables.setdefault(query, {})
            key = result_key(row)
            if replaces(row, table.get(key)):
                table[key] = row
