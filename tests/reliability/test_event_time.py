"""Event time as Spark means it (issue 17), streaming on Prism against the real broker: a hit is late only relative to
event times the job has read, never to the clock. All hits carry event times of one night in March 2026, far from
the clock, so any watermark that followed the clock would make every one of them late.

- a replay: the job starts on an empty topic, then 20,000 old hits arrive at 2,000/s: 0 late, windows and totals
  equal the reference;
- a partition that never receives a record: append windows still close as the other partitions' event time moves
  on;
- a producer that pauses for 30 s and resumes where its event time left off: 0 late;
- hits truly older than the watermark: late, counted as late, and kept out of the windows.

The reference is plain Python and DuckDB over the hits each test produced (tests/reliability/faults.py).
"""
from __future__ import annotations

import contextlib
import datetime
import random
import time

import apache_beam as beam
import orjson
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState
from confluent_kafka import Producer

import runners
from hitstream.job_metrics import fresh_metrics
from pipelines.blog import build_pipeline
from tests.reliability.faults import (count_diff, print_figures, table_rows, wait_until, window_reference,
                                      window_rows)

pytestmark = pytest.mark.timeout(600)

NIGHT_MS = 1773010800000  # 2026-03-08T23:00:00Z
DELAY_S = 600
ZIPCODES = [f"9{n:04d}" for n in range(8)]


def _send(bootstrap: str, topic: str, hits: list) -> None:
    """hits: (partition, hittime_ms, zipcode), sent in order to their partitions."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for partition, hittime_ms, zipcode in hits:
        value = orjson.dumps({"hittime": hittime_ms, "zipcode": zipcode, "isp": "Comcast"})
        producer.produce(topic, value=value, key=zipcode.encode(), partition=partition)
        producer.poll(0)
    assert producer.flush(30) == 0


def _hits(count: int, start_ms: int, step_ms: float, partitions, seed: int) -> list:
    """`count` hits in event-time order from start_ms, `step_ms` apart, spread over `partitions`."""
    rng = random.Random(seed)
    return [(rng.choice(partitions), int(start_ms + i * step_ms), rng.choice(ZIPCODES)) for i in range(count)]


def _late_records(result) -> int:
    counters = fresh_metrics(result).query(beam.metrics.MetricsFilter().with_name("late_records"))["counters"]
    return sum((c.committed if c.committed is not None else c.attempted) or 0 for c in counters)


@contextlib.contextmanager
def _streaming_job(topic: str, bootstrap: str, tmp_path, mode: str = "update", extra=()):
    """A streaming job on Prism in this process: zip_window_counts (`mode`) and zip_counts (update) to SQLite."""
    db_url = f"sqlite:///{tmp_path / 'sink.db'}"
    args = [f"--topic={topic}", f"--bootstrap-servers={bootstrap}", "--trigger=processing-time=1s",
            f"--group-id=g-{topic}", "--starting-offsets=earliest", f"--watermark-delay={DELAY_S}",
            f"--sink=zip_window_counts=jdbc:{mode}", "--sink=zip_counts=jdbc:update", f"--jdbc-url={db_url}", *extra]
    options = PipelineOptions(args + runners.pipeline_args("prism", streaming=True))
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, options)
    result = pipeline.run()
    try:
        wait_until(lambda: result.state == PipelineState.RUNNING, 60)
        time.sleep(3)  # every partition read once and caught up: the moment the old watermark followed the clock
        yield result, db_url
    finally:
        result.cancel()


def _reference(hits: list, late=frozenset()) -> tuple:
    """(windows, zip totals) of `hits`, windows without the hits at the indexes in `late`."""
    events = [(ms, zipcode) for i, (_, ms, zipcode) in enumerate(hits) if i not in late]
    totals = {}
    for _, _, zipcode in hits:
        totals[zipcode] = totals.get(zipcode, 0) + 1
    return window_reference(events), totals


def test_a_replay_of_old_hits_is_not_late(kafka_bootstrap, topic_factory, tmp_path, capsys):
    topic = topic_factory(partitions=4, prefix="replay")
    hits = _hits(20_000, NIGHT_MS, 360.0, range(4), seed=1)  # two hours of event time
    windows_ref, totals_ref = _reference(hits)
    with _streaming_job(topic, kafka_bootstrap, tmp_path) as (result, db_url):
        for second in range(10):  # about 2,000 hits/s
            _send(kafka_bootstrap, topic, hits[second * 2000:(second + 1) * 2000])
            time.sleep(0.9)
        wait_until(lambda: window_rows(db_url) == windows_ref and dict(table_rows(db_url, "zip_test")) == totals_ref, 90)
        windows, totals, late = window_rows(db_url), dict(table_rows(db_url, "zip_test")), _late_records(result)
    print_figures(capsys, "replay of old hits", 1, len(hits), *count_diff(windows, windows_ref), late=late,
                  windows=len(windows_ref))
    assert late == 0
    assert totals == totals_ref
    assert windows == windows_ref


def test_a_partition_without_records_does_not_hold_append_windows(kafka_bootstrap, topic_factory, tmp_path, capsys):
    topic = topic_factory(partitions=4, prefix="silent-partition")
    hits = _hits(6_000, NIGHT_MS, 1200.0, range(3), seed=2)  # partition 3 never gets one; two hours
    windows_ref, _ = _reference(hits)
    highest_ms = max(ms for _, ms, _ in hits)
    # Closed once the watermark (the highest event time minus the delay) has passed their end.
    closed = {key: n for key, n in windows_ref.items()
              if (key[0].replace(tzinfo=datetime.timezone.utc).timestamp() + 600 + DELAY_S) * 1000 <= highest_ms}
    with _streaming_job(topic, kafka_bootstrap, tmp_path, mode="append") as (result, db_url):
        _send(kafka_bootstrap, topic, hits)
        wait_until(lambda: {k: v for k, v in window_rows(db_url).items() if k in closed} == closed, 90)
        time.sleep(3)
        got = window_rows(db_url)
        late = _late_records(result)
    print_figures(capsys, "a partition without records", 1, len(hits), *count_diff(got, closed),
                  closed_windows=len(closed), emitted=len(got), late=late)
    assert len(closed) > 40
    assert got == closed, "append emits exactly the windows the others' event time closed, with final counts"
    assert late == 0


def test_a_producer_pause_does_not_make_later_hits_late(kafka_bootstrap, topic_factory, tmp_path, capsys):
    topic = topic_factory(partitions=4, prefix="pause")
    hits = _hits(8_000, NIGHT_MS, 900.0, range(4), seed=3)
    windows_ref, totals_ref = _reference(hits)
    with _streaming_job(topic, kafka_bootstrap, tmp_path) as (result, db_url):
        _send(kafka_bootstrap, topic, hits[:4000])
        time.sleep(30)  # every partition caught up and idle
        _send(kafka_bootstrap, topic, hits[4000:])  # where the event time left off
        wait_until(lambda: window_rows(db_url) == windows_ref and dict(table_rows(db_url, "zip_test")) == totals_ref, 90)
        windows, totals, late = window_rows(db_url), dict(table_rows(db_url, "zip_test")), _late_records(result)
    print_figures(capsys, "a 30 s producer pause", 1, len(hits), *count_diff(windows, windows_ref), late=late)
    assert late == 0
    assert totals == totals_ref
    assert windows == windows_ref


@pytest.mark.parametrize("mode", ["update", "complete"])
def test_hits_older_than_the_watermark_are_late_and_counted(kafka_bootstrap, topic_factory, tmp_path, capsys, mode):
    """Update mode drops them from the windows and counts them as late; complete mode keeps them in their windows,
    as Spark's complete mode, which ignores the watermark, does."""
    topic = topic_factory(partitions=4, prefix=f"truly-late-{mode}")
    on_time = _hits(4_000, NIGHT_MS, 1800.0, range(4), seed=4)  # two hours
    highest_ms = max(ms for _, ms, _ in on_time)
    # Older than every partition's watermark (its highest event time minus the delay, at least the job's minus the
    # delay once caught up): 20 to 30 minutes behind the end, on every partition.
    rng = random.Random(5)
    old = [(p, highest_ms - rng.randrange(20 * 60_000, 30 * 60_000), rng.choice(ZIPCODES)) for p in range(4)
           for _ in range(50)]
    hits = on_time + old
    late_indexes = frozenset(range(len(on_time), len(hits))) if mode == "update" else frozenset()
    windows_ref, totals_ref = _reference(hits, late_indexes)
    with _streaming_job(topic, kafka_bootstrap, tmp_path, mode=mode) as (result, db_url):
        _send(kafka_bootstrap, topic, on_time)
        wait_until(lambda: dict(table_rows(db_url, "zip_test")) == _reference(on_time)[1], 60)
        _send(kafka_bootstrap, topic, old)
        if mode == "update":
            wait_until(lambda: dict(table_rows(db_url, "zip_test")) == totals_ref and
                       _late_records(result) >= len(old), 60)
        else:
            wait_until(lambda: dict(table_rows(db_url, "zip_test")) == totals_ref and
                       window_rows(db_url) == windows_ref, 60)
        time.sleep(3)
        windows, totals, late = window_rows(db_url), dict(table_rows(db_url, "zip_test")), _late_records(result)
    print_figures(capsys, f"hits older than the watermark, {mode}", 1, len(hits), *count_diff(windows, windows_ref),
                  behind_watermark=len(old), late_metric=late)
    assert late == len(late_indexes)
    assert totals == totals_ref, "running totals keep the late hits"
    assert windows == windows_ref, "update: the on-time hits only; complete: every hit"
