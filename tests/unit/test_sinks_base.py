"""Tests for transforms/sinks/base.py (batching, dedupe by idempotency key, retry with backoff, metrics) and the
sink registry in transforms/sinks/__init__.py (what `--sink` builds, and what it refuses before the graph)."""
from __future__ import annotations

import datetime

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from transforms.rows import DeadLetter, Hit, HitBatch, Snapshot, WindowCount, ZipCount
from transforms.sinks.base import (
    RetryPolicy, Sink, SinkWriteFn, SinkWriter, call_with_retry, dedupe, idempotency_key, key_columns_of)

pytestmark = pytest.mark.timeout(120)

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 11, 23, 19, 2, tzinfo=UTC)


def _hit(partition: int, offset: int, zipcode: str = "94107") -> Hit:
    return Hit(T0, zipcode, "Comcast", None, None, None, None, None, None, "2026-11-23", "hits", partition, offset, 0)


class Transient(Exception):
    pass


class RecordingWriter(SinkWriter):
    TRANSIENT_ERRORS = (Transient,)

    def __init__(self, fail_times: int = 0, error: Exception = Transient("flaky")) -> None:
        self.calls = []
        self.fail_times = fail_times
        self.error = error

    def write_rows(self, rows, batch_id):
        if self.fail_times:
            self.fail_times -= 1
            raise self.error
        self.calls.append(("rows", batch_id, list(rows)))

    def write_snapshot(self, snapshot):
        self.calls.append(("snapshot", snapshot.batch_id, list(snapshot.rows)))

    def finish_bundle(self):
        self.calls.append(("finish",))


def _run_fn(fn: SinkWriteFn, elements) -> None:
    fn.setup()
    fn.start_bundle()
    for element in elements:
        fn.process(element)
    fn.finish_bundle()


NO_WAIT = RetryPolicy(max_attempts=3, initial_backoff=0.0)


def test_idempotency_keys():
    assert idempotency_key(_hit(2, 41)) == ("hits", 2, 41)
    assert idempotency_key(ZipCount("94107", 3)) == ("94107",)
    end = T0 + datetime.timedelta(minutes=10)
    assert idempotency_key(WindowCount(T0, end, "94107", 3)) == (T0, end, "94107")
    assert idempotency_key(DeadLetter("hits", 0, 7, 0, None, b"x", "bad", "parse")) == ("hits", 0, 7)
    assert key_columns_of(ZipCount("1", 1)) == ("zipcode",)
    assert key_columns_of(_hit(0, 0)) == ("topic", "partition", "offset")


def test_dedupe_keeps_one_row_per_key_with_the_highest_count():
    rows = [ZipCount("a", 1), ZipCount("b", 5), ZipCount("a", 3), ZipCount("b", 4), _hit(0, 1), _hit(0, 1)]
    assert dedupe(rows) == [ZipCount("a", 3), ZipCount("b", 5), _hit(0, 1)]


def test_rows_are_batched_at_max_batch_size_and_at_bundle_end():
    writer = RecordingWriter()
    _run_fn(SinkWriteFn(writer, "test", max_batch_size=2, retry=NO_WAIT),
            [ZipCount("a", 1), ZipCount("a", 2), ZipCount("b", 1), ZipCount("c", 1)])
    # a's two rows share a key, so the first batch fills only at b.
    assert writer.calls == [("rows", 0, [ZipCount("a", 2), ZipCount("b", 1)]), ("rows", 1, [ZipCount("c", 1)]),
                            ("finish",)]


def test_polls_of_hits_reach_the_writer_whole_and_each_record_once():
    writer = RecordingWriter()
    polls = [HitBatch((_hit(0, 0), _hit(0, 1))), HitBatch((_hit(1, 0),)), HitBatch((_hit(0, 2), _hit(0, 3))),
             HitBatch((_hit(0, 1), _hit(0, 2), _hit(0, 4))),  # a replay over pending offsets, and one new
             HitBatch((_hit(0, 5),)), HitBatch(())]
    _run_fn(SinkWriteFn(writer, "test", retry=NO_WAIT), polls)
    (_, _, rows), finish = writer.calls
    assert finish == ("finish",)
    assert [(row.partition, row.offset) for row in rows] == [(0, 0), (0, 1), (1, 0), (0, 2), (0, 3), (0, 4), (0, 5)]


def test_polls_of_hits_are_flushed_at_max_batch_size():
    writer = RecordingWriter()
    _run_fn(SinkWriteFn(writer, "test", max_batch_size=3, retry=NO_WAIT),
            [HitBatch((_hit(0, 0), _hit(0, 1))), HitBatch((_hit(0, 2), _hit(0, 3))), HitBatch((_hit(0, 4),))])
    assert [[row.offset for row in call[2]] for call in writer.calls[:-1]] == [[0, 1, 2, 3], [4]]


def test_a_snapshot_flushes_pending_rows_first_and_keeps_its_batch_id():
    writer = RecordingWriter()
    snapshot = Snapshot(7, (ZipCount("a", 9),))
    _run_fn(SinkWriteFn(writer, "test", retry=NO_WAIT), [ZipCount("z", 1), snapshot])
    assert writer.calls == [("rows", 0, [ZipCount("z", 1)]), ("snapshot", 7, [ZipCount("a", 9)]), ("finish",)]


def test_transient_errors_are_retried_then_succeed():
    writer = RecordingWriter(fail_times=2)
    _run_fn(SinkWriteFn(writer, "test", retry=NO_WAIT), [ZipCount("a", 1)])
    assert writer.calls == [("rows", 0, [ZipCount("a", 1)]), ("finish",)]


def test_transient_errors_that_outlast_the_policy_fail_the_bundle():
    writer = RecordingWriter(fail_times=5)
    with pytest.raises(Transient):
        _run_fn(SinkWriteFn(writer, "test", retry=NO_WAIT), [ZipCount("a", 1)])
    assert writer.fail_times == 2  # three attempts were made


def test_other_errors_are_not_retried():
    writer = RecordingWriter(fail_times=1, error=ValueError("bad row"))
    with pytest.raises(ValueError):
        _run_fn(SinkWriteFn(writer, "test", retry=NO_WAIT), [ZipCount("a", 1)])


def test_backoff_grows_exponentially_and_is_capped():
    policy = RetryPolicy(max_attempts=10, initial_backoff=0.5, max_backoff=4.0, multiplier=2.0, jitter=0.0)
    assert [policy.backoff(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    waits = []
    attempts = iter([Transient(), Transient(), None])

    def flaky():
        error = next(attempts)
        if error:
            raise error
        return "ok"

    assert call_with_retry(flaky, policy=policy, is_transient=lambda e: isinstance(e, Transient),
                           sleep=waits.append) == "ok"
    assert waits == [0.5, 1.0]


class _FlakySink(Sink):
    def make_writer(self):
        return RecordingWriter(fail_times=1)


def test_metrics_count_rows_errors_and_retries_per_sink_name():
    pipeline = beam.Pipeline(runner=FnApiRunner())
    _ = (pipeline | beam.Create([ZipCount("a", 1), ZipCount("b", 2), ZipCount("c", 3)])
         | _FlakySink("flaky.zip_test", retry=NO_WAIT))
    result = pipeline.run()
    result.wait_until_finish()

    def counter(name):
        found = result.metrics().query(MetricsFilter().with_namespace("hitstream").with_name(name))["counters"]
        return sum(c.committed for c in found)

    assert counter("flaky.zip_test.rows_written") == 3
    assert counter("flaky.zip_test.write_errors") >= 1
    assert counter("flaky.zip_test.retries") >= 1
