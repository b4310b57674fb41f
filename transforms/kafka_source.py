"""A native Kafka source for Beam: a splittable DoFn over confluent-kafka, with Spark's options.

Why not Beam's ReadFromKafka: it is a Java cross-language transform that needs a Java SDK harness (Docker by default),
never emits on the DirectRunner (apache/beam#25114, #22809), and holds the watermark on idle partitions (#20908).
This source is plain Python and streams on Prism, Flink, Spark and Dataflow alike.

Shape:
    Impulse -> ResolvePartitions (one PartitionSpec per topic-partition, offsets resolved when the job starts)
            -> Reshuffle -> ReadPartitions (SDF; restriction = OffsetRange of Kafka offsets)

- One restriction per topic-partition. A process() call reads for at most `max_read_seconds`, then checkpoints with
  `defer_remainder`, so the runner can commit output and move the watermark.
- Available-now (bounded) reads stop at the high watermark seen when the job started; streaming reads have an
  unbounded stop offset.
- The watermark is per partition and follows the timestamp policy; a caught-up, idle partition moves its watermark
  with the wall clock, so it never holds back the others.
- Offsets are committed to the consumer group in bundle finalization (after the runner has durably taken the
  bundle's output) and used as the resume point on the next start. That is at-least-once for downstream sinks.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import re
import sys
import threading
import time
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, NamedTuple, Optional, Tuple

import apache_beam as beam
import orjson
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import WatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from transforms import telemetry
from transforms.batch_coder import BatchCoder  # noqa: F401 (registers the coder of the batch types)
from transforms.parse import ParsedBatch, parse_fields, parse_record, to_micros
from transforms.rows import CREATE_TIME, LOG_APPEND_TIME, Hit, KafkaBatch, KafkaRecord, new_row
from transforms.worker import tune_gc

if TYPE_CHECKING:
    from transforms.checkpoint import AggregateCheckpoint

_LOGGER = logging.getLogger(__name__)

UNBOUNDED = sys.maxsize  # stop offset of a streaming restriction
POSITION_UNKNOWN = -1  # a cached consumer whose position no longer matches any offset we track
TIMESTAMP_POLICIES = ("create-time", "log-append-time", "event-time")


def hittime_millis(record: KafkaRecord) -> Optional[int]:
    """The event-time extractor for ISP hits: `hittime` in epoch ms, or None for a message the parse step will
    dead-letter. The whole data contract is applied, not just hittime's format: a dead letter with a readable
    far-future hittime must not move its partition's watermark and make every later hit late.
    """
    try:
        return to_micros(parse_fields(record.value)[0]) // 1000
    except Exception:  # a ParseError, or anything else parse_record dead-letters
        return None


@dataclasses.dataclass(frozen=True)
class KafkaSourceConfig:
    """Spark's Kafka source options, parsed. See `from_spark_options` for the option names."""
    bootstrap_servers: str
    subscribe: tuple = ()
    subscribe_pattern: Optional[str] = None
    assign: Optional[Mapping[str, tuple]] = None
    # "earliest" | "latest" | {topic: {partition: offset}} with -2 = earliest and -1 = latest, as in Spark.
    starting_offsets: object = "latest"
    # {topic: {partition: epoch_ms}} or one epoch_ms for every partition; overrides starting_offsets.
    starting_timestamps: object = None
    # None (streaming) | "latest" (the high watermark when the job starts) | {topic: {partition: offset}}.
    ending_offsets: object = None
    max_offsets_per_trigger: Optional[int] = None
    trigger_interval_seconds: float = 1.0  # how often a rate-limited read may take its next share
    fail_on_data_loss: bool = True
    include_headers: bool = False
    kafka_options: Mapping[str, str] = dataclasses.field(default_factory=dict)
    group_id: str = "hitstream"
    commit_offsets: bool = True
    timestamp_policy: str = "create-time"
    event_time_fn: Callable[[KafkaRecord], Optional[int]] = hittime_millis
    watermark_delay_seconds: float = 0.0
    max_read_seconds: float = 1.0  # one process() call; bounds latency to the runner
    partition_discovery_seconds: float = 10.0  # subscribePattern in streaming: how often to look for new topics
    batched: bool = False  # emit one KafkaBatch per poll instead of one KafkaRecord per message
    idle_poll_seconds: float = 0.1  # how long a caught-up partition waits before it looks again
    # One consume() waits at most this long for a full batch: partitions share a worker, so a long wait on a quiet
    # partition delays every other one.
    poll_timeout_seconds: float = 0.01
    # --checkpoint-dir: partitions resume where the saved counts stand (transforms/checkpoint.py), not at the
    # group's committed offsets.
    checkpoint: Optional["AggregateCheckpoint"] = None

    def __post_init__(self):
        chosen = [bool(self.subscribe), bool(self.subscribe_pattern), bool(self.assign)]
        if sum(chosen) != 1:
            raise ValueError("Kafka source: set exactly one of subscribe, subscribePattern or assign.")
        if self.timestamp_policy not in TIMESTAMP_POLICIES:
            raise ValueError(f"Kafka source: timestamp policy must be one of {TIMESTAMP_POLICIES}, "
                             f"not {self.timestamp_policy!r}.")
        if self.max_offsets_per_trigger is not None and self.max_offsets_per_trigger < 1:
            raise ValueError("Kafka source: maxOffsetsPerTrigger must be a positive number.")
        if self.subscribe_pattern:
            re.compile(self.subscribe_pattern)  # fail now, with re's message, on a bad pattern
        if isinstance(self.starting_offsets, str) and self.starting_offsets not in ("earliest", "latest"):
            raise ValueError("Kafka source: startingOffsets must be 'earliest', 'latest' or a JSON object.")

    @property
    def bounded(self) -> bool:
        return self.ending_offsets is not None

    @property
    def parses(self) -> bool:
        """Whether the read keeps the parse of its event-time extractor and hands on ParsedBatch elements.

        `hittime_millis` applies the whole data contract to find a record's event time (a dead letter must not move
        the watermark), so in the batched fast path the read keeps the Hit or DeadLetter it got rather than have
        the parse step parse every record a second time."""
        return self.batched and self.timestamp_policy == "event-time" and self.event_time_fn is hittime_millis

    @classmethod
    def from_spark_options(cls, options: Mapping[str, str], **overrides) -> "KafkaSourceConfig":
        """Build from Spark's option names: `kafka.bootstrap.servers`, `subscribe`, `subscribePattern`, `assign`,
        `startingOffsets`, `startingOffsetsByTimestamp`, `startingTimestamp`, `endingOffsets`,
        `maxOffsetsPerTrigger`, `failOnDataLoss`, `includeHeaders`, and any other `kafka.*` pass-through
        (for example `kafka.security.protocol`, `kafka.sasl.mechanism`, `kafka.sasl.username`)."""
        opts = dict(options)
        kafka = {k[len("kafka."):]: v for k, v in opts.items() if k.startswith("kafka.")}
        if "bootstrap.servers" not in kafka:
            raise ValueError("Kafka source: option 'kafka.bootstrap.servers' is required.")
        known = {"subscribe", "subscribePattern", "assign", "startingOffsets", "startingOffsetsByTimestamp",
                 "startingTimestamp", "endingOffsets", "maxOffsetsPerTrigger", "failOnDataLoss", "includeHeaders"}
        unknown = sorted(k for k in opts if not k.startswith("kafka.") and k not in known)
        if unknown:
            raise ValueError(f"Kafka source: unknown option(s) {unknown}; Kafka client settings take a 'kafka.' "
                             "prefix.")
        starting_timestamps = None
        if "startingOffsetsByTimestamp" in opts:
            starting_timestamps = _json_offsets(opts["startingOffsetsByTimestamp"])
        elif "startingTimestamp" in opts:
            starting_timestamps = int(opts["startingTimestamp"])
        starting = opts.get("startingOffsets", "latest")
        ending = opts.get("endingOffsets")
        return cls(
            bootstrap_servers=kafka.pop("bootstrap.servers"),
            subscribe=tuple(t.strip() for t in opts.get("subscribe", "").split(",") if t.strip()),
            subscribe_pattern=opts.get("subscribePattern"),
            assign={t: tuple(ps) for t, ps in orjson.loads(opts["assign"]).items()} if "assign" in opts else None,
            starting_offsets=starting if starting in ("earliest", "latest") else _json_offsets(starting),
            starting_timestamps=starting_timestamps,
            ending_offsets=None if ending is None else ending if ending == "latest" else _json_offsets(ending),
            max_offsets_per_trigger=int(opts["maxOffsetsPerTrigger"]) if "maxOffsetsPerTrigger" in opts else None,
            fail_on_data_loss=str(opts.get("failOnDataLoss", "true")).lower() == "true",
            include_headers=str(opts.get("includeHeaders", "false")).lower() == "true",
            kafka_options=kafka,
            **overrides,
        )

    def consumer_config(self) -> dict:
        conf = {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # An offset that retention deleted must surface as an error, so failOnDataLoss can decide.
            "auto.offset.reset": "error",
            "enable.partition.eof": False,
        }
        conf.update(self.kafka_options)
        return conf

    def reader_config(self) -> dict:
        """The config of the read's consumers (one per partition): consumer_config with a bounded read-ahead.

        The pipeline consumes far slower than librdkafka fetches, and with its defaults (a 64 MB queue, and 1 s of
        backoff once full) the consumers held ~950 MB of prefetched records at the peak of a 2M-event bounded run
        (memray), so peak RSS grew with the topic. A 4 MB queue refilled within 10 ms keeps the read as fast (1M
        events: 31-36 s wall against 38-40 s) and RSS nearly flat (4M events: 1,038 MB against 2,355 MB). kafka
        options given by the user still win."""
        return {"queued.max.messages.kbytes": 4096, "fetch.queue.backoff.ms": 10, **self.consumer_config()}


def _json_offsets(text: str) -> dict:
    """Spark's per-partition JSON, {"topic": {"0": 23}}, with integer partitions."""
    try:
        parsed = orjson.loads(text)
        return {topic: {int(p): int(v) for p, v in parts.items()} for topic, parts in parsed.items()}
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as error:
        raise ValueError(f"Kafka source: expected JSON like {{\"topic\": {{\"0\": 23}}}}, got {text!r} ({error}).")


NO_WATERMARK_STATE = (MIN_TIMESTAMP.micros, MIN_TIMESTAMP.micros)  # PartitionWatermark's state before any record


class PartitionSpec(NamedTuple):
    """One topic-partition to read, with the offsets resolved when the job started."""
    topic: str
    partition: int
    start: int
    stop: int  # exclusive; UNBOUNDED for streaming
    share_per_trigger: int = sys.maxsize  # maxOffsetsPerTrigger split evenly over the partitions
    watermark_state: Tuple[int, int] = NO_WATERMARK_STATE  # PartitionWatermark's


# ---------------------------------------------------------------------------------------------------------------
# Partition discovery and offset resolution
# ---------------------------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------------------------
# The splittable read
# ---------------------------------------------------------------------------------------------------------------

# Latest high watermark seen per (topic, partition), so restriction_size can estimate backlog without a broker call.
_HIGH_WATERMARKS: dict = {}


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


_IDLE_CONSUMERS = _IdleConsumers()


class KafkaOffsetTracker(OffsetRestrictionTracker):
    """Offset tracking that splits a partition's range only at checkpoints (`defer_remainder`).

    A runner may ask to split a running restriction at some fraction of its remainder. For an unbounded range that
    point would be an offset near 2**62. For a bounded one, the per-partition watermark and late flags assume one
    reader per partition, in offset order, which is also what Kafka offers. (Runner splits were first refused
    because on Prism they made whole windows late; the cause was Prism taking a stage's watermark from the last
    bundle's residuals alone, fixed by the stack's patched Prism, see stack/prism.py.)
    """

    def try_split(self, fraction_of_remainder):
        if fraction_of_remainder > 0:
            return None
        return super().try_split(fraction_of_remainder)


class _OffsetRangeProvider(RestrictionProvider):
    def initial_restriction(self, spec: PartitionSpec) -> OffsetRange:
        return OffsetRange(spec.start, spec.stop)

    def create_tracker(self, restriction: OffsetRange) -> KafkaOffsetTracker:
        return KafkaOffsetTracker(restriction)

    def restriction_size(self, spec: PartitionSpec, restriction: OffsetRange) -> int:
        if restriction.stop != UNBOUNDED:
            return restriction.size()
        high = _HIGH_WATERMARKS.get((spec.topic, spec.partition))
        return max(1, high - restriction.start) if high is not None else 1

    def truncate(self, spec, restriction):
        # On drain a streaming read stops at its checkpoint; a bounded read finishes.
        return None if restriction.stop == UNBOUNDED else restriction


class PartitionWatermark(WatermarkEstimator):
    """Per-partition watermark: the max event time seen minus the watermark delay, never moving back.

    The watermark reported to the runner lags one process() call behind the records: a call's output is committed
    together with the watermark reported at its end, and a runner drops what is already behind it, so the report
    must not pass anything the same call emitted. `start_call` moves it up to what earlier calls saw; the late check
    inside a call uses the running value, so whether a record is late depends only on its partition's order.
    State is (reported_micros, max_event_micros), so a checkpointed residual keeps both.
    """

    def __init__(self, state):
        self._reported, self._max_event = state

    def observe_timestamp(self, timestamp):
        pass  # the DoFn reports event times itself, with observe_event

    def current_watermark(self) -> Timestamp:
        return Timestamp(micros=self._reported)

    def get_estimator_state(self):
        return self._reported, self._max_event

    def start_call(self, delay_micros: int):
        self._reported = max(self._reported, self._max_event - delay_micros)

    def observe_event(self, event_micros: int, delay_micros: int) -> bool:
        """Record one event time; True when it is behind the partition's watermark (a late record)."""
        return bool(self.observe_events([event_micros], delay_micros))

    def observe_events(self, event_micros: list, delay_micros: int) -> list:
        """Record event times in read order; the indexes of those behind the partition's watermark (late)."""
        reported, max_event = self._reported, self._max_event
        late = []
        for index, micros in enumerate(event_micros):
            if micros < reported or micros < max_event - delay_micros:
                late.append(index)
            if micros > max_event:
                max_event = micros
        self._max_event = max_event
        return late

    def advance_idle(self, now_micros: int, delay_micros: int):
        """A caught-up partition that emitted nothing in this call: no record older than now minus the delay
        should arrive, so it must not hold the other partitions back."""
        self._reported = max(self._reported, now_micros - delay_micros)


class PartitionWatermarkProvider(WatermarkEstimatorProvider):
    """Starts from the PartitionSpec's saved watermark state (MIN_TIMESTAMP when there is no checkpoint)."""

    def initial_estimator_state(self, spec: PartitionSpec, restriction):
        return spec.watermark_state

    def create_watermark_estimator(self, state) -> PartitionWatermark:
        return PartitionWatermark(state)

    def estimator_state_coder(self):
        return beam.coders.TupleCoder([beam.coders.VarIntCoder(), beam.coders.VarIntCoder()])


class ReadPartitionsFn(beam.DoFn):
    """Reads the claimed offsets of one partition; checkpoints after `max_read_seconds` or when caught up."""

    def __init__(self, config: KafkaSourceConfig):
        self._config = config
        self._delay_micros = int(config.watermark_delay_seconds * 1e6)
        self._parses = config.parses

    def setup(self):
        tune_gc()
        self._records = Metrics.counter("hitstream", "kafka_records_read")
        self._late = Metrics.counter("hitstream", "kafka_records_late")
        self._data_loss = Metrics.counter("hitstream", "kafka_offsets_lost")
        # Records claimed per process() call: one call is one "trigger" of the read, so its max shows that
        # maxOffsetsPerTrigger holds.
        self._per_read = Metrics.distribution("hitstream", "kafka_records_per_read")
        self._consumers = {}  # (topic, partition) -> (consumer, next offset) of this instance's running call
        self._pool_key = tuple(sorted((k, str(v)) for k, v in self._config.reader_config().items()))
        _IDLE_CONSUMERS.join()
        self._committer = None  # created on the first commit; finalization may run on another thread
        self._commit_lock = threading.Lock()

    def teardown(self):
        consumers, self._consumers = self._consumers, {}
        for consumer, _ in consumers.values():
            consumer.close()
        _IDLE_CONSUMERS.leave()
        with self._commit_lock:
            if self._committer is not None:
                self._committer.close()
                self._committer = None

    def _consumer_at(self, topic: str, partition: int, offset: int) -> Consumer:
        """One consumer per partition, kept between calls (in _IDLE_CONSUMERS) so its prefetch buffer survives a
        checkpoint."""
        key = (topic, partition)
        cached = self._consumers.pop(key, None) or _IDLE_CONSUMERS.take((self._pool_key, topic, partition))
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
        tracker=beam.DoFn.RestrictionParam(_OffsetRangeProvider()),
        watermark=beam.DoFn.WatermarkEstimatorParam(PartitionWatermarkProvider()),
    ) -> Iterable[beam.window.TimestampedValue]:
        config = self._config
        restriction = tracker.current_restriction()
        next_offset = restriction.start
        if restriction.start >= restriction.stop:
            return
        if config.checkpoint:
            config.checkpoint.at_call_start(spec.topic, spec.partition, next_offset, watermark.get_estimator_state())
        consumer = self._consumer_at(spec.topic, spec.partition, next_offset)
        tp = TopicPartition(spec.topic, spec.partition)
        watermark.start_call(self._delay_micros)
        budget = spec.share_per_trigger
        started = time.monotonic()
        deadline = started + config.max_read_seconds
        claimed = 0
        past_stop = False  # a record at or beyond the restriction's stop: a bounded read is complete
        while not past_stop:
            messages = consumer.consume(num_messages=min(budget - claimed, 1000), timeout=config.poll_timeout_seconds)
            outputs = []
            poll_claim = self._claim_poll(messages, tracker)
            for message in messages:
                error = message.error()
                if error is not None:
                    next_offset = self._on_error(error, consumer, spec, next_offset)
                    continue
                if poll_claim is False or (poll_claim is None and not tracker.try_claim(message.offset())):
                    # The restriction ends before this record (a split or the bounded end). It, and any after it
                    # in this poll, were taken off the consumer's queue: the consumer must not be reused as if it
                    # stood at this offset, or the call that reads the rest would silently skip them.
                    past_stop = True
                    self._remember(spec, consumer, POSITION_UNKNOWN)
                    break
                next_offset = message.offset() + 1
                claimed += 1
                outputs.append(self._to_output(message))
            self._mark_late(outputs, watermark)
            if config.batched:
                if outputs:
                    yield _as_batch(outputs, watermark.current_watermark(), self._parses)
            else:
                for element, seconds, _ in outputs:
                    yield beam.window.TimestampedValue(element, seconds)
            if past_stop:
                break
            self._remember(spec, consumer, next_offset)
            if claimed >= budget or time.monotonic() >= deadline:
                break
            if not messages and (restriction.stop == UNBOUNDED or
                                 consumer.position([tp])[0].offset >= restriction.stop):
                break
            # A bounded read with records still to come keeps polling rather than return with a delayed residual.
            # (Delayed residuals made whole windows late on Prism 2.77 as released, whose stage watermark followed
            # the last bundle's residuals alone: see stack/prism.py.)
            if next_offset >= consumer.get_watermark_offsets(tp, cached=True)[1] >= 0:
                break  # caught up: hand this bundle's records on now rather than wait out the deadline
        if config.checkpoint:
            save = config.checkpoint.at_call_end(spec.topic, spec.partition, next_offset,
                                                 watermark.get_estimator_state(), final=past_stop or
                                                 next_offset >= restriction.stop)
            if save is not None:
                finalizer.register(save)
        self._records.inc(claimed)
        self._per_read.update(claimed)
        # Register even when nothing was claimed: Prism finalizes every bundle of a stage that asks for it.
        self._commit_on_finalize(finalizer, spec, next_offset if claimed else None)
        _, high = consumer.get_watermark_offsets(tp, cached=True)
        drained = not past_stop and not messages and consumer.position([tp])[0].offset >= restriction.stop
        self._give_back(spec)
        if high >= 0:
            _HIGH_WATERMARKS[(spec.topic, spec.partition)] = high
        telemetry.record_read(spec.topic, spec.partition, restriction.start, next_offset, claimed, high,
                             watermark.get_estimator_state(), self._delay_micros, time.monotonic() - started)
        if past_stop:
            return
        if drained:
            next_offset = restriction.stop  # the rest of the range holds no record (transaction markers, gaps)
        if next_offset >= restriction.stop:
            tracker.try_claim(restriction.stop)  # done: nothing left to claim in the range
            return
        if next_offset >= high >= 0:
            # Caught up with the log end (backlog 0), as Java KafkaIO's policies check: only then may the wall
            # clock move the watermark. A poll that merely timed out says nothing about what is still to come.
            if not claimed and restriction.stop == UNBOUNDED:  # a bounded read's end is its own, not the clock's
                watermark.advance_idle(Timestamp.now().micros, self._delay_micros)
                tracker.defer_remainder(Duration(seconds=config.idle_poll_seconds))
            else:
                tracker.defer_remainder()  # more may be arriving right now: resume at once
        elif not messages and restriction.stop == UNBOUNDED:
            tracker.defer_remainder(Duration(seconds=config.idle_poll_seconds))
        elif claimed >= budget and config.max_offsets_per_trigger:
            tracker.defer_remainder(Duration(seconds=config.trigger_interval_seconds))
        else:
            tracker.defer_remainder()

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
        record = new_row(KafkaRecord, (  # the fields in KafkaRecord's order
            message.key(), message.value(), message.topic(), message.partition(), message.offset(), ts_ms,
            LOG_APPEND_TIME if ts_type == 2 else CREATE_TIME,
            tuple(message.headers() or ()) if self._config.include_headers else None, False))
        element, event_ms = record, ts_ms
        if self._parses:
            # What hittime_millis does, keeping the parse: a record without a Hit is a dead letter.
            element = parse_record(record)
            if type(element) is not Hit:
                return [element, ts_ms / 1000.0, None]
            event_ms = to_micros(element.hittime) // 1000
        elif self._config.timestamp_policy == "event-time":
            event_ms = self._config.event_time_fn(record)
            if event_ms is None:  # unreadable: the parse step dead-letters it; keep the Kafka time for Beam
                return [record, ts_ms / 1000.0, None]
        return [element, event_ms / 1000.0, event_ms * 1000]

    def _mark_late(self, outputs: list, watermark: PartitionWatermark) -> None:
        """Pass a poll's event times to the partition's watermark in one call (the runner wraps the estimator in
        a lock, which per record cost more than the check itself) and flag the records that were behind it."""
        timed = [output for output in outputs if output[2] is not None]
        late = watermark.observe_events([output[2] for output in timed], self._delay_micros)
        for index in late:
            timed[index][0] = timed[index][0]._replace(late=True)
        self._late.inc(len(late))

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
        self._data_loss.inc(max(0, low - next_offset))
        consumer.assign([TopicPartition(spec.topic, spec.partition, low)])
        return low

    def _remember(self, spec: PartitionSpec, consumer: Consumer, next_offset: int):
        self._consumers[(spec.topic, spec.partition)] = (consumer, next_offset)

    def _give_back(self, spec: PartitionSpec):
        cached = self._consumers.pop((spec.topic, spec.partition), None)
        if cached is not None:
            _IDLE_CONSUMERS.give_back((self._pool_key, spec.topic, spec.partition), *cached)

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
        from apache_beam.transforms.periodicsequence import PeriodicImpulse
        return (pbegin
                | "WatchTicks" >> PeriodicImpulse(fire_interval=config.partition_discovery_seconds,
                                                 apply_windowing=False)
                | "KeyForState" >> beam.Map(lambda tick: (None, tick))
                | "WatchPartitions" >> beam.ParDo(WatchPartitionsFn(config)))
