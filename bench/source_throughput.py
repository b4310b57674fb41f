"""The native Kafka source alone on Prism against a raw confluent-kafka consume loop, same topic, one run.

    python -m bench.source_throughput --count 1000000

Prints records/s for each and the ratio. The topic is produced once (8 partitions) and read by both.
"""
from __future__ import annotations

import argparse
import time
import uuid

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from confluent_kafka import Consumer, TopicPartition

import runners
from hitstream.generator import ProduceSpec, produce
from transforms.kafka_source import KafkaSourceConfig, ReadFromKafka, resolve_partitions


def raw_loop(bootstrap: str, topic: str, expected: int) -> float:
    """Seconds for one Python loop to consume every record of the topic in batches."""
    config = KafkaSourceConfig(bootstrap_servers=bootstrap, subscribe=(topic,), starting_offsets="earliest",
                               ending_offsets="latest", group_id=f"raw-{uuid.uuid4().hex}")
    consumer = Consumer(config.consumer_config())
    consumer.assign([TopicPartition(s.topic, s.partition, s.start) for s in resolve_partitions(config)])
    started, seen = time.perf_counter(), 0
    while seen < expected:
        seen += sum(1 for m in consumer.consume(num_messages=10000, timeout=1.0) if m.error() is None)
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def beam_source(bootstrap: str, topic: str, expected: int) -> float:
    config = KafkaSourceConfig(bootstrap_servers=bootstrap, subscribe=(topic,), starting_offsets="earliest",
                               ending_offsets="latest", group_id=f"beam-{uuid.uuid4().hex}", commit_offsets=False)
    pipeline = beam.Pipeline(options=PipelineOptions(runners.pipeline_args("prism", streaming=False)))
    counted = (pipeline | ReadFromKafka(config) | beam.combiners.Count.Globally())
    counted | beam.Map(lambda n: print(f"  beam source read {n} records") or n)
    started = time.perf_counter()
    pipeline.run().wait_until_finish()
    return time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--count", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    topic = f"bench-source-{uuid.uuid4().hex[:8]}"
    produce(ProduceSpec(topic=topic, bootstrap_servers=args.bootstrap_servers, count=args.count, partitions=8,
                        keep_events=False))
    raw = raw_loop(args.bootstrap_servers, topic, args.count)
    native = beam_source(args.bootstrap_servers, topic, args.count)
    print("| reader | records | seconds | records/s |\n|---|---|---|---|")
    print(f"| raw confluent-kafka loop | {args.count} | {raw:.1f} | {args.count / raw:,.0f} |")
    print(f"| hitstream source on Prism | {args.count} | {native:.1f} | {args.count / native:,.0f} |")
    print(f"ratio source/raw = {raw / native:.2f}")


if __name__ == "__main__":
    main()
