"""The benchmark's blog-core workload in Bytewax 0.21: zip_counts and zip_window_counts from a bounded Kafka read.

The contract (flags, parse rules, output formats) is in `bench/peers/__init__.py`. Choices:

* Workers: 2 timely workers in one process. On the 2-core machine they beat 1 worker (200k events: final ~3.3 s vs
  ~4.5 s, updates ~9 s vs ~11-18 s: while one waits on Kafka the other runs Python), and 2 processes of 1 worker
  were slowest (~8 s final: hits cross between processes serialised).
* Lateness: the blog's 10-minute watermark (as the Spark peer), far above the input's 60 s of disorder. Bytewax's
  EventClock also moves each key's watermark on with the wall clock; a replay's event time has nothing to do with
  it, so the clock's "now" is frozen and the watermark is event time alone, however long the run takes. EOF closes
  every window still open.
* `--form final`: `count_final` and `count_window` (Bytewax's stock counts): one message per key, a
  window's when the watermark passes its end, the rest at EOF.
  `--form updates`: `stateful_map` for zip_counts, and the generic `window` operator with a logic that emits the
  window's running count on every hit (unordered, so each hit is counted as it arrives).
* `--streaming` (the latency measurement's form, `--form updates` only): the source tails the topic; SIGTERM,
  SIGINT and the end of `--run-seconds` raise KeyboardInterrupt, on which Bytewax stops its workers as on Ctrl-C.
  The windows and the dead letters are built only when their topics are given.
"""
import argparse
import datetime
import functools
import signal

import orjson
from bytewax import operators as op
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.operators import windowing as win
from bytewax.run import cli_main

UTC = datetime.timezone.utc
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)
WINDOW = datetime.timedelta(minutes=10)
SLIDE = datetime.timedelta(minutes=5)
ALIGN = datetime.datetime(2026, 1, 1, 0, 2, tzinfo=UTC)  # any hh:02 will do: 5 minutes divide the hour
WAIT = datetime.timedelta(minutes=10)
WORKERS = 2


def parse(message):
    """A hit as (zipcode, hittime), or the message itself when its value breaks the data contract."""
    try:
        doc = orjson.loads(message.value)
        raw, zipcode = doc["hittime"], doc["zipcode"]  # TypeError for a JSON value that is not an object
        if type(raw) is int:  # not bool, which is an int to Python but no time
            hittime = EPOCH + datetime.timedelta(milliseconds=raw)
        elif type(raw) is str:
            hittime = datetime.datetime.fromisoformat(raw)  # 3.11 reads `Z`; a naive time has no tzinfo
            if hittime.tzinfo is None:
                return message
        else:
            return message
    except (ValueError, TypeError, KeyError, OverflowError):
        return message
    if type(zipcode) is not str or not zipcode:
        return message
    return zipcode, hittime


@functools.lru_cache(maxsize=None)
def bounds(window_id: int) -> tuple:
    """ISO-8601 UTC start and end of the window Bytewax's SlidingWindower numbers `window_id`."""
    start = ALIGN + SLIDE * window_id
    return tuple(t.isoformat(timespec="milliseconds").replace("+00:00", "Z") for t in (start, start + WINDOW))


class RunningCount(win.WindowLogic):
    """One window's count, emitted on every hit: the per-update form of `count_window`."""

    def __init__(self, count):
        self.count = count or 0

    def on_value(self, value):
        self.count += 1
        return (self.count,)

    def on_merge(self, original):
        return ()  # sliding windows never merge

    def on_close(self):
        return ()  # its last count has gone out already

    def snapshot(self):
        return self.count


def zip_message(topic: str, zipcode: str, count: int) -> KafkaSinkMessage:
    return KafkaSinkMessage(zipcode.encode(), orjson.dumps({"zipcode": zipcode, "count": count}), topic=topic)


def window_message(topic: str, zipcode: str, window_id: int, count: int) -> KafkaSinkMessage:
    start, end = bounds(window_id)
    value = {"zipcode": zipcode, "count": count, "window_start": start, "window_end": end}
    return KafkaSinkMessage(zipcode.encode(), orjson.dumps(value), topic=topic)


def build(args) -> Dataflow:
    brokers = [args.bootstrap_servers]
    flow = Dataflow("blog_core")
    records = op.input("read", flow, KafkaSource(brokers, [args.topic], tail=args.streaming))
    parsed = op.branch("parse", op.map("parse_value", records, parse), lambda item: type(item) is tuple)
    hits = parsed.trues
    if args.form == "final":
        counts = op.count_final("zip_counts", hits, lambda hit: hit[0])
    else:
        keyed = op.key_on("by_zipcode", hits, lambda hit: hit[0])
        counts = op.stateful_map("zip_counts", keyed, lambda count, _: ((count or 0) + 1,) * 2)
    outputs = [op.map("zip_json", counts, lambda kv: zip_message(args.zip_topic, *kv))]

    # An operator runs whether or not its output is written: the windows are built only for a topic to take them.
    if args.window_topic:
        # A still "now" and no wake-ups: the watermark follows the hits' event time only (see the docstring).
        clock = win.EventClock(lambda hit: hit[1], wait_for_system_duration=WAIT, now_getter=lambda: EPOCH,
                               to_system_utc=lambda _: None)
        windower = win.SlidingWindower(length=WINDOW, offset=SLIDE, align_to=ALIGN)
        if args.form == "final":
            windows = win.count_window("zip_window_counts", hits, clock, windower, lambda hit: hit[0]).down
        else:
            windows = win.window("zip_window_counts", keyed, clock, windower, RunningCount, ordered=False).down
        outputs.append(op.map("window_json", windows, lambda kv: window_message(args.window_topic, kv[0], *kv[1])))
    if args.dead_letter_topic:
        outputs.append(op.map("dead_letters", parsed.falses, lambda message: KafkaSinkMessage(
            message.key, message.value, topic=args.dead_letter_topic)))
    # One producer for every topic: each message names its own.
    op.output("write", op.merge("all", *outputs), KafkaSink(brokers, topic=None))
    return flow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag in ("--bootstrap-servers", "--topic", "--zip-topic"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--window-topic", help="required unless --streaming")
    parser.add_argument("--dead-letter-topic", help="required unless --streaming")
    parser.add_argument("--form", choices=("final", "updates"), default="final")
    parser.add_argument("--streaming", action="store_true",
                        help="read on past the topic's end until SIGTERM, SIGINT or --run-seconds (--form updates)")
    parser.add_argument("--run-seconds", type=float, default=0.0,
                        help="with --streaming, stop after this many seconds; 0 = until signalled (default: 0)")
    args = parser.parse_args()
    if not args.streaming:
        if not (args.window_topic and args.dead_letter_topic):
            parser.error("a bounded run writes every output: --window-topic and --dead-letter-topic are required")
        cli_main(build(args), workers_per_process=WORKERS)
        return
    if args.form != "updates":
        parser.error("--streaming is the per-update form: use it with --form updates")
    # SIGTERM and the --run-seconds timer end the run as Ctrl-C does: Bytewax stops its workers on a
    # KeyboardInterrupt.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGALRM, signal.default_int_handler)
    signal.setitimer(signal.ITIMER_REAL, args.run_seconds)  # 0: no timer
    try:
        cli_main(build(args), workers_per_process=WORKERS)
    except KeyboardInterrupt:
        pass  # the stop asked for


if __name__ == "__main__":
    main()
