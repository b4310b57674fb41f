"""The Kafka sink and the dead-letter writer against the real broker, on Prism: the output topic, consumed to its end,
equals the generator's reference in update and complete modes, JSON and text; update mode sends only changed keys;
dead letters keep their raw bytes."""
from __future__ import annotations

import base64
import time
import uuid

import apache_beam as beam
import orjson
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from confluent_kafka import Consumer, TopicPartition

import runners
from hitstream.generator import MALFORMED_VALUES, ProduceSpec, produce
from pipelines.blog import build_pipeline
from transforms.sinks.kafka import WriteDeadLettersToKafka

pytestmark = pytest.mark.timeout(900)


def consume_all(bootstrap: str, topic: str, timeout: float = 30.0) -> list:
    """Every message of `topic`, from the start to the end offsets seen now: [(key, value)] in offset order per
    partition."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages, positions = [], {p: 0 for p in partitions}
        deadline = time.time() + timeout
        while any(positions[p] < ends[p] for p in partitions) and time.time() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            messages.append((message.partition(), message.offset(), message.key(), message.value()))
            positions[message.partition()] = message.offset() + 1
        assert all(positions[p] >= ends[p] for p in partitions), "did not reach the end of the topic"
        return [(key, value) for _, _, key, value in sorted(messages)]
    finally:
        consumer.close()


def _run(topic: str, bootstrap: str, out_topic: str, *extra: str, dead_topic: str = "") -> None:
    args = [f"--topic={topic}", f"--bootstrap-servers={bootstrap}", "--trigger=available-now",
            f"--group-id=g-{uuid.uuid4().hex}", f"--output-topic={out_topic}", *extra]
    options = PipelineOptions(args + runners.pipeline_args("prism", streaming=False))
    pipeline = beam.Pipeline(options=options)
    outputs = build_pipeline(pipeline, options)
    if dead_topic:
        outputs["dead_letter"] | "DeadLettersToKafka" >> WriteDeadLettersToKafka(bootstrap, dead_topic)
    pipeline.run().wait_until_finish()


def test_update_json_and_dead_letters_equal_the_reference(kafka_bootstrap, topic_factory):
    topic = topic_factory(partitions=4, prefix="sink-kafka")
    out_topic = topic_factory(partitions=2, prefix="sink-kafka-out")
    dead_topic = topic_factory(partitions=1, prefix="sink-kafka-dlq")
    report = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=10_000, partitions=4,
                                 zipcodes=30, malformed_share=0.03, seed=13, keep_events=False))
    _run(topic, kafka_bootstrap, out_topic, "--sink=zip_counts=kafka:update", dead_topic=dead_topic)

    latest = {}
    for key, value in consume_all(kafka_bootstrap, out_topic):
        row = orjson.loads(value)
        assert key == row["zipcode"].encode()
        latest[row["zipcode"]] = max(latest.get(row["zipcode"], 0), row["count"])
    assert latest == dict(report.zip_counts)

    dead = [orjson.loads(value) for _, value in consume_all(kafka_bootstrap, dead_topic)]
    assert len(dead) == report.malformed
    assert {base64.b64decode(d["value_base64"]) for d in dead} <= set(MALFORMED_VALUES)
    assert all(d["topic"] == topic and d["step"] == "parse" and d["error"] for d in dead)
    assert len({(d["partition"], d["offset"]) for d in dead}) == report.malformed


def test_complete_text_sends_every_key_once_per_snapshot(kafka_bootstrap, topic_factory):
    topic = topic_factory(partitions=3, prefix="sink-kafka-text")
    out_topic = topic_factory(partitions=1, prefix="sink-kafka-text-out")
    report = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=5000, partitions=3,
                                 zipcodes=12, seed=17, keep_events=False))
    _run(topic, kafka_bootstrap, out_topic, "--sink=zip_counts=kafka:complete", "--kafka-value-format=text")
    messages = consume_all(kafka_bootstrap, out_topic)
    pairs = [value.decode().rsplit(":", 1) for _, value in messages]  # the blog's zipcode:count
    assert {z: int(n) for z, n in pairs} == dict(report.zip_counts)
    assert len(messages) == len(report.zip_counts)  # available-now: one snapshot, each key once
    assert [key for key, _ in messages] == [z.encode() for z, _ in pairs]


def test_streaming_update_sends_only_changed_keys(kafka_bootstrap, topic_factory):
    topic = topic_factory(partitions=2, prefix="sink-kafka-live")
    out_topic = topic_factory(partitions=1, prefix="sink-kafka-live-out")
    args = [f"--topic={topic}", f"--bootstrap-servers={kafka_bootstrap}", "--trigger=processing-time=1s",
            f"--group-id=g-{topic}", f"--output-topic={out_topic}", "--sink=zip_counts=kafka:update"]
    options = PipelineOptions(args + runners.pipeline_args("prism", streaming=True))
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, options)
    result = pipeline.run()
    try:
        # Wave 1 touches zipcodes of a 4-zipcode universe; wave 2 has 1 zipcode only: only it may be re-sent.
        first = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=800, rate=400,
                                    partitions=2, zipcodes=4, skew=0.0, seed=1, keep_events=False))
        deadline = time.time() + 60
        while time.time() < deadline:
            latest = {}
            for _, value in consume_all(kafka_bootstrap, out_topic):
                row = orjson.loads(value)
                latest[row["zipcode"]] = max(latest.get(row["zipcode"], 0), row["count"])
            if latest == dict(first.zip_counts):
                break
            time.sleep(0.5)
        assert latest == dict(first.zip_counts)
        sent_before = len(consume_all(kafka_bootstrap, out_topic))
        second = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=50, partitions=2,
                                     zipcodes=1, seed=2, keep_events=False))
        (only_zip,) = second.zip_counts
        wanted = first.zip_counts[only_zip] + second.zip_counts[only_zip]
        deadline = time.time() + 60
        while time.time() < deadline:
            new = [orjson.loads(v) for _, v in consume_all(kafka_bootstrap, out_topic)[sent_before:]]
            if any(row["count"] == wanted for row in new):
                break
            time.sleep(0.5)
        time.sleep(3)  # a few more triggers: nothing else may be sent
        new = [orjson.loads(v) for _, v in consume_all(kafka_bootstrap, out_topic)[sent_before:]]
    finally:
        result.cancel()
    assert new and {row["zipcode"] for row in new} == {only_zip}
    assert max(row["count"] for row in new) == wanted


def test_messages_stalled_in_the_producer_are_sent_again_with_a_new_one(kafka_bootstrap, topic_factory):
    """librdkafka has been seen to deliver nothing more after a broker restart. Here the first producer can reach
    no broker at all: its flush times out, the retry takes the stuck messages back and a new producer (by then
    pointed at the real broker) delivers them, each row once."""
    from transforms.rows import ZipCount
    from transforms.sinks.base import RetryPolicy, SinkWriteFn
    from transforms.sinks.kafka import KafkaWriter

    class BrokerBackOnRetry(KafkaWriter):
        def on_retry(self, error):
            self._config["bootstrap.servers"] = kafka_bootstrap
            super().on_retry(error)

    out_topic = topic_factory(partitions=1, prefix="sink-kafka-stalled")
    writer = BrokerBackOnRetry("127.0.0.1:1", out_topic, "json", {"message.timeout.ms": "300000"}, flush_timeout=2.0)
    fn = SinkWriteFn(writer, "kafka.stalled", retry=RetryPolicy(max_attempts=2, initial_backoff=0.0))
    fn.setup()
    fn.start_bundle()
    fn.process(ZipCount("94107", 3))
    fn.process(ZipCount("02134", 5))
    fn.finish_bundle()  # attempt 1 times out, the retry replaces the producer, attempt 2 delivers
    fn.teardown()
    sent = sorted(orjson.loads(value)["zipcode"] for _, value in consume_all(kafka_bootstrap, out_topic))
    assert sent == ["02134", "94107"]
