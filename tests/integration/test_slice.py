"""The first vertical slice against the real broker on Prism: Kafka -> parse -> zip_counts -> console.

The reference is the generator's own count of the well-formed hits it wrote (and Kafka acknowledged), not anything
the pipeline computed.
"""
import threading
import time
import uuid

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from confluent_kafka import Consumer, TopicPartition

import runners
from hitstream.generator import ProduceSpec, produce
from pipelines.blog import build_pipeline
from tests.collect import CollectFn, collected
from transforms.rows import Snapshot, ZipCount


def _options(topic: str, bootstrap: str, trigger: str, *sinks: str, extra=()) -> PipelineOptions:
    streaming = trigger != "available-now"
    args = [f"--topic={topic}", f"--bootstrap-servers={bootstrap}", f"--trigger={trigger}",
            f"--group-id=g-{topic}", *[f"--sink={s}" for s in sinks], *extra]
    return PipelineOptions(args + runners.pipeline_args("prism", streaming=streaming))


def _count_messages(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4().hex}"})
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    consumer.close()
    return high - low


def test_available_now_counts_equal_generator_reference(kafka_bootstrap, topic_factory, capsys):
    topic = topic_factory(partitions=4, prefix="slice")
    report = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=6000, partitions=4,
                                 zipcodes=15, malformed_share=0.03, seed=7, keep_events=False))
    assert report.malformed > 0 and report.well_formed + report.malformed == 6000
    name = f"slice-{uuid.uuid4().hex}"
    dlq = topic_factory(partitions=1, prefix="slice-dlq")
    options = _options(topic, kafka_bootstrap, "available-now", "zip_counts=console:complete",
                       extra=[f"--dead-letter-topic={dlq}"])
    pipeline = beam.Pipeline(options=options)
    outputs = build_pipeline(pipeline, options)
    outputs["zip_counts:complete"] | "CollectCounts" >> beam.ParDo(CollectFn(name))
    outputs["dead_letter"] | "CollectDeadLetters" >> beam.ParDo(CollectFn(name + "-dead"))
    pipeline.run().wait_until_finish()

    snapshots = [element for _, element in collected(name)]
    assert len(snapshots) == 1 and isinstance(snapshots[0], Snapshot)
    assert dict(snapshots[0].rows) == dict(report.zip_counts)
    assert len(collected(name + "-dead")) == report.malformed
    assert _count_messages(kafka_bootstrap, dlq) == report.malformed  # the DLQ topic got every bad message
    printed = capsys.readouterr().out
    assert "Batch: " in printed and "zipcode" in printed


def test_processing_time_counts_change_while_producing(kafka_bootstrap, topic_factory):
    topic = topic_factory(partitions=3, prefix="slice-live")
    name = f"live-{uuid.uuid4().hex}"
    options = _options(topic, kafka_bootstrap, "processing-time=1s", "zip_counts=console:update")
    pipeline = beam.Pipeline(options=options)
    outputs = build_pipeline(pipeline, options)
    outputs["zip_counts:update"] | beam.ParDo(CollectFn(name))
    result = pipeline.run()
    try:
        spec = ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=2400, rate=200, partitions=3,
                           zipcodes=5, skew=0.0, keep_events=False)
        reports = []
        producer = threading.Thread(target=lambda: reports.append(produce(spec)))
        producer.start()
        producer.join(60)
        produced_at = time.time()
        report = reports[0]
        deadline = time.time() + 60
        while time.time() < deadline:
            latest = {}
            for _, row in collected(name):
                latest[row.zipcode] = max(latest.get(row.zipcode, 0), row.count)
            if latest == dict(report.zip_counts):
                break
            time.sleep(0.5)
    finally:
        result.cancel()

    updates = collected(name)
    assert latest == dict(report.zip_counts)
    during = [row for at, row in updates if at < produced_at]
    # Counts arrived while the producer was still writing, and the same zipcode was updated more than once.
    assert len(during) >= 5, updates[:10]
    per_zip = {}
    for row in during:
        per_zip.setdefault(row.zipcode, set()).add(row.count)
    assert max(len(counts) for counts in per_zip.values()) >= 3
    assert all(isinstance(row, ZipCount) for _, row in updates)
