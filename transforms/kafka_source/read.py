"""The splittable read of each partition, and `ReadFromKafka`, the transform that wires discovery and the read."""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Iterable, Optional

import apache_beam as beam
from apache_beam.transforms.periodicsequence import PeriodicImpulse
from apache_beam.utils.timestamp import Duration, Timestamp
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from transforms import telemetry
from transforms.batch_coder import BatchCoder  # noqa: F401 (registers the coder of the batch types)
from transforms.kafka_source.config import KafkaSourceConfig
from transforms.kafka_source.consumers import HIGH_WATERMARKS, IDLE_CONSUMERS, POSITION_UNKNOWN
from transforms.kafka_source.partitions import UNBOUNDED, PartitionSpec, ResolvePartitionsFn, WatchPartitionsFn
from transforms.kafka_source.restriction import OffsetRangeProvider
from transforms.kafka_source.watermark import EVENT_TIME_HIGHS, PartitionWatermark, PartitionWatermarkProvider
from transforms.worker_memory import tune_gc
from transforms.parse import ParsedBatch, parse_fields, parse_record
from transforms.rows import CREATE_TIME, LOG_APPEND_TIME, Hit, KafkaBatch, KafkaRecord, new_row
from transforms.times import to_micros

_LOGGER = logging.getLogger(__name__)

# How often an idle partition's consumer is checked against the broker's log end (see `_replace_if_stalled`).
STALL_CHECK_SECONDS = 10.0


@dataclasses.dataclass
class _Call:
    """How far one process() call read, and why it stopped."""
    next_offset: int  # the offset after the last one claimed (or skipped as deleted)
    claimed: int = 0
    past_stop: bool = False  # met a record at or beyond the restriction's stop: the range is read
    last_poll_empty: bool = False


class ReadPartitionsFn(beam.DoFn):
    """Reads the claimed offsets of one partition; checkpoints after `max_read_seconds` or when caught up."""

    def __init__(self, config: KafkaSourceConfig):
        self._config = config
        self._delay_micros = int(config.watermark_delay_seconds * 1e6)
        self._parses = config.parses

    def setup(self):
        tune_gc()
        self._telemetry = telemetry.ReadTelemetry()
        self._consumers = {}  # (topic, partition) -> (consumer, next offset) of this instance's running call
        self._pool_key = tuple(sorted((k, str(v)) for k, v in self._config.reader_config().items()))
        IDLE_CONSUMERS.join()
        self._committer = None  # created on the first commit; finalization may run on another thread
        self._commit_lock = threading.Lock()
        self._stall_checks = {}  # (topic, partition) -> monotonic time of its last stall check

    def teardown(self):
        consumers, self._consumers = self._consumers, {}
        for consumer, _ in consumers.values():
            consumer.close()
        IDLE_CONSUMERS.leave()
        with self._commit_lock:
            if self._committer is not None:
                self._committer.close()
                self._committer = None

    def _consumer_at(self, topic: str, partition: int, offset: int) -> Consumer:
        """One consumer per partition, kept between calls (in IDLE_CONSUMERS) so its prefetch buffer survives a
        checkpoint."""
        key = (topic, partition)
        cached = self._consumers.pop(key, None) or IDLE_CONSUMERS.take((self._pool_key, topic, partition))
        if cached is not None and cached[1] == offset:
            self._consumers[key] = cached
            return cached[0]
        consumer = cached[0] if cached is not None else Consumer(self._config.reader_config())
        try:
            consumer.assign([TopicPartition(topic, partition, offset)])
        except RuntimeError:  # closed by a teardown that raced with this bundle (seen on Prism): start afresh
            consumer = Consumer(self._config.reader_config())
            consumer.assign([TopicPartition(topic, partition, offset)])
        self._consumers[key] = (consumer, offset)
        return consumer

    def process(
        self,
        spec: PartitionSpec,
        finalizer=beam.DoFn.BundleFinalizerParam,  # before the SDF params: Beam passes those by keyword
        tracker=beam.DoFn.RestrictionParam(OffsetRangeProvider()),
        watermark=beam.DoFn.WatermarkEstimatorParam(PartitionWatermarkProvider()),
    ) -> Iterable[beam.window.TimestampedValue]:
        restriction = tracker.current_restriction()
        if restriction.start >= restriction.stop:
            return
        if self._config.checkpoint:
            self._config.checkpoint.at_call_start(spec.topic, spec.partition, restriction.start,
                                                  watermark.get_estimator_state())
        consumer = self._consumer_at(spec.topic, spec.partition, restriction.start)
        watermark.start_call(self._delay_micros)
        EVENT_TIME_HIGHS.observe(self._config.source_id, watermark.max_event_micros())  # also a restored one
        started = time.monotonic()
        call = yield from self._read(spec, consumer, restriction, tracker, watermark,
                                     deadline=started + self._config.max_read_seconds)
        high, drained = self._log_end(spec, consumer, restriction, call)
        idle_to = None
        if not call.claimed and restriction.stop == UNBOUNDED:
            idle_to = self._idle_watermark(spec, consumer, call, high, watermark)
            self._replace_if_stalled(spec, consumer)
        self._give_back(spec)
        self._register_finalization(spec, restriction, call, finalizer, watermark)
        self._report(spec, restriction, call, high, watermark, started)
        self._resume_or_finish(spec, restriction, call, high, drained, tracker, watermark, idle_to)

    def _read(self, spec: PartitionSpec, consumer: Consumer, restriction, tracker, watermark: PartitionWatermark,
              deadline: float):
        """Polls and yields each poll's records until the call's budget or deadline, the restriction's end, or the
        log's end; returns what was read as a `_Call`."""
        config = self._config
        tp = TopicPartition(spec.topic, spec.partition)
        budget = spec.share_per_trigger
        call = _Call(next_offset=restriction.start)
        while True:
            messages = consumer.consume(num_messages=min(budget - call.claimed, 1000),
                                        timeout=config.poll_timeout_seconds)
            call.last_poll_empty = not messages
            outputs = self._claim(messages, spec, consumer, tracker, call)
            self._mark_late(outputs, watermark)
            if config.batched:
                if outputs:
                    yield _as_batch(outputs, watermark.current_watermark(), self._parses)
            else:
                for element, seconds, _ in outputs:
                    yield beam.window.TimestampedValue(element, seconds)
            if call.past_stop:
                return call
            self._remember(spec, consumer, call.next_offset)
            if call.claimed >= budget or time.monotonic() >= deadline:
                return call
            if not messages and (restriction.stop == UNBOUNDED or
                                 consumer.position([tp])[0].offset >= restriction.stop):
                return call
            # A bounded read with records still to come keeps polling rather than return with a delayed residual.
            # (Delayed residuals made whole windows late on Prism 2.77 as released, whose stage watermark followed
            # the last bundle's residuals alone: see stack/prism.py.)
            if call.next_offset >= consumer.get_watermark_offsets(tp, cached=True)[1] >= 0:
                return call  # caught up: hand this bundle's records on now rather than wait out the deadline

    def _claim(self, messages: list, spec: PartitionSpec, consumer: Consumer, tracker, call: "_Call") -> list:
        """Claims one poll's records and turns them into outputs (see `_to_output`); updates `call`."""
        outputs = []
        next_offset = call.next_offset
        to_output = self._to_output
        poll_claim = self._claim_poll(messages, tracker)
        for message in messages:
            error = message.error()
            if error is not None:
                next_offset = self._on_error(error, consumer, spec, next_offset)
                continue
            if poll_claim is False or (poll_claim is None and not tracker.try_claim(message.offset())):
                # The restriction ends before this record (a split or the bounded end). It, and any after it in
                # this poll, were taken off the consumer's queue: the consumer must not be reused as if it stood
                # at this offset, or the call that reads the rest would silently skip them.
                call.past_stop = True
                self._remember(spec, consumer, POSITION_UNKNOWN)
                break
            next_offset = message.offset() + 1
            outputs.append(to_output(message))
        call.next_offset = next_offset
        call.claimed += len(outputs)
        return outputs

    @staticmethod
    def _log_end(spec: PartitionSpec, consumer: Consumer, restriction, call: "_Call") -> tuple:
        """The partition's high watermark (-1 when unknown), and whether the rest of the range holds no record
        (transaction markers, gaps) because the consumer stands past its stop after an empty poll."""
        tp = TopicPartition(spec.topic, spec.partition)
        _, high = consumer.get_watermark_offsets(tp, cached=True)
        drained = (not call.past_stop and call.last_poll_empty and
                   consumer.position([tp])[0].offset >= restriction.stop)
        return high, drained

    def _register_finalization(self, spec: PartitionSpec, restriction, call: "_Call", finalizer,
                               watermark: PartitionWatermark) -> None:
        """Saves the aggregate checkpoint's source position and commits the offsets once the runner has the
        bundle's output."""
        if self._config.checkpoint:
            save = self._config.checkpoint.at_call_end(
                spec.topic, spec.partition, call.next_offset, watermark.get_estimator_state(),
                final=call.past_stop or call.next_offset >= restriction.stop)
            if save is not None:
                finalizer.register(save)
        # Register even when nothing was claimed: Prism finalizes every bundle of a stage that asks for it.
        self._commit_on_finalize(finalizer, spec, call.next_offset if call.claimed else None)

    def _report(self, spec: PartitionSpec, restriction, call: "_Call", high: int, watermark: PartitionWatermark,
                started: float) -> None:
        if high >= 0:
            HIGH_WATERMARKS[(spec.topic, spec.partition)] = high
        self._telemetry.read(spec.topic, spec.partition, restriction.start, call.next_offset, call.claimed, high,
                              watermark.get_estimator_state(), self._delay_micros, time.monotonic() - started)

    def _resume_or_finish(self, spec: PartitionSpec, restriction, call: "_Call", high: int, drained: bool, tracker,
                          watermark: PartitionWatermark, idle_to: Optional[int]) -> None:
        """Ends the restriction when its range is read, or defers the rest: at once while records are coming, after
        a pause when the partition is idle or the trigger's budget is spent."""
        config = self._config
        if call.past_stop:
            return
        next_offset = restriction.stop if drained else call.next_offset
        if next_offset >= restriction.stop:
            tracker.try_claim(restriction.stop)  # done: nothing left to claim in the range
            return
        if next_offset >= high >= 0:
            if not call.claimed and restriction.stop == UNBOUNDED:  # a bounded read's end is its own
                if idle_to is not None:
                    watermark.advance_idle(idle_to)
                tracker.defer_remainder(Duration(seconds=config.idle_poll_seconds))
            else:
                tracker.defer_remainder()  # more may be arriving right now: resume at once
        elif call.last_poll_empty and restriction.stop == UNBOUNDED:
            tracker.defer_remainder(Duration(seconds=config.idle_poll_seconds))
        elif call.claimed >= spec.share_per_trigger and config.max_offsets_per_trigger:
            tracker.defer_remainder(Duration(seconds=config.trigger_interval_seconds))
        else:
            tracker.defer_remainder()

    def _idle_watermark(self, spec: PartitionSpec, consumer: Consumer, call: "_Call", high: int,
                        watermark: PartitionWatermark) -> Optional[int]:
        """Where the watermark of a partition that read nothing may move without data of its own, or None.

        Only a partition caught up with the log end (backlog 0, as Java KafkaIO's policies check) moves; a poll
        that merely timed out says nothing. It follows the highest event time of the source (EventTimeHighs), or
        with `--idle-watermark wall-clock` the clock, minus the delay. The highest is taken before the broker is
        asked afresh for the log end: every record this partition gets later was written after the ones that made
        that highest, so a replay written in event-time order is not late. (The consumer's cached log end can be
        older than records other partitions have read: with it, 96 hits of a 20,000-hit replay were late.)
        """
        if not call.next_offset >= high >= 0:
            return None
        if self._config.idle_watermark == "wall-clock":
            return Timestamp.now().micros - self._delay_micros
        highest = EVENT_TIME_HIGHS.highest(self._config.source_id)
        if highest is None or highest - self._delay_micros <= watermark.current_watermark().micros:
            return None  # nowhere to move: spare the broker the question
        tp = TopicPartition(spec.topic, spec.partition)
        try:
            _, log_end = consumer.get_watermark_offsets(tp, timeout=2, cached=False)
            position = consumer.position([tp])[0].offset  # stands past transaction markers after an empty poll
        except KafkaException:
            return None  # asked again at the next idle call
        return highest - self._delay_micros if max(call.next_offset, position) >= log_end else None

    @staticmethod
    def _claim_poll(messages: list, tracker) -> Optional[bool]:
        """Claim a whole poll with one claim of its last offset (a claim covers the offsets before it; the runner
        wraps the tracker in a lock that cost about 1 us per record). None when the records must be claimed one by
        one: the poll holds an error, or the restriction ends inside it. False when a checkpoint split since the
        call began took the rest of the range: such a split stops right after the last claimed offset (the tracker
        refuses others), so no record of this poll is ours."""
        if not messages or any(message.error() is not None for message in messages):
            return None
        last = messages[-1].offset()
        if last >= tracker.current_restriction().stop:
            return None
        return tracker.try_claim(last)

    def _to_output(self, message) -> list:
        """One message as [element, event time in seconds, event time in micros for the watermark or None]: its
        KafkaRecord, or its Hit or DeadLetter when the read parses (`KafkaSourceConfig.parses`). A record without
        a readable event time keeps its Kafka time and leaves the watermark alone."""
        ts_type, ts_ms = message.timestamp()
        if self._parses:
            # A Hit straight from the message's fields; the KafkaRecord is built only for a dead letter.
            try:
                fields = parse_fields(message.value())
            except Exception:  # pylint: disable=broad-except (parse_record names the broken rule, never raises)
                return [parse_record(self._record(message, ts_type, ts_ms)), ts_ms / 1000.0, None]
            hit = new_row(Hit, (*fields, message.topic(), message.partition(), message.offset(), ts_ms, False))
            event_ms = to_micros(hit.hittime) // 1000 if self._config.timestamp_policy == "event-time" else ts_ms
            return [hit, event_ms / 1000.0, event_ms * 1000]
        record = self._record(message, ts_type, ts_ms)
        event_ms = ts_ms
        if self._config.timestamp_policy == "event-time":
            event_ms = self._config.event_time_fn(record)
            if event_ms is None:  # unreadable: the parse step dead-letters it; keep the Kafka time for Beam
                return [record, ts_ms / 1000.0, None]
        return [record, event_ms / 1000.0, event_ms * 1000]

    def _record(self, message, ts_type: int, ts_ms: int) -> KafkaRecord:
        return new_row(KafkaRecord, (  # the fields in KafkaRecord's order
            message.key(), message.value(), message.topic(), message.partition(), message.offset(), ts_ms,
            LOG_APPEND_TIME if ts_type == 2 else CREATE_TIME,
            tuple(message.headers() or ()) if self._config.include_headers else None, False))

    def _mark_late(self, outputs: list, watermark: PartitionWatermark) -> None:
        """Pass a poll's event times to the partition's watermark in one call (the runner wraps the estimator in
        a lock, which per record cost more than the check itself) and flag the records that were behind it."""
        timed = [output for output in outputs if output[2] is not None]
        late = watermark.observe_events([output[2] for output in timed], self._delay_micros)
        if timed:
            EVENT_TIME_HIGHS.observe(self._config.source_id, watermark.max_event_micros())
        for index in late:
            timed[index][0] = timed[index][0]._replace(late=True)
        self._telemetry.late(len(late))

    def _on_error(self, error: KafkaError, consumer: Consumer, spec: PartitionSpec, next_offset: int) -> int:
        if error.code() != KafkaError._AUTO_OFFSET_RESET and error.code() != KafkaError.OFFSET_OUT_OF_RANGE:
            if error.fatal():
                raise KafkaException(error)
            _LOGGER.warning("Kafka source: %s [%d]: %s", spec.topic, spec.partition, error)
            return next_offset
        low, _ = consumer.get_watermark_offsets(TopicPartition(spec.topic, spec.partition), timeout=10)
        message = (f"Kafka source: offsets {next_offset}..{low - 1} of {spec.topic} [{spec.partition}] were deleted "
                   f"(retention or deleteRecords) before they were read.")
        if self._config.fail_on_data_loss:
            raise KafkaException(KafkaError(KafkaError.OFFSET_OUT_OF_RANGE,
                                            message + " Set failOnDataLoss=false to skip them with a warning."))
        _LOGGER.warning("%s Skipping them (failOnDataLoss=false).", message)
        self._telemetry.lost(max(0, low - next_offset))
        consumer.assign([TopicPartition(spec.topic, spec.partition, low)])
        return low

    def _replace_if_stalled(self, spec: PartitionSpec, consumer: Consumer) -> None:
        """Drop a consumer that stopped fetching, so the next call reads with a fresh one.

        After a broker restart, librdkafka sometimes keeps an assigned partition as unknown in its metadata and
        fetches nothing until its next metadata refresh, five minutes later by default: an idle-looking partition
        whose records pile up (seen in the broker-restart fault test). So every STALL_CHECK_SECONDS an idle
        partition asks the broker for its log end, and the consumer is dropped when that fails on the consumer's
        own metadata ("Local: Unknown partition")."""
        key = (spec.topic, spec.partition)
        now = time.monotonic()
        if now - self._stall_checks.get(key, 0.0) < STALL_CHECK_SECONDS:
            return
        self._stall_checks[key] = now
        try:
            consumer.get_watermark_offsets(TopicPartition(spec.topic, spec.partition), timeout=2)
            return
        except KafkaException as error:
            if error.args[0].code() not in (KafkaError._UNKNOWN_PARTITION, KafkaError._UNKNOWN_TOPIC):
                return  # the broker is away or slow: the consumer itself is fine
            _LOGGER.warning("Kafka source: the consumer of %s [%d] stopped fetching (%s); reading on with a new one",
                            spec.topic, spec.partition, error.args[0])
        self._consumers.pop(key, None)
        consumer.close()

    def _remember(self, spec: PartitionSpec, consumer: Consumer, next_offset: int):
        self._consumers[(spec.topic, spec.partition)] = (consumer, next_offset)

    def _give_back(self, spec: PartitionSpec):
        cached = self._consumers.pop((spec.topic, spec.partition), None)
        if cached is not None:
            IDLE_CONSUMERS.give_back((self._pool_key, spec.topic, spec.partition), *cached)

    def _commit_on_finalize(self, finalizer, spec: PartitionSpec, next_offset: Optional[int]):
        if not self._config.commit_offsets or next_offset is None:
            finalizer.register(lambda: None)
            return

        def commit():
            with self._commit_lock:
                if self._committer is None:
                    self._committer = Consumer(self._config.consumer_config())
                try:
                    self._committer.commit(offsets=[TopicPartition(spec.topic, spec.partition, next_offset)],
                                           asynchronous=False)
                except KafkaException as error:  # the next start re-reads from the older commit: at-least-once
                    _LOGGER.warning("Kafka source: could not commit offset %d of %s [%d]: %s",
                                    next_offset, spec.topic, spec.partition, error)

        finalizer.register(commit)


def _as_batch(outputs: list, watermark: Timestamp, parsed: bool) -> beam.window.TimestampedValue:
    """One KafkaBatch (or ParsedBatch), timestamped at its earliest record but never behind the partition's reported
    watermark, so no runner treats the batch as late. Windowed queries re-stamp what they take from it with event
    times."""
    earliest = Timestamp.of(min(output[1] for output in outputs))
    elements = tuple(output[0] for output in outputs)
    batch = ParsedBatch(elements) if parsed else KafkaBatch(elements)
    return beam.window.TimestampedValue(batch, max(earliest, watermark))


@beam.DoFn.unbounded_per_element()
class ReadPartitionsUnboundedFn(ReadPartitionsFn):
    """The streaming read: each partition is an unbounded restriction."""


class ReadFromKafka(beam.PTransform):
    """Reads KafkaRecords, with Spark's Kafka source options (see KafkaSourceConfig).

    Example:
        records = p | ReadFromKafka(KafkaSourceConfig.from_spark_options({
            "kafka.bootstrap.servers": "127.0.0.1:9092", "subscribe": "hits", "startingOffsets": "earliest"}))
    """

    def __init__(self, config: KafkaSourceConfig):
        super().__init__()
        self._config = config

    def expand(self, pbegin):
        config = self._config
        if config.bounded:
            specs = (pbegin | "Impulse" >> beam.Impulse()
                     | "ResolvePartitions" >> beam.ParDo(ResolvePartitionsFn(config)))
            read_fn = ReadPartitionsFn(config)
        else:
            specs = self._streaming_specs(pbegin)
            read_fn = ReadPartitionsUnboundedFn(config)
        return (specs
                | "SpreadPartitions" >> beam.Reshuffle()
                | "ReadPartitions" >> beam.ParDo(read_fn).with_output_types(
                    (ParsedBatch if config.parses else KafkaBatch) if config.batched else KafkaRecord))

    def _streaming_specs(self, pbegin):
        config = self._config
        if not config.subscribe_pattern:
            return (pbegin | "Impulse" >> beam.Impulse()
                    | "ResolvePartitions" >> beam.ParDo(ResolvePartitionsFn(config)))
        return (pbegin
                | "WatchTicks" >> PeriodicImpulse(fire_interval=config.partition_discovery_seconds,
                                                 apply_windowing=False)
                | "KeyForState" >> beam.Map(lambda tick: (None, tick))
                | "WatchPartitions" >> beam.ParDo(WatchPartitionsFn(config)))
