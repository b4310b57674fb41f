"""The native Kafka source against the real broker, on Prism.

References come from what the test itself produced (delivery reports give partition, offset and timestamp).
"""
import time
import uuid

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

import runners
from tests.collect import CollectFn, collected
from transforms.kafka_source import KafkaSourceConfig, ReadFromKafka


def _produce(bootstrap, topic, per_partition: dict, headers=None) -> dict:
    """Write `count` messages to each partition; returns {(partition, offset): (key, value, timestamp_ms)}."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    written = {}

    def delivered(error, message):
        assert error is None, error
        written[(message.partition(), message.offset())] = (message.key(), message.value(), message.timestamp()[1])

    for partition, count in per_partition.items():
        for i in range(count):
            producer.produce(topic, key=f"k{partition}-{i}".encode(), value=f"v{partition}-{i}".encode(),
                             partition=partition, headers=headers, on_delivery=delivered)
            producer.poll(0)
    assert producer.flush(30) == 0
    return written


def _config(bootstrap, topic, **options) -> KafkaSourceConfig:
    spark = {"kafka.bootstrap.servers": bootstrap, "subscribe": topic, "startingOffsets": "earliest",
             "endingOffsets": "latest"}
    spark.update({k: v for k, v in options.items() if not k.startswith("_")})
    return KafkaSourceConfig.from_spark_options(spark, group_id=f"g-{uuid.uuid4().hex}",
                                                **options.get("_overrides", {}))


def _pipeline(streaming: bool) -> beam.Pipeline:
    return beam.Pipeline(options=PipelineOptions(runners.pipeline_args("prism", streaming=streaming)))


def _read_bounded(config: KafkaSourceConfig):
    name = uuid.uuid4().hex
    pipeline = _pipeline(streaming=False)
    pipeline | ReadFromKafka(config) | beam.ParDo(CollectFn(name))
    result = pipeline.run()
    result.wait_until_finish()
    return [record for _, record in collected(name)], result


def _metric(result, name: str):
    found = result.metrics().query(beam.metrics.MetricsFilter().with_name(name))
    return found["counters"] + found["distributions"]


def test_multi_partition_read_returns_every_record_once_with_metadata(kafka_bootstrap, topic_factory):
    topic = topic_factory(partitions=4, prefix="src-multi")
    written = _produce(kafka_bootstrap, topic, {0: 700, 1: 60, 2: 3}, headers=[("trace", b"t1")])  # 3 stays idle
    records, result = _read_bounded(_config(kafka_bootstrap, topic, includeHeaders="true"))

    assert len(records) == len(written) == 763
    assert {(r.partition, r.offset) for r in records} == set(written)
    for record in records:
        key, value, timestamp = written[(record.partition, record.offset)]
        assert (record.topic, record.key, record.value, record.timestamp) == (topic, key, value, timestamp)
        assert record.timestampType == 0 and record.headers == (("trace", b"t1"),)
    assert _metric(result, "kafka_records_read")[0].committed == 763


def test_starting_offsets_json_and_ending_offsets_json(kafka_bootstrap, topic_factory):
    topic = topic_factory(partitions=2, prefix="src-json")
    _produce(kafka_bootstrap, topic, {0: 50, 1: 50})
    config = _config(kafka_bootstrap, topic, startingOffsets=f'{{"{topic}": {{"0": 10, "1": -2}}}}',
                     endingOffsets=f'{{"{topic}": {{"0": 30, "1": -1}}}}')
    records, _ = _read_bounded(config)
    # partition 0: [10, 30); partition 1: earliest to latest, [0, 50)
    assert sorted((r.partition, r.offset) for r in records) == (
        [(0, o) for o in range(10, 30)] + [(1, o) for o in range(50)])


def test_starting_offsets_by_timestamp(kafka_bootstrap, topic_factory):
    topic = topic_factory(partitions=2, prefix="src-ts")
    _produce(kafka_bootstrap, topic, {0: 20, 1: 20})
    time.sleep(1.0)
    boundary_ms = int(time.time() * 1000)
    time.sleep(0.2)
    later = _produce(kafka_bootstrap, topic, {0: 5, 1: 7})
    records, _ = _read_bounded(_config(kafka_bootstrap, topic, startingTimestamp=str(boundary_ms)))
    assert {(r.partition, r.offset) for r in records} == set(later)


def test_max_offsets_per_trigger_bounds_each_read(kafka_bootstrap, topic_factory):
    topic = topic_factory(partitions=2, prefix="src-rate")
    _produce(kafka_bootstrap, topic, {0: 150, 1: 150})
    config = _config(kafka_bootstrap, topic, maxOffsetsPerTrigger="60",
                     _overrides={"trigger_interval_seconds": 0.5})
    started = time.monotonic()
    records, result = _read_bounded(config)
    elapsed = time.monotonic() - started
    assert len(records) == 300
    per_read = _metric(result, "kafka_records_per_read")[0].committed
    assert per_read.max <= 30  # 60 per trigger, split over 2 partitions
    # 150 records per partition at 30 per read: at least 4 waits of 0.5 s between reads.
    assert elapsed >= 2.0


def test_fail_on_data_loss(kafka_bootstrap, topic_factory):
    topic = topic_factory(partitions=1, prefix="src-loss")
    _produce(kafka_bootstrap, topic, {0: 100})
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.delete_records([TopicPartition(topic, 0, 50)])[TopicPartition(topic, 0, 50)].result(30)
    starting = f'{{"{topic}": {{"0": 10}}}}'

    with pytest.raises(Exception, match="were deleted"):
        _read_bounded(_config(kafka_bootstrap, topic, startingOffsets=starting))

    records, result = _read_bounded(_config(kafka_bootstrap, topic, startingOffsets=starting,
                                            failOnDataLoss="false"))
    assert sorted(r.offset for r in records) == list(range(50, 100))
    assert _metric(result, "kafka_offsets_lost")[0].committed == 40


def test_streaming_read_latency_and_resume_from_committed_offsets(kafka_bootstrap, topic_factory):
    topic = topic_factory(partitions=2, prefix="src-stream")
    group = f"g-{uuid.uuid4().hex}"
    config = KafkaSourceConfig.from_spark_options(
        {"kafka.bootstrap.servers": kafka_bootstrap, "subscribe": topic, "startingOffsets": "earliest"},
        group_id=group)

    def start(name):
        pipeline = _pipeline(streaming=True)
        pipeline | ReadFromKafka(config) | beam.ParDo(CollectFn(name))
        return pipeline.run()

    first = f"first-{uuid.uuid4().hex}"
    result = start(first)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    sent = {}
    try:
        time.sleep(3)  # let the job start reading
        for i in range(40):
            sent[f"m{i}".encode()] = time.time()
            producer.produce(topic, value=f"m{i}".encode(), partition=i % 2)
            producer.flush(10)
            time.sleep(0.1)
        deadline = time.time() + 20
        while len(collected(first)) < 40 and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # give bundle finalization time to commit
    finally:
        result.cancel()
    arrivals = {record.value: at for at, record in collected(first)}
    assert set(arrivals) == set(sent)
    latencies = sorted(arrivals[v] - sent[v] for v in sent)
    assert latencies[-1] < 2.0, latencies

    committed = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group}).committed(
        [TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
    assert sum(max(tp.offset, 0) for tp in committed) > 0, committed

    later = [f"n{i}".encode() for i in range(30)]
    for i, value in enumerate(later):
        producer.produce(topic, value=value, partition=i % 2)
    producer.flush(10)
    second = f"second-{uuid.uuid4().hex}"
    result = start(second)
    try:
        deadline = time.time() + 30
        while not set(later) <= {r.value for _, r in collected(second)} and time.time() < deadline:
            time.sleep(0.2)
    finally:
        result.cancel()
    seen_second = {r.value for _, r in collected(second)}
    assert set(later) <= seen_second  # nothing skipped
    # Resumed from the commits, not from the start: at most the last uncommitted reads come again.
    assert len(seen_second & set(sent)) < len(sent)


def test_subscribe_pattern_picks_up_new_topics(kafka_bootstrap, topic_factory):
    prefix = f"pat{uuid.uuid4().hex[:8]}"
    first = topic_factory(partitions=1, prefix=prefix)
    _produce(kafka_bootstrap, first, {0: 5})
    config = KafkaSourceConfig.from_spark_options(
        {"kafka.bootstrap.servers": kafka_bootstrap, "subscribePattern": f"{prefix}-.*",
         "startingOffsets": "earliest"}, group_id=f"g-{uuid.uuid4().hex}", partition_discovery_seconds=1.0)
    name = uuid.uuid4().hex
    pipeline = _pipeline(streaming=True)
    pipeline | ReadFromKafka(config) | beam.ParDo(CollectFn(name))
    result = pipeline.run()
    try:
        deadline = time.time() + 30
        while len(collected(name)) < 5 and time.time() < deadline:
            time.sleep(0.2)
        second = topic_factory(partitions=2, prefix=prefix)
        _produce(kafka_bootstrap, second, {0: 3, 1: 4})
        while len(collected(name)) < 12 and time.time() < deadline + 30:
            time.sleep(0.2)
    finally:
        result.cancel()
    by_topic = {}
    for _, record in collected(name):
        by_topic[record.topic] = by_topic.get(record.topic, 0) + 1
    assert by_topic == {first: 5, second: 7}


def test_idle_partition_does_not_hold_the_watermark(kafka_bootstrap, topic_factory):
    """Append-mode windows close while one partition never receives a record."""
    import collections

    import orjson

    from transforms.output_modes import OutputConfig
    from transforms.parse import ParseHits
    from transforms.queries import ZipWindowCounts

    topic = topic_factory(partitions=3, prefix="src-idle")  # partition 2 stays empty
    config = KafkaSourceConfig.from_spark_options(
        {"kafka.bootstrap.servers": kafka_bootstrap, "subscribe": topic, "startingOffsets": "earliest"},
        group_id=f"g-{uuid.uuid4().hex}", timestamp_policy="event-time", watermark_delay_seconds=3.0)
    name = uuid.uuid4().hex
    pipeline = _pipeline(streaming=True)
    hits = (pipeline | ReadFromKafka(config) | ParseHits()).good
    (hits | ZipWindowCounts(size=4, period=2, offset=0, output=OutputConfig("append", "processing-time=1s", 3.0))
          | beam.ParDo(CollectFn(name)))
    result = pipeline.run()
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    expected = collections.Counter()
    try:
        time.sleep(3)
        start = time.time()
        while time.time() - start < 12:
            now_ms = int(time.time() * 1000)
            producer.produce(topic, value=orjson.dumps({"hittime": now_ms, "zipcode": "94107"}),
                             partition=int(now_ms / 100) % 2)
            # Windows [k*2s, k*2s+4s): each hit counts in the two windows that contain it.
            for window_start in (now_ms // 2000 * 2000, now_ms // 2000 * 2000 - 2000):
                expected[window_start] += 1
            producer.poll(0)
            time.sleep(0.05)
        producer.flush(10)
        deadline = time.time() + 20
        closed_by = (int(time.time() * 1000) - 5000) // 2000 * 2000  # windows ending before now - delay - slack
        while time.time() < deadline:
            emitted = {int(row.window_start.timestamp() * 1000): row.count for _, row in collected(name)}
            if all(ws in emitted for ws in expected if ws + 4000 <= closed_by):
                break
            time.sleep(0.5)
    finally:
        result.cancel()
    emitted = {int(row.window_start.timestamp() * 1000): row.count for _, row in collected(name)}
    closed = {ws: n for ws, n in expected.items() if ws + 4000 <= closed_by and ws >= min(expected) + 2000}
    assert closed, "the test produced no complete window"
    assert {ws: emitted.get(ws) for ws in closed} == closed

