"""The benchmark's reference: what every contender must have written, computed in plain Python from the events the
generator reports it produced, and the check of a contender's Kafka output against it.

    python -m bench.reference produce --count 20000 --report /tmp/r.pkl      # a blog-core topic and its reference
    python -m bench.reference check --report /tmp/r.pkl --zip-topic Z --window-topic W --dead-letter-topic D

A contender's output is its last message per key: the zipcode for `zip_counts`, (window start, window end, zipcode)
for `zip_window_counts`, as a consumer that keeps the latest value per key reads an update-mode topic.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import pickle
import sys
import time
import uuid

import orjson
from confluent_kafka import Consumer, TopicPartition

from hitstream.generator import ProduceSpec, produce

WINDOW_MS, SLIDE_MS, OFFSET_MS = 600_000, 300_000, 120_000
HOUR_MS = 3_600_000


def blog_core_spec(topic: str, count: int, bootstrap: str) -> ProduceSpec:
    """The benchmark's input: 8 partitions, 200 zipcodes with a Zipf spread, 1% malformed, 1% up to a minute late,
    the last whole hour of event time, each Kafka timestamp the hittime (for a read that takes its event time from
    Kafka). Recent, because the broker deletes records whose timestamps are past its retention (7 days)."""
    last_hour_ms = (int(time.time() * 1000) // HOUR_MS - 1) * HOUR_MS
    return ProduceSpec(topic=topic, bootstrap_servers=bootstrap, count=count, partitions=8, zipcodes=200, skew=1.0,
                       late_share=0.01, late_by_seconds=60, malformed_share=0.01,
                       event_time_start_ms=last_hour_ms, event_time_span_seconds=3600,
                       keep_events=True, kafka_timestamp_is_hittime=True)


def _iso(ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def window_starts(ms: int) -> range:
    """Start (epoch ms) of every sliding window that holds an event at `ms`."""
    last = (ms - OFFSET_MS) // SLIDE_MS * SLIDE_MS + OFFSET_MS
    return range(last, ms - WINDOW_MS, -SLIDE_MS)


def expected(report) -> dict:
    """{"zip_counts": {zipcode: n}, "zip_window_counts": {(start, end, zipcode): n}, "dead_letters": n}."""
    windows = collections.Counter()
    for hittime_ms, zipcode, *_ in report.events:
        for start in window_starts(hittime_ms):
            windows[(_iso(start), _iso(start + WINDOW_MS), zipcode)] += 1
    return {"zip_counts": dict(report.zip_counts), "zip_window_counts": dict(windows),
            "dead_letters": report.malformed}


def read_topic(bootstrap: str, topic: str) -> list:
    """Every message value of `topic`, partition by partition, up to its end offsets now."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reference-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        if metadata.error is not None:
            raise RuntimeError(f"{topic}: {metadata.error}")
        values = []
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, partition, low)])
            while True:
                message = consumer.poll(10)
                if message is None:
                    raise RuntimeError(f"{topic}[{partition}]: nothing read before offset {high}")
                if message.error() is None:
                    values.append(message.value())
                if message.offset() >= high - 1:
                    break
        return values
    finally:
        consumer.close()


def latest(values: list, window: bool) -> dict:
    out = {}
    for value in values:
        row = orjson.loads(value)
        key = (row["window_start"], row["window_end"], row["zipcode"]) if window else row["zipcode"]
        out[key] = row["count"]
    return out


def differences(want: dict, got: dict, limit: int = 5) -> list:
    """What differs between two {key: count} maps, a few examples each way; [] when equal."""
    if want == got:
        return []
    wrong = [(k, want.get(k), got.get(k)) for k in sorted(set(want) | set(got), key=str) if want.get(k) != got.get(k)]
    return [f"{len(wrong)} of {len(want)} keys differ (key, want, got), e.g. {wrong[:limit]}"]


def table_counts(jdbc_url: str, table: str) -> dict:
    """{zip: count} of a `(zip, count)` table, as a JDBC sink in complete mode leaves it."""
    import sqlalchemy as sa
    engine = sa.create_engine(jdbc_url)
    try:
        with engine.connect() as connection:
            return {k: int(v) for k, v in connection.execute(sa.text(f"SELECT zip, count FROM `{table}`")).all()}
    finally:
        engine.dispose()


def check(report, bootstrap: str, zip_topic: str, window_topic: str, dead_letter_topic: str) -> list:
    """Problems with a contender's output, one line each; [] when every table equals the reference."""
    want = expected(report)
    problems = [f"zip_counts: {d}" for d in differences(want["zip_counts"],
                                                        latest(read_topic(bootstrap, zip_topic), False))]
    problems += [f"zip_window_counts: {d}" for d in differences(want["zip_window_counts"],
                                                                latest(read_topic(bootstrap, window_topic), True))]
    dead = len(read_topic(bootstrap, dead_letter_topic))
    if dead != want["dead_letters"]:
        problems.append(f"dead letters: {dead}, want {want['dead_letters']}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("produce", "check"))
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--topic", default="", help="produce: the topic (default: a new bench-core-* name)")
    parser.add_argument("--report", required=True, help="the pickled produce report (written by produce)")
    parser.add_argument("--zip-topic")
    parser.add_argument("--window-topic")
    parser.add_argument("--dead-letter-topic")
    args = parser.parse_args(argv)
    if args.action == "produce":
        topic = args.topic or f"bench-core-{uuid.uuid4().hex[:8]}"
        report = produce(blog_core_spec(topic, args.count, args.bootstrap_servers))
        with open(args.report, "wb") as out:
            pickle.dump(report, out)
        print(topic)
        return 0
    with open(args.report, "rb") as source:
        report = pickle.load(source)
    problems = check(report, args.bootstrap_servers, args.zip_topic, args.window_topic, args.dead_letter_topic)
    print("\n".join(problems) or "equal to the reference")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
