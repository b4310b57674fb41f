"""The read's consumers, kept between process() calls so their read-ahead survives a checkpoint."""
from __future__ import annotations

import threading
from typing import Optional

from confluent_kafka import Consumer

POSITION_UNKNOWN = -1  # a cached consumer whose position no longer matches any offset we track


# Latest high watermark seen per (topic, partition), so restriction_size can estimate backlog without a broker call.
HIGH_WATERMARKS: dict = {}


class _IdleConsumers:
    """Idle read consumers shared by every ReadPartitionsFn instance of the process: at most one per (reader config,
    topic, partition). A cache per instance kept one consumer per instance and partition, each holding its read-ahead
    (29 consumers at 1M events, 41 at 4M on a bounded Prism run), so RSS grew with the run."""

    def __init__(self):
        self._lock = threading.Lock()
        self._idle = {}  # (config key, topic, partition) -> (consumer, next offset)
        self._users = 0  # live ReadPartitionsFn instances; the last one's teardown closes what is idle

    def join(self) -> None:
        with self._lock:
            self._users += 1

    def leave(self) -> None:
        with self._lock:
            self._users -= 1
            idle, self._idle = (self._idle, {}) if self._users <= 0 else ({}, self._idle)
        for consumer, _ in idle.values():
            consumer.close()

    def take(self, key) -> Optional[tuple]:
        with self._lock:
            return self._idle.pop(key, None)

    def give_back(self, key, consumer: Consumer, offset: int) -> None:
        with self._lock:
            older = self._idle.get(key)
            self._idle[key] = (consumer, offset)
        if older is not None:  # two calls read the partition at once (never with unsplit restrictions)
            older[0].close()


IDLE_CONSUMERS = _IdleConsumers()
