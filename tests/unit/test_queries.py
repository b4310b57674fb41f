"""Tests for transforms/queries.py on the streaming DirectRunner with TestStream, plus one run on Prism.

All times are on 2026-11-23, UTC. The blog's windows are SlidingWindows(size=10 min, period=5 min, offset=2 min):
[N * 5 min + 2 min, + 10 min), i.e. ..., [11:57, 12:07), [12:02, 12:12), [12:07, 12:17), [12:12, 12:22), ...
Every instant is in exactly two windows; the expected windows are derived beside the data.

Processing-time triggers are 5 s; `advance_processing_time(6)` passes one interval. Complete mode needs two
intervals per snapshot (one for the aggregation's early pane, one for the table's batch).
"""
from __future__ import annotations

import datetime
from typing import Dict, List, Optional

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to, equal_to_per_window
from apache_beam.transforms.window import IntervalWindow, TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from stack.prism import prism_path
from transforms.output_modes import OutputConfig, UnsupportedOperationError
from transforms.times import to_micros
from transforms.queries import IspCounts, ZipCounts, ZipWindowCounts
from transforms.rows import Hit, IspCount, Snapshot, WindowCount, ZipCount

pytestmark = pytest.mark.timeout(300)

UTC = datetime.timezone.utc
PRISM = prism_path()  # built by scripts/setup (stack.prism)


def at(clock: str) -> datetime.datetime:
    """'12:02' or '12:06:59.999' on the test day, UTC."""
    return datetime.datetime.fromisoformat(f"2026-11-23T{clock}").replace(tzinfo=UTC)


def ts(clock: str) -> Timestamp:
    return Timestamp(micros=to_micros(at(clock)))


def hit(zipcode: str, clock: str, isp: Optional[str] = None, late: bool = False) -> Hit:
    when = at(clock)
    return Hit(when, zipcode, isp, None, None, None, None, None, None, when.date().isoformat(),
               "hits", 0, 0, 0, late)


def stamped(*hits: Hit) -> List[TimestampedValue]:
    return [TimestampedValue(h, Timestamp(micros=to_micros(h.hittime))) for h in hits]


def window(start: str, end: str) -> IntervalWindow:
    return IntervalWindow(ts(start), ts(end))


def wc(start: str, end: str, zipcode: str, count: int) -> WindowCount:
    return WindowCount(at(start), at(end), zipcode, count)


def streaming_pipeline() -> TestPipeline:
    # TestStream needs the streaming BundleBasedDirectRunner (BEAM-FACTS): pin it, never let DirectRunner switch.
    return TestPipeline(options=PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"]))


def run_and_count_late(p: beam.Pipeline) -> int:
    result = p.run()
    result.wait_until_finish()
    counters = result.metrics().query(
        MetricsFilter().with_namespace("hitstream").with_name("late_records"))["counters"]
    return sum(c.committed for c in counters)


def per_window(expected: Dict[IntervalWindow, list]):
    return equal_to_per_window(expected)


# --- running totals: zip_counts, isp_counts ----------------------------------------------------------------------

def test_zip_counts_available_now_emits_each_key_once_at_end_of_input_and_keeps_late_hits():
    stream = (
        TestStream()
        .advance_watermark_to(ts("12:00"))
        .add_elements(stamped(hit("94107", "12:05"), hit("10001", "12:01")))
        .advance_processing_time(60)  # available-now never fires on processing time
        .add_elements(stamped(hit("94107", "12:03")))  # out of order: before the 12:05 hit, still counted
        .add_elements(stamped(hit("94107", "11:40", late=True)))  # late for windows, not for a running total
        .advance_processing_time(60)
        .advance_watermark_to_infinity())
    p = streaming_pipeline()
    counts = p | stream | ZipCounts(OutputConfig("update", "available-now"))
    assert_that(counts, equal_to([ZipCount("94107", 3), ZipCount("10001", 1)]))
    assert run_and_count_late(p) == 0


def test_zip_counts_update_emits_only_changed_keys_with_new_totals():
    stream = (
        TestStream()
        .advance_watermark_to(ts("12:00"))
        .add_elements(stamped(hit("a", "12:01"), hit("b", "12:01")))
        .advance_processing_time(6)  # trigger 1: a=1, b=1
        .add_elements(stamped(hit("a", "12:03"), hit("a", "11:50", late=True)))  # late hits count in totals
        .advance_processing_time(6)  # trigger 2: a=3; b stopped changing: absent
        .add_elements(stamped(hit("a", "12:02")))  # out of order
        .advance_processing_time(6)  # trigger 3: a=4
        .advance_processing_time(6)  # nothing new: nothing emitted
        .advance_watermark_to_infinity())  # Beam's on-time pane repeats a=4, b=1: filtered
    with streaming_pipeline() as p:
        counts = p | stream | ZipCounts(OutputConfig("update", "processing-time=5s"))
        assert_that(counts, equal_to([ZipCount("a", 1), ZipCount("b", 1), ZipCount("a", 3), ZipCount("a", 4)]))


def test_zip_counts_complete_snapshots_hold_every_key_each_trigger():
    stream = (
        TestStream()
        .advance_watermark_to(ts("12:00"))
        .add_elements(stamped(hit("a", "12:01"), hit("b", "12:01")))
        .advance_processing_time(6)
        .advance_processing_time(6)  # snapshot 0: a=1, b=1
        .add_elements(stamped(hit("a", "12:03"), hit("a", "11:50", late=True)))
        .advance_processing_time(6)
        .advance_processing_time(6)  # snapshot 1: a=3 and b=1, which stopped changing but is still in the table
        .add_elements(stamped(hit("c", "12:00:30")))
        .advance_watermark_to_infinity())  # end of input: snapshot 2 with c; nothing after it
    with streaming_pipeline() as p:
        snapshots = p | stream | ZipCounts(OutputConfig("complete", "processing-time=5s"))
        assert_that(snapshots, equal_to([
            Snapshot(0, (ZipCount("a", 1), ZipCount("b", 1))),
            Snapshot(1, (ZipCount("a", 3), ZipCount("b", 1))),
            Snapshot(2, (ZipCount("a", 3), ZipCount("b", 1), ZipCount("c", 1))),
        ]))


def test_zip_counts_complete_available_now_is_one_final_snapshot():
    stream = (
        TestStream()
        .advance_watermark_to(ts("12:00"))
        .add_elements(stamped(hit("a", "12:01"), hit("b", "12:01")))
        .advance_processing_time(60)
        .advance_processing_time(60)
        .add_elements(stamped(hit("a", "12:03")))
        .advance_watermark_to_infinity())
    with streaming_pipeline() as p:
        snapshots = p | stream | ZipCounts(OutputConfig("complete", "available-now"))
        assert_that(snapshots, equal_to([Snapshot(0, (ZipCount("a", 2), ZipCount("b", 1)))]))


def test_isp_counts_group_null_isp_in_update_and_complete():
    hits = stamped(hit("1", "12:01", isp="Comcast"), hit("2", "12:02", isp=None), hit("3", "12:03", isp="AT&T"),
                   hit("4", "12:04", isp="Comcast"))
    stream = TestStream().advance_watermark_to(ts("12:00")).add_elements(hits).advance_watermark_to_infinity()
    with streaming_pipeline() as p:
        source = p | stream
        updates = source | "Update" >> IspCounts(OutputConfig("update", "available-now"))
        snapshots = source | "Complete" >> IspCounts(OutputConfig("complete", "available-now"))
        assert_that(updates, equal_to([IspCount("Comcast", 2), IspCount(None, 1), IspCount("AT&T", 1)]),
                    label="CheckUpdate")
        # Sorted ascending with nulls first, as Spark's orderBy.
        assert_that(snapshots, equal_to([Snapshot(0, (IspCount(None, 1), IspCount("AT&T", 1),
                                                      IspCount("Comcast", 2)))]), label="CheckComplete")


# --- sliding windows: zip_window_counts --------------------------------------------------------------------------

def append_stream() -> TestStream:
    return (
        TestStream()
        .advance_watermark_to(ts("12:00"))
        .add_elements(stamped(
            hit("a", "12:02:00.000"),  # [11:57, 12:07) and [12:02, 12:12): the first instant of [12:02, ...)
            hit("b", "12:06:59.999"),  # [11:57, 12:07) and [12:02, 12:12): the last instant of [11:57, 12:07)
            hit("a", "12:04:30"),  # [11:57, 12:07) and [12:02, 12:12)
            hit("c", "11:59", late=True)))  # flagged late at the source: dropped, counted, in no window
        .advance_processing_time(6)  # append has no early firings
        .advance_watermark_to(ts("12:08"))  # closes [11:57, 12:07): a=2, b=1
        .add_elements(stamped(
            hit("a", "12:05", late=True),  # behind the watermark: dropped, counted; [11:57, 12:07) stays a=2
            hit("a", "12:12:00.000"),  # [12:07, 12:17) and [12:12, 12:22): 12:12 is the end of [12:02, 12:12)
            hit("b", "12:09")))  # out of order, still ahead of the watermark: [12:02, 12:12) and [12:07, 12:17)
        .advance_processing_time(6)
        .advance_watermark_to_infinity())  # closes the rest


APPEND_EXPECTED = {
    window("11:57", "12:07"): [wc("11:57", "12:07", "a", 2), wc("11:57", "12:07", "b", 1)],
    window("12:02", "12:12"): [wc("12:02", "12:12", "a", 2), wc("12:02", "12:12", "b", 2)],
    window("12:07", "12:17"): [wc("12:07", "12:17", "a", 1), wc("12:07", "12:17", "b", 1)],
    window("12:12", "12:22"): [wc("12:12", "12:22", "a", 1)],
}


def test_zip_window_counts_append_emits_each_window_once_when_the_watermark_passes_its_end():
    with streaming_pipeline() as p:
        rows = p | append_stream() | ZipWindowCounts(
            output=OutputConfig("append", "processing-time=5s", watermark_delay=0))
        assert_that(rows, per_window(APPEND_EXPECTED), use_global_window=False)
    # The late_records count of this stream is asserted on Prism below: the streaming BundleBasedDirectRunner
    # (Beam 2.77) keeps only the first bundle's user metrics per step and worker thread, because
    # StateSampler.scoped_state caches the first bundle's MetricsContainer. Tests on it put late hits in the
    # first bundle.


def test_zip_window_counts_update_fires_early_and_skips_unchanged_windows():
    stream = (
        TestStream()
        .advance_watermark_to(ts("12:00"))
        .add_elements(stamped(
            hit("a", "12:03"),  # [11:57, 12:07) and [12:02, 12:12)
            hit("a", "12:01", late=True)))  # flagged late at the source: dropped before windowing, counted
        .advance_processing_time(6)  # early: a=1 in both
        .add_elements(stamped(hit("a", "12:04"), hit("b", "12:05")))  # same two windows
        .advance_processing_time(6)  # early: a=2, b=1 in both
        .add_elements(stamped(hit("b", "12:08")))  # [12:02, 12:12) and [12:07, 12:17); a stops changing
        .advance_processing_time(6)  # early: b=2 in [12:02, 12:12), b=1 in [12:07, 12:17); no a
        .advance_watermark_to_infinity())  # on-time panes repeat the last totals: filtered
    p = streaming_pipeline()
    rows = p | stream | ZipWindowCounts(output=OutputConfig("update", "processing-time=5s", "0s"))
    assert_that(rows, per_window({
        window("11:57", "12:07"): [wc("11:57", "12:07", "a", 1), wc("11:57", "12:07", "a", 2),
                                   wc("11:57", "12:07", "b", 1)],
        window("12:02", "12:12"): [wc("12:02", "12:12", "a", 1), wc("12:02", "12:12", "a", 2),
                                   wc("12:02", "12:12", "b", 1), wc("12:02", "12:12", "b", 2)],
        window("12:07", "12:17"): [wc("12:07", "12:17", "b", 1)],
    }), use_global_window=False)
    assert run_and_count_late(p) == 1


def test_zip_window_counts_complete_keeps_closed_windows_and_late_hits_in_every_snapshot():
    # Spark's complete mode ignores the watermark: a late hit still counts in its windows, closed ones included.
    stream = (
        TestStream()
        .advance_watermark_to(ts("12:00"))
        .add_elements(stamped(hit("a", "12:03")))  # [11:57, 12:07) and [12:02, 12:12)
        .advance_processing_time(6)
        .advance_processing_time(6)  # snapshot 0
        .advance_watermark_to(ts("12:08"))  # closes [11:57, 12:07): its a=1 is unchanged, no new snapshot
        .add_elements(stamped(hit("b", "12:10"),  # [12:02, 12:12) and [12:07, 12:17)
                              hit("a", "12:04", late=True)))  # behind the watermark, into a closed window
        .advance_processing_time(6)
        .advance_processing_time(6)  # snapshot 1: the closed window is still in the table, with the late hit
        .advance_watermark_to_infinity())
    p = streaming_pipeline()
    snapshots = p | stream | ZipWindowCounts(output=OutputConfig("complete", "processing-time=5s", "0s"))
    first = (wc("11:57", "12:07", "a", 1), wc("12:02", "12:12", "a", 1))
    last = (wc("11:57", "12:07", "a", 2), wc("12:02", "12:12", "a", 2), wc("12:02", "12:12", "b", 1),
            wc("12:07", "12:17", "b", 1))

    def first_and_last(snapshots):
        # The late pane fires at once (AfterCount(1)), so it may make a batch of its own before the early panes.
        ordered = sorted(snapshots)
        assert ordered[0] == Snapshot(0, first) and ordered[-1].rows == last, ordered
        assert [s.batch_id for s in ordered] == list(range(len(ordered)))

    assert_that(snapshots, first_and_last)
    assert run_and_count_late(p) == 0


def test_zip_window_counts_windows_are_configurable():
    # size 60 s, period 30 s, offset 10 s: windows [N*30+10, +60). 12:00:45 is in [12:00:10, 12:01:10) and
    # [12:00:40, 12:01:40).
    stream = (TestStream().advance_watermark_to(ts("12:00"))
              .add_elements(stamped(hit("a", "12:00:45"))).advance_watermark_to_infinity())
    with streaming_pipeline() as p:
        rows = p | stream | ZipWindowCounts("1 minute", 30, "10s", OutputConfig("update", "available-now"))
        assert_that(rows, equal_to([wc("12:00:10", "12:01:10", "a", 1), wc("12:00:40", "12:01:40", "a", 1)]))


def test_drop_late_fn_drops_late_and_unwindowable_hits():
    from transforms.queries import DropLateFn
    fn = DropLateFn(window=(600, 300, 120))
    on_time = hit("a", "12:00")
    assert list(fn.process(on_time)) == [on_time]
    assert list(fn.process(hit("a", "12:00", late=True))) == []
    # Valid hittimes whose 10-minute windows would end after 9999-12-31 or start before 0001-01-01.
    edge = on_time._replace(hittime=datetime.datetime(9999, 12, 31, 23, 55, tzinfo=UTC))
    assert list(fn.process(edge)) == []
    edge = on_time._replace(hittime=datetime.datetime(1, 1, 1, 0, 5, tzinfo=UTC))
    assert list(fn.process(edge)) == []
    fine = on_time._replace(hittime=datetime.datetime(9999, 12, 31, 23, 45, tzinfo=UTC))
    assert list(fn.process(fine)) == [fine]


def test_pre_aggregation_adds_up_a_bundles_polls_into_one_partial_per_key_and_bucket():
    from transforms.queries import PreAggregateFn
    from transforms.rows import HitBatch
    polls = [(HitBatch((hit("a", "12:03"), hit("a", "12:05"), hit("b", "12:08"))), ts("12:03")),
             (HitBatch((hit("a", "12:02"), hit("a", "12:04", late=True), hit("b", "12:09"))), ts("12:02"))]
    windowed, total = PreAggregateFn("zipcode", (600, 300, 120)), PreAggregateFn("zipcode")
    for fn in (windowed, total):
        fn.start_bundle()
        for batch, stamp in polls:
            assert fn.process(batch, timestamp=stamp) is None  # nothing before the bundle ends
    # Buckets start 2 minutes past, every 5: 12:02-12:07 holds a's three on-time hits (the late one is dropped),
    # 12:07-12:12 b's two. Each partial is stamped with its earliest hit.
    assert sorted((v.value, v.timestamp) for v in windowed.finish_bundle()) == [
        (("a", 3), ts("12:02")), (("b", 2), ts("12:08"))]
    # The running totals keep late hits, and take the bundle's earliest poll's timestamp.
    assert sorted((v.value, v.timestamp) for v in total.finish_bundle()) == [
        (("a", 4), ts("12:02")), (("b", 2), ts("12:02"))]


# --- validation before the graph is built ------------------------------------------------------------------------

@pytest.mark.parametrize("query", [ZipCounts, IspCounts])
def test_append_on_running_totals_is_refused_before_the_graph_is_built(query):
    with pytest.raises(UnsupportedOperationError, match="Append output mode not supported") as err:
        query(OutputConfig("append", "processing-time=5s", watermark_delay="10m"))
    assert "'update' or 'complete'" in str(err.value)


def test_append_on_windows_without_watermark_is_refused():
    with pytest.raises(UnsupportedOperationError, match="watermark delay"):
        ZipWindowCounts(output=OutputConfig("append", "available-now"))


@pytest.mark.parametrize("size,period,offset", [(0, 300, 120), (600, 0, 0), (600, 900, 0), (600, 300, 300),
                                                 (600, 300, "soon")])
def test_bad_window_config_is_refused(size, period, offset):
    with pytest.raises(ValueError):
        ZipWindowCounts(size, period, offset)


def test_step_labels_are_stable():
    # Dataflow --update and Flink savepoints match steps by these names.
    p = beam.Pipeline()
    hits = p | beam.Create([hit("a", "12:01")])
    _ = hits | "ZipWindowCounts" >> ZipWindowCounts(output=OutputConfig("update", "processing-time=5s", 0))
    _ = hits | "ZipCounts" >> ZipCounts(OutputConfig("complete", "processing-time=5s"))
    labels = set()

    class Visitor(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node):
            labels.add(node.full_label)

        def visit_transform(self, node):
            labels.add(node.full_label)

    p.visit(Visitor())
    assert {
        "ZipWindowCounts/DropLate", "ZipWindowCounts/KeyByZipcode", "ZipWindowCounts/Window",
        "ZipWindowCounts/Count", "ZipWindowCounts/RunningTotals", "ZipWindowCounts/ToRows",
        "ZipCounts/KeyByZipcode", "ZipCounts/Window", "ZipCounts/Count", "ZipCounts/ToRows",
        "ZipCounts/CompleteTable", "ZipCounts/CompleteTable/BatchWindow",
        "ZipCounts/CompleteTable/RowDeltasPerBatch", "ZipCounts/CompleteTable/Table",
    } <= labels


# --- the same results on Prism -----------------------------------------------------------------------------------

def prism_options(*extra: str) -> PipelineOptions:
    return PipelineOptions([
        "--runner=PrismRunner", f"--prism_location={PRISM}", "--environment_type=LOOPBACK", *extra])


def test_zip_window_counts_append_on_prism_test_stream_counts_late_hits():
    # The append stream above, on Prism: same windows, and both late hits counted (one behind the watermark).
    p = beam.Pipeline(options=prism_options("--streaming"))
    rows = p | append_stream() | ZipWindowCounts(output=OutputConfig("append", "processing-time=5s", 0))
    assert_that(rows, per_window(APPEND_EXPECTED), use_global_window=False)
    assert run_and_count_late(p) == 2


def test_queries_available_now_on_prism():
    hits = [hit("a", "12:02:00.000"),  # [11:57, 12:07) and [12:02, 12:12)
            hit("b", "12:06:59.999"),  # [11:57, 12:07) and [12:02, 12:12)
            hit("a", "12:12:00.000"),  # [12:07, 12:17) and [12:12, 12:22)
            hit("a", "12:04", late=True)]  # in zip_counts, and in complete mode's windows (Spark's complete mode)
    p = beam.Pipeline(options=prism_options())
    source = (p | beam.Create(hits)
              | "Stamp" >> beam.Map(lambda h: TimestampedValue(h, Timestamp(micros=to_micros(h.hittime)))))
    zip_updates = source | "ZipUpdate" >> ZipCounts(OutputConfig("update", "available-now"))
    zip_snapshots = source | "ZipComplete" >> ZipCounts(OutputConfig("complete", "available-now"))
    appended = source | "WindowAppend" >> ZipWindowCounts(output=OutputConfig("append", "available-now", 0))
    window_snapshots = source | "WindowComplete" >> ZipWindowCounts(output=OutputConfig("complete", "available-now", 0))
    assert_that(zip_updates, equal_to([ZipCount("a", 3), ZipCount("b", 1)]), label="CheckZipUpdate")
    assert_that(zip_snapshots, equal_to([Snapshot(0, (ZipCount("a", 3), ZipCount("b", 1)))]),
                label="CheckZipComplete")
    expected_windows = [wc("11:57", "12:07", "a", 1), wc("11:57", "12:07", "b", 1), wc("12:02", "12:12", "a", 1),
                        wc("12:02", "12:12", "b", 1), wc("12:07", "12:17", "a", 1), wc("12:12", "12:22", "a", 1)]
    assert_that(appended, equal_to(expected_windows), label="CheckWindowAppend")
    with_late = [w._replace(count=2) if w.zipcode == "a" and w.window_start.minute in (57, 2) else w
                 for w in expected_windows]
    assert_that(window_snapshots, equal_to([Snapshot(0, tuple(with_late))]), label="CheckWindowComplete")
    result = p.run()
    result.wait_until_finish()
    late = result.metrics().query(MetricsFilter().with_name("late_records"))["counters"]
    # Append drops (and counts) the one late hit; complete keeps it.
    assert sum(c.committed for c in late) == 1


def test_pre_aggregated_fast_path_counts_equal_per_hit_counts():
    """HitBatch input (the pipeline's fast path) gives the same windows and counts as one element per hit."""
    from transforms.rows import HitBatch
    hits = [hit("94107", "12:01:59.999"), hit("94107", "12:02"), hit("94107", "12:06:59.999"),
            hit("10001", "12:07"), hit("10001", "12:12"), hit("94107", "12:03", late=True)]
    # Windows of each on-time hit (size 10, period 5, offset 2 min):
    #   12:01:59.999 -> [11:52, 12:02), [11:57, 12:07); 12:02 and 12:06:59.999 -> [11:57, 12:07), [12:02, 12:12)
    #   12:07 -> [12:02, 12:12), [12:07, 12:17); 12:12 -> [12:07, 12:17), [12:12, 12:22)
    expected = [wc("11:52", "12:02", "94107", 1), wc("11:57", "12:07", "94107", 3), wc("12:02", "12:12", "94107", 2),
                wc("12:02", "12:12", "10001", 1), wc("12:07", "12:17", "10001", 2), wc("12:12", "12:22", "10001", 1)]
    output = OutputConfig("append", "available-now", "10 minutes")
    with TestPipeline(runner="FnApiRunner") as p:
        batches = p | beam.Create([HitBatch(tuple(hits[:3])), HitBatch(tuple(hits[3:]))])
        assert_that(batches | ZipWindowCounts(output=output, batched=True), equal_to(expected))
        assert_that(batches | "Zip" >> ZipCounts(OutputConfig("update", "available-now"), batched=True),
                    equal_to([ZipCount("94107", 4), ZipCount("10001", 2)]), label="ZipTotals")
        # Complete mode keeps the late 12:03 hit in [11:57, 12:07) and [12:02, 12:12).
        complete = batches | "Complete" >> ZipWindowCounts(output=OutputConfig("complete", "available-now"),
                                                           batched=True)
        with_late = [w._replace(count=w.count + 1) if w.zipcode == "94107" and w.window_start.minute in (57, 2)
                     else w for w in expected]
        assert_that(complete, equal_to([Snapshot(0, tuple(sorted(with_late)))]), label="CompleteKeepsLate")



def test_window_accounting_balances_when_every_hit_reaches_its_windows():
    from transforms.queries import window_accounting
    # Windows [11:57, 12:07) and [12:02, 12:12) hold the hits at 12:03 and 12:04 (2 hits x 2 windows = 4
    # memberships); the late hit is counted as late. (A hit the runner drops: tests/integration/test_runner_watermark.)
    stream = (TestStream()
              .advance_watermark_to(ts("12:00"))
              .add_elements(stamped(hit("a", "12:03"), hit("a", "12:04"), hit("a", "11:40", late=True)))
              .advance_watermark_to_infinity())
    p = streaming_pipeline()
    counts = p | stream | ZipWindowCounts(output=OutputConfig("append", "available-now", watermark_delay=600))
    assert_that(counts, equal_to([wc("11:57", "12:07", "a", 2), wc("12:02", "12:12", "a", 2)]))
    result = p.run()
    result.wait_until_finish()
    accounting = window_accounting(result.metrics())
    assert (accounting.hits_in, accounting.late, accounting.slots_in, accounting.slots_final) == (3, 1, 4, 4)
    assert accounting.balanced and accounting.hits_into_windows == accounting.hits_in_final_windows == 2
