"""The Quix Streams peer on the benchmark's blog core: hits from Kafka are parsed (dead letters to their topic as raw
bytes) and counted per zipcode and per zipcode over sliding windows, back to Kafka (the contract:
bench/peers/__init__.py).

* Bounded: the end offsets are taken before the app starts, a filter drops anything past them and a callback on each
  processed message stops the app once every partition has reached its end. `Application.run()`'s own stops do not
  fit: `count` counts outputs, not input offsets, and `timeout` waits for an idle gap, which adds its length to every
  run and reads on past the end of a topic that is still being written.
* Windows: Quix's hopping windows start on multiples of the step from the epoch, with no offset, so they are given
  the hittime 2 minutes early and their bounds are moved 2 minutes later: [hh:02, hh:12), [hh:07, hh:17), ...
  (Quix makes no window that starts before its epoch, so windows starting before 1970-01-01T00:02Z are missing.)
* Grace: 10 minutes, the blog's watermark delay; the input's hits are at most a minute late, so none is dropped.
* State is kept by message key, which the input sets to the zipcode, so no repartition (`group_by`) is needed; a hit
  keyed otherwise stops the run rather than being counted under the wrong key.
* `--form updates`: the running count and `.current()` windows, a message per update.
* `--form final`: `.final()` emits a window only once a later hit of its key passes its end plus the grace, so a
  bounded input's last windows would never come out. The same aggregations as `updates` run instead, the latest
  result per key is kept, and those are produced once the input is done: one message per key. This costs about the
  CPU of `.final()` (measured within 5%), which does the same state work per hit.
* `--streaming` (the latency measurement's form, `--form updates` only): no end offsets, the app reads on until
  SIGTERM or SIGINT (Quix's own handlers stop it) or the end of `--run-seconds` (`Application.stop()` from a
  timer); the windows and the dead letters are built only when their topics are given.
* Each run has its own consumer group and state directory and no changelog topics: a run is never resumed, so
  Quix's recovery changelogs (a topic per store, written at every checkpoint) would only cost writes and leave topics
  behind.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import sys
import tempfile
import threading
import uuid

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from quixstreams import Application, message_context
from quixstreams.dataframe.windows import Count

WINDOW_MS, SLIDE_MS, OFFSET_MS = 600_000, 300_000, 120_000
GRACE_MS = 600_000
UTC = datetime.timezone.utc
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = datetime.timedelta(milliseconds=1)
# An integer hittime must be a datetime (years 1..9999), as hitstream's parse requires.
MIN_MS = (datetime.datetime.min.replace(tzinfo=UTC) - EPOCH) // ONE_MS
MAX_MS = (datetime.datetime.max.replace(tzinfo=UTC) - EPOCH) // ONE_MS


def watermarks(bootstrap: str, topic: str) -> dict:
    """{partition: (low, high)} watermark offsets of every partition of `topic`, now."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"hitstream-quix-ends-{uuid.uuid4().hex}"})
    try:
        metadata = consumer.list_topics(topic, timeout=30).topics[topic]
        if metadata.error is not None:
            raise RuntimeError(f"{topic}: {metadata.error}")
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30) for p in metadata.partitions}
    finally:
        consumer.close()


def create_topics(bootstrap: str, names: list) -> None:
    """Create the output topics (1 partition, as Quix would) in one request; Quix itself creates them one at a time
    and sleeps a second for each."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1) for name in names])
    for future in futures.values():
        try:
            future.result(timeout=30)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


def hittime_ms(raw) -> int | None:
    """Epoch milliseconds of a `hittime`, or None when it breaks the data contract."""
    if type(raw) is int:  # not `isinstance`: a bool is an int, and `true` is not a time
        return raw if MIN_MS <= raw <= MAX_MS else None
    if type(raw) is not str:
        return None
    if raw[-1:] == "z":  # fromisoformat takes `Z` but not `z`
        raw = raw[:-1] + "Z"
    try:
        moment = datetime.datetime.fromisoformat(raw)
        if moment.tzinfo is not UTC:
            if moment.utcoffset() is None:  # a naive time: no zone to read it in
                return None
            moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return (moment - EPOCH) // ONE_MS


def parse(value, key, _timestamp, _headers):
    """(zipcode, hittime ms) of a hit; anything else stays the raw value, a dead letter."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return value
    if type(doc) is not dict:
        return value
    ms = hittime_ms(doc.get("hittime"))
    zipcode = doc.get("zipcode")
    if ms is None or type(zipcode) is not str or not zipcode:
        return value
    if key != zipcode.encode():
        raise ValueError(f"a hit of zipcode {zipcode!r} has the key {key!r}: state is kept by key, so the input "
                         "must be keyed by zipcode")
    return zipcode, ms


def is_hit(parsed) -> bool:
    return type(parsed) is tuple


def is_dead_letter(parsed) -> bool:
    return type(parsed) is not tuple


def count(hit, state) -> dict:
    total = state.get("count", 0) + 1
    state.set("count", total)
    return {"zipcode": hit[0], "count": total}


@functools.lru_cache(maxsize=4096)  # a run's windows share a few hundred bounds
def iso(ms: int) -> str:
    return (EPOCH + ms * ONE_MS).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def window_row(window, key, _timestamp, _headers) -> dict:
    return {"zipcode": key.decode(), "count": window["count"], "window_start": iso(window["start"] + OFFSET_MS),
            "window_end": iso(window["end"] + OFFSET_MS)}


def application(args, state_dir: str, **options) -> Application:
    """An app for one run (see the docstring): a consumer group of its own, from the earliest offset."""
    return Application(broker_address=args.bootstrap_servers, consumer_group=f"hitstream-quix-{uuid.uuid4().hex}",
                       auto_offset_reset="earliest", state_dir=state_dir, use_changelog_topics=False,
                       loglevel="WARNING", **options)


def output_topic(app: Application, name: str):
    return app.topic(name, key_serializer="bytes", value_serializer="json")


def blog_core(app: Application, args, keep=None) -> tuple:
    """The blog core on `app`, the input filtered by `keep` first: dead letters go to their topic (when given), and
    the zip_counts and zip_window_counts dataframes come back for the caller to send. Windows are built only with a
    window topic, as hitstream builds only the queries it has sinks for (None without)."""
    records = app.dataframe(app.topic(args.topic, key_deserializer="bytes", value_deserializer="bytes"))
    if keep is not None:
        records = records.filter(keep)
    parsed = records.apply(parse, metadata=True)
    if args.dead_letter_topic:
        parsed.filter(is_dead_letter).to_topic(
            app.topic(args.dead_letter_topic, key_serializer="bytes", value_serializer="bytes"))
    hits = parsed.filter(is_hit)
    counts = hits.apply(count, stateful=True)
    if not args.window_topic:
        return counts, None
    windows = hits.set_timestamp(lambda hit, _key, _timestamp, _headers: hit[1] - OFFSET_MS) \
        .hopping_window(WINDOW_MS, SLIDE_MS, grace_ms=GRACE_MS, name="zip_window_counts") \
        .agg(count=Count()).current().apply(window_row, metadata=True)
    return counts, windows


def stream(args) -> int:
    """The per-update form on a topic without end, until SIGTERM, SIGINT or --run-seconds."""
    create_topics(args.bootstrap_servers,
                  [name for name in (args.zip_topic, args.window_topic, args.dead_letter_topic) if name])
    with tempfile.TemporaryDirectory(prefix="hitstream-quix-") as state_dir:
        app = application(args, state_dir)
        counts, windows = blog_core(app, args)
        counts.to_topic(output_topic(app, args.zip_topic))
        if windows is not None:
            windows.to_topic(output_topic(app, args.window_topic))
        if args.run_seconds:
            timer = threading.Timer(args.run_seconds, app.stop)
            timer.daemon = True  # a signal may stop the app first: no wait for the timer at exit
            timer.start()
        app.run()  # installs Quix's own SIGTERM and SIGINT handlers, which stop it
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--zip-topic", required=True)
    parser.add_argument("--window-topic", help="required unless --streaming")
    parser.add_argument("--dead-letter-topic", help="required unless --streaming")
    parser.add_argument("--form", choices=("final", "updates"), required=True)
    parser.add_argument("--streaming", action="store_true",
                        help="read on past the topic's end until SIGTERM, SIGINT or --run-seconds (--form updates)")
    parser.add_argument("--run-seconds", type=float, default=0.0,
                        help="with --streaming, stop after this many seconds; 0 = until signalled (default: 0)")
    args = parser.parse_args(argv)
    if args.streaming:
        if args.form != "updates":
            parser.error("--streaming is the per-update form: use it with --form updates")
        return stream(args)
    if not (args.window_topic and args.dead_letter_topic):
        parser.error("a bounded run writes every output: --window-topic and --dead-letter-topic are required")

    create_topics(args.bootstrap_servers, [args.zip_topic, args.window_topic, args.dead_letter_topic])
    offsets = watermarks(args.bootstrap_servers, args.topic)
    ends = {p: high for p, (_low, high) in offsets.items()}
    last = {p: high - 1 for p, (low, high) in offsets.items() if high > low}  # the partitions left to read

    def within_bound(_value) -> bool:
        context = message_context()
        return context.offset < ends.get(context.partition, 0)  # a partition added since has nothing to read

    def processed(_topic, partition, offset) -> None:
        if partition in last and offset >= last[partition]:
            del last[partition]
            if not last:
                app.stop()

    with tempfile.TemporaryDirectory(prefix="hitstream-quix-") as state_dir:
        app = application(args, state_dir, on_message_processed=processed)
        zip_topic, window_topic = output_topic(app, args.zip_topic), output_topic(app, args.window_topic)
        counts, windows = blog_core(app, args, keep=within_bound)

        if args.form == "updates":
            counts.to_topic(zip_topic)
            windows.to_topic(window_topic)
        else:
            latest_counts, latest_windows = {}, {}
            counts.update(lambda row: latest_counts.__setitem__(row["zipcode"], row))
            windows.update(lambda row: latest_windows.__setitem__((row["zipcode"], row["window_start"]), row))

        if last:
            app.run()

        if args.form == "final":
            failures = []

            def delivered(error, _message) -> None:
                if error is not None:
                    failures.append(error)

            with app.get_producer() as producer:
                for topic, rows in ((zip_topic, latest_counts), (window_topic, latest_windows)):
                    for row in rows.values():
                        message = topic.serialize(key=row["zipcode"].encode(), value=row)
                        producer.produce(topic.name, message.value, message.key, on_delivery=delivered)
                unsent = producer.flush()
            if unsent or failures:
                print(f"quix_core: {unsent} message(s) unsent, {len(failures)} failed: {failures[:3]}",
                      file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
