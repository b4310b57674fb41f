"""Spark's Kafka source options, parsed and checked (`KafkaSourceConfig.from_spark_options`)."""
from __future__ import annotations

import dataclasses
import re
import uuid
from typing import TYPE_CHECKING, Callable, Mapping, Optional

import orjson

from transforms.parse import hittime_millis
from transforms.rows import KafkaRecord

if TYPE_CHECKING:
    from transforms.checkpoint import AggregateCheckpoint

TIMESTAMP_POLICIES = ("create-time", "log-append-time", "event-time")
# Where a caught-up partition's watermark goes (transforms/kafka_source/watermark.py): "data", the highest event time
# this source has read minus the delay (Spark's global watermark); "wall-clock", now minus the delay.
IDLE_WATERMARKS = ("data", "wall-clock")


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
    idle_watermark: str = "data"
    # Names this source's reads within a worker process, where idle partitions follow the event time of the rest.
    source_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
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
        if self.idle_watermark not in IDLE_WATERMARKS:
            raise ValueError(f"Kafka source: idle watermark must be one of {IDLE_WATERMARKS}, "
                             f"not {self.idle_watermark!r}.")
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

        `hittime_millis` applies the whole data contract to find a record's event time, so in the batched fast path
        the read keeps the Hit or DeadLetter it got rather than have the parse step parse every record a second
        time. It parses under the Kafka-time policies too: a dead letter must not move the watermark there either
        (the generator's malformed records carry their send time, days ahead of the hits, and made every later
        hit of their partition late)."""
        return self.batched and self.event_time_fn is hittime_millis

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
        (memray), so peak RSS grew with the topic. A 4 MB queue refilled within 10 ms kept the read as fast (1M
        events: 31-36 s wall against 38-40 s) and RSS nearly flat (4M events: 1,038 MB against 2,355 MB); 1 MB, later,
        took another 35 MB off the 1M run's peak at the same speed, and 256 KB ran slower (bench.ab, 2026-12-07).
        kafka options given by the user still win."""
        return {"queued.max.messages.kbytes": 1024, "fetch.queue.backoff.ms": 10, **self.consumer_config()}


def _json_offsets(text: str) -> dict:
    """Spark's per-partition JSON, {"topic": {"0": 23}}, with integer partitions."""
    try:
        parsed = orjson.loads(text)
        return {topic: {int(p): int(v) for p, v in parts.items()} for topic, parts in parsed.items()}
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as error:
        raise ValueError(f"Kafka source: expected JSON like {{\"topic\": {{\"0\": 23}}}}, got {text!r} ({error}).")
