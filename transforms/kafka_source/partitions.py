"""Which topic-partitions a job reads, and from which offset to which: resolved when the job starts (and, for
subscribePattern, again every interval)."""
from __future__ import annotations

import logging
import math
import re
import sys
import time
from typing import Iterable, NamedTuple, Tuple

import apache_beam as beam
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from transforms.kafka_source.config import KafkaSourceConfig

_LOGGER = logging.getLogger(__name__)

UNBOUNDED = sys.maxsize  # stop offset of a streaming restriction
NO_WATERMARK_STATE = (MIN_TIMESTAMP.micros, MIN_TIMESTAMP.micros)  # PartitionWatermark's state before any record


class PartitionSpec(NamedTuple):
    """One topic-partition to read, with the offsets resolved when the job started."""
    topic: str
    partition: int
    start: int
    stop: int  # exclusive; UNBOUNDED for streaming
    share_per_trigger: int = sys.maxsize  # maxOffsetsPerTrigger split evenly over the partitions
    watermark_state: Tuple[int, int] = NO_WATERMARK_STATE  # PartitionWatermark's


def _matching_partitions(consumer: Consumer, config: KafkaSourceConfig) -> list:
    if config.assign:
        return [(t, p) for t, parts in sorted(config.assign.items()) for p in parts]
    metadata = consumer.list_topics(timeout=10)
    if config.subscribe:
        missing = [t for t in config.subscribe if t not in metadata.topics]
        if missing:
            raise ValueError(f"Kafka source: topic(s) {missing} do not exist on {config.bootstrap_servers}.")
        topics = list(config.subscribe)
    else:
        pattern = re.compile(config.subscribe_pattern)
        topics = sorted(t for t in metadata.topics if pattern.fullmatch(t) and not t.startswith("__"))
    return [(t, p) for t in topics for p in sorted(metadata.topics[t].partitions)]


def resolve_partitions(config: KafkaSourceConfig, skip: frozenset = frozenset()) -> list:
    """PartitionSpecs for every matching partition not in `skip`, with start and stop offsets resolved now.

    The start is the consumer group's committed offset when there is one (the resume point), else what
    startingOffsets / startingOffsetsByTimestamp ask for. With a checkpoint, a partition with saved counts resumes at
    their offset and watermark, and one without starts as startingOffsets say: the group's commits may be ahead of
    what was saved.
    """
    consumer = Consumer(config.consumer_config())
    try:
        wanted = [tp for tp in _matching_partitions(consumer, config) if tp not in skip]
        if not wanted:
            return []
        committed = {(tp.topic, tp.partition): tp.offset
                     for tp in _committed(consumer, [TopicPartition(t, p) for t, p in wanted])}
        by_time = _offsets_for_times(consumer, config, wanted)
        share = sys.maxsize
        if config.max_offsets_per_trigger:
            share = max(1, math.ceil(config.max_offsets_per_trigger / len(wanted)))
        specs = []
        for topic, partition in wanted:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            saved = config.checkpoint.resume(topic, partition) if config.checkpoint else None
            start = -1 if config.checkpoint else committed[(topic, partition)]
            if saved is not None:
                start = saved.offset
            elif start < 0:
                start = by_time.get((topic, partition), _configured_start(config, topic, partition, low, high))
            stop = _configured_stop(config, topic, partition, high)
            spec = PartitionSpec(topic, partition, start, stop, share)
            specs.append(spec._replace(watermark_state=saved.watermark) if saved else spec)
        return specs
    finally:
        consumer.close()


def _committed(consumer: Consumer, partitions: list, attempts: int = 30) -> list:
    """The group's committed offsets, waiting out a coordinator that is still loading (a new broker, a new group)."""
    for attempt in range(attempts):
        try:
            return consumer.committed(partitions, timeout=10)
        except KafkaException as error:
            if not error.args[0].retriable() and error.args[0].code() not in _COORDINATOR_WAIT_CODES:
                raise
            _LOGGER.info("Kafka source: committed offsets not ready (%s), retrying", error.args[0].str())
            time.sleep(min(2.0, 0.1 * (attempt + 1)))
    return consumer.committed(partitions, timeout=10)


_COORDINATOR_WAIT_CODES = (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                           KafkaError.COORDINATOR_NOT_AVAILABLE)


def _configured_start(config: KafkaSourceConfig, topic: str, partition: int, low: int, high: int) -> int:
    wanted = config.starting_offsets
    if isinstance(wanted, dict):
        wanted = wanted.get(topic, {}).get(partition, -1 if config.ending_offsets is None else -2)
    return {"earliest": low, "latest": high, -2: low, -1: high}.get(wanted, wanted)


def _configured_stop(config: KafkaSourceConfig, topic: str, partition: int, high: int) -> int:
    if config.ending_offsets is None:
        return UNBOUNDED
    if config.ending_offsets == "latest":
        return high
    stop = config.ending_offsets.get(topic, {}).get(partition, -1)
    return high if stop == -1 else stop


def _offsets_for_times(consumer: Consumer, config: KafkaSourceConfig, wanted: list) -> dict:
    stamps = config.starting_timestamps
    if stamps is None:
        return {}
    query = []
    for topic, partition in wanted:
        ts = stamps if isinstance(stamps, int) else stamps.get(topic, {}).get(partition)
        if ts is not None:
            query.append(TopicPartition(topic, partition, ts))
    found = {}
    for tp in consumer.offsets_for_times(query, timeout=10):
        if tp.offset < 0:  # no record at or after the timestamp: start at the end, as Spark does
            tp.offset = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)[1]
        found[(tp.topic, tp.partition)] = tp.offset
    return found


class ResolvePartitionsFn(beam.DoFn):
    """Impulse -> one PartitionSpec per partition. Runs when the job starts, not when the graph is built."""

    def __init__(self, config: KafkaSourceConfig):
        self._config = config

    def process(self, _impulse) -> Iterable[PartitionSpec]:
        specs = resolve_partitions(self._config)
        _LOGGER.info("Kafka source: reading %d partition(s): %s", len(specs), specs)
        yield from specs


class WatchPartitionsFn(beam.DoFn):
    """For subscribePattern in streaming: every interval, emit PartitionSpecs for partitions not seen before.

    Keyed state remembers what was emitted, so a new matching topic (or added partition) is picked up once.
    """
    SEEN = beam.transforms.userstate.BagStateSpec("seen", beam.coders.PickleCoder())

    def __init__(self, config: KafkaSourceConfig):
        self._config = config

    def process(self, _tick, seen=beam.DoFn.StateParam(SEEN)) -> Iterable[PartitionSpec]:
        known = frozenset(tp for batch in seen.read() for tp in batch)
        specs = resolve_partitions(self._config, skip=known)
        if specs:
            seen.add(tuple((s.topic, s.partition) for s in specs))
            _LOGGER.info("Kafka source: new partition(s) %s", specs)
        yield from specs
