"""`hitstream produce`: writes ISP hits (SPEC "Data contract") to a Kafka topic and reports what it wrote.

The report is the reference for tests and benchmarks: every well-formed hit with the partition and offset Kafka gave
it, so per-zipcode, per-ISP and per-window counts can be computed independently (in plain Python or DuckDB).
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import random
import time
from typing import Optional

import orjson
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from transforms.times import from_millis, iso_utc

_LOGGER = logging.getLogger(__name__)

ISPS = ("Comcast", "AT&T", "Verizon", "Spectrum", "Cox", "CenturyLink", "Frontier", "Optimum")
CITIES = (("San Francisco", "CA"), ("New York", "NY"), ("Austin", "TX"), ("Seattle", "WA"), ("Chicago", "IL"))
URLS = ("/", "/watch?v=1", "/watch?v=2", "/search?q=kafka", "/account")

# Each is a value the parse step must dead-letter, one per malformed case in the spec.
MALFORMED_VALUES = (
    b"\xff\xfe not utf-8 \xc3\x28",
    b"this is not json",
    b"[1, 2, 3]",
    b'"a json string"',
    b'{"zipcode": "94107"}',
    b'{"hittime": "2026-11-23T19:02:41Z"}',
    b'{"hittime": "2026-11-23T19:02:41Z", "zipcode": ""}',
    b'{"hittime": "2026-11-23T19:02:41Z", "zipcode": 94107}',
    b'{"hittime": "yesterday at noon", "zipcode": "94107"}',
    b'{"hittime": true, "zipcode": "94107"}',
)


@dataclasses.dataclass(frozen=True)
class ProduceSpec:
    topic: str
    bootstrap_servers: str = "127.0.0.1:9092"
    count: int = 10_000
    rate: float = 0.0  # events per second; 0 = as fast as possible
    zipcodes: int = 50
    skew: float = 1.0  # Zipf exponent over zipcodes; 0 = uniform
    late_share: float = 0.0  # share of hits whose hittime is up to `late_by_seconds` behind the others
    late_by_seconds: float = 120.0
    malformed_share: float = 0.0
    partitions: int = 4
    seed: int = 42
    # Event time of the first hit, epoch ms; None = the wall clock (live streams).
    event_time_start_ms: Optional[int] = None
    # Event time covered by the whole run (bounded tests); 0 = the wall clock as hits are produced.
    event_time_span_seconds: float = 0.0
    keep_events: bool = True  # keep every well-formed hit in the report (for window references)
    # Out-of-order input within a partition: each hittime moved back by up to this many seconds.
    disorder_seconds: float = 0.0
    # Share of hits moved back onto the blog's latest window boundary (hh:02, hh:07, ...) when it lies at most
    # BOUNDARY_REACH_MS behind them: the edge cases of window assignment.
    boundary_share: float = 0.0
    # Set each well-formed hit's Kafka timestamp (CreateTime) to its hittime, as a device that stamps its own
    # records does; otherwise Kafka's producer stamps the time of sending.
    kafka_timestamp_is_hittime: bool = False


@dataclasses.dataclass
class ProduceReport:
    topic: str
    produced: int = 0
    well_formed: int = 0
    malformed: int = 0
    zip_counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    isp_counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    # (hittime_ms, zipcode, isp, partition, offset) for every well-formed hit, when keep_events
    events: list = dataclasses.field(default_factory=list)
    # (partition, offset) of every malformed message, when keep_events
    malformed_at: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    undelivered: int = 0  # messages the broker never acknowledged (only when produce(..., strict=False))

    def summary(self) -> dict:
        return {"topic": self.topic, "produced": self.produced, "well_formed": self.well_formed,
                "malformed": self.malformed, "seconds": round(self.seconds, 3),
                "zip_counts": dict(sorted(self.zip_counts.items()))}


# The blog's window grid: a boundary every 5 minutes, 2 minutes past the hour.
BOUNDARY_PERIOD_MS, BOUNDARY_OFFSET_MS = 300_000, 120_000
BOUNDARY_REACH_MS = 150_000


def _on_boundary(hittime_ms: int) -> int:
    """The latest window boundary at or before `hittime_ms`, if it is at most BOUNDARY_REACH_MS back."""
    boundary = (hittime_ms - BOUNDARY_OFFSET_MS) // BOUNDARY_PERIOD_MS * BOUNDARY_PERIOD_MS + BOUNDARY_OFFSET_MS
    return boundary if hittime_ms - boundary <= BOUNDARY_REACH_MS else hittime_ms


def ensure_topic(bootstrap_servers: str, topic: str, partitions: int) -> None:
    """Create the topic with `partitions` partitions unless it exists."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    if topic in admin.list_topics(timeout=10).topics:
        return
    future = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic]
    try:
        future.result(timeout=30)
    except KafkaException as error:
        if error.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS: someone else won the race
            raise
    wait_for_leaders(admin, topic, partitions)


def wait_for_leaders(admin: AdminClient, topic: str, partitions: int, timeout: float = 60.0) -> None:
    """Returns once every partition of `topic` has a leader. Creation returns before that, and producing earlier can
    fail; a broker that has just restarted (the outage tests) can take seconds to give new partitions one."""
    deadline = time.monotonic() + timeout
    while True:
        meta = admin.list_topics(topic, timeout=10).topics.get(topic)
        if meta and len(meta.partitions) == partitions and all(p.leader >= 0 for p in meta.partitions.values()):
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"topic {topic} has no leader for every partition after {timeout:g} s")
        time.sleep(0.1)


def _zipcodes(n: int) -> list:
    return [f"{94000 + i * 7:05d}" for i in range(n)]


def _iso(ms: int) -> str:
    return iso_utc(from_millis(ms))


def produce(spec: ProduceSpec, on_progress=None, strict: bool = True) -> ProduceReport:
    """Write `spec.count` messages and return the report once every one is acknowledged by the broker.

    `strict=False` returns the report anyway, with the count of messages not acknowledged within the flush (their
    fate is unknown: an unacknowledged message may still be in the topic), for tests that read the topic back."""
    ensure_topic(spec.bootstrap_servers, spec.topic, spec.partitions)
    rng = random.Random(spec.seed)
    zips = _zipcodes(spec.zipcodes)
    weights = [1.0 / (rank + 1) ** spec.skew for rank in range(len(zips))]
    producer = Producer({"bootstrap.servers": spec.bootstrap_servers, "enable.idempotence": True,
                         "linger.ms": 20, "batch.num.messages": 10000, "queue.buffering.max.messages": 500000})
    report = ProduceReport(topic=spec.topic)
    failures = []
    start_ms = spec.event_time_start_ms or int(time.time() * 1000)
    step_ms = spec.event_time_span_seconds * 1000 / max(1, spec.count)
    started = time.monotonic()

    def delivered(error, message, hit=None):
        if error is not None:
            failures.append(error)
        elif spec.keep_events and hit is not None:
            report.events.append((*hit, message.partition(), message.offset()))
        elif spec.keep_events:
            report.malformed_at.append((message.partition(), message.offset()))

    for i in range(spec.count):
        if spec.rate > 0:
            ahead = started + i / spec.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        if rng.random() < spec.malformed_share:
            value, hit = rng.choice(MALFORMED_VALUES), None
            key = None
            report.malformed += 1
        else:
            if spec.event_time_span_seconds:
                hittime_ms = int(start_ms + i * step_ms)
            else:
                hittime_ms = int(time.time() * 1000)
            if spec.disorder_seconds:
                hittime_ms -= int(rng.uniform(0, spec.disorder_seconds) * 1000)
            if spec.boundary_share and rng.random() < spec.boundary_share:
                hittime_ms = _on_boundary(hittime_ms)
            if rng.random() < spec.late_share:
                hittime_ms -= int(rng.uniform(0, spec.late_by_seconds) * 1000)
            zipcode = rng.choices(zips, weights)[0]
            isp = rng.choice(ISPS)
            city, state = rng.choice(CITIES)
            body = {"hittime": _iso(hittime_ms) if rng.random() < 0.8 else hittime_ms, "zipcode": zipcode,
                    "isp": isp, "ip": f"73.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
                    "city": city, "state": state, "country": "US", "user_id": f"u-{rng.randrange(100000)}",
                    "url": rng.choice(URLS)}
            value, key, hit = orjson.dumps(body), zipcode.encode(), (hittime_ms, zipcode, isp)
            report.well_formed += 1
            report.zip_counts[zipcode] += 1
            report.isp_counts[isp] += 1
        while True:
            try:
                stamp = hit[0] if spec.kafka_timestamp_is_hittime and hit is not None else 0  # 0: now
                producer.produce(spec.topic, value=value, key=key, timestamp=stamp,
                                 on_delivery=lambda e, m, hit=hit: delivered(e, m, hit))
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.05)
        report.produced += 1
        producer.poll(0)
        if on_progress is not None and report.produced % 10_000 == 0:
            on_progress(report)
    remaining = producer.flush(120)
    report.seconds = time.monotonic() - started
    if not strict:
        report.undelivered = remaining + len(failures)
        producer.purge()  # what is left never reaches the topic after this
        producer.flush(10)
    elif remaining or failures:
        raise RuntimeError(f"produce: {remaining} message(s) undelivered, {len(failures)} failed: {failures[:3]}")
    return report


def write_events(report: ProduceReport, path: str) -> None:
    """Every well-formed hit of the report as Parquet: hittime_ms, zipcode, isp, partition, offset."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    columns = list(zip(*report.events)) if report.events else [[]] * 5
    table = pa.table({"hittime_ms": pa.array(columns[0], pa.int64()), "zipcode": pa.array(columns[1], pa.string()),
                      "isp": pa.array(columns[2], pa.string()), "partition": pa.array(columns[3], pa.int32()),
                      "offset": pa.array(columns[4], pa.int64())})
    pq.write_table(table, path)
