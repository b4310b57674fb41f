"""Tests for transforms/output_modes.py: config parsing and validation, the Beam mapping, and the two tails
(RunningTotals for update, CompleteTable for complete), pure and on the streaming DirectRunner with TestStream."""
from __future__ import annotations

import datetime

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import trigger as beam_trigger
from apache_beam.transforms.window import FixedWindows, GlobalWindows, SlidingWindows, TimestampedValue

from transforms.output_modes import (
    EARLY_TIMER_GRACE_SECONDS, AfterProcessingTimeMillis, CompleteTable, CompleteTableFn,
    OutputConfig, OutputMode, QueryKind, RowDeltasCombineFn, RunningTotals, RunningTotalsFn, Trigger,
    UnsupportedOperationError, parse_duration)
from transforms.rows import IspCount, Snapshot, WindowCount, ZipCount

pytestmark = pytest.mark.timeout(180)

UTC = datetime.timezone.utc


def streaming_options() -> PipelineOptions:
    # TestStream needs the streaming BundleBasedDirectRunner (BEAM-FACTS): pin it, never let DirectRunner switch.
    return PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])


class FakeState:
    """Stands in for a ReadModifyWriteState when a DoFn's process() is called directly."""

    def __init__(self, value=None) -> None:
        self.value = value

    def read(self):
        return self.value

    def write(self, value) -> None:
        self.value = value

    def clear(self) -> None:
        self.value = None


# --- parsing -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,seconds", [
    ("5s", 5.0), ("500ms", 0.5), ("10 seconds", 10.0), ("1 minute", 60.0), ("10m", 600.0), ("1.5h", 5400.0),
    ("2", 2.0), (3, 3.0), (0, 0.0), ("0s", 0.0), ("1 day", 86400.0),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "five", "5 parsecs", "-1s", "s5", True, float("nan")])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("text,interval", [
    ("processing-time=5s", 5), ("processingTime=10 seconds", 10), ("PROCESSING-TIME=1m", 60),
    ("processing_time=2", 2), ("available-now", None), ("availableNow", None), ("available_now", None),
])
def test_trigger_parse(text, interval):
    trigger = Trigger.parse(text)
    assert trigger.interval == interval
    assert trigger.is_available_now == (interval is None)
    assert Trigger.parse(str(trigger)) == trigger  # str() round-trips


@pytest.mark.parametrize("text", [
    "processing-time", "processing-time=", "processing-time=0s", "processing-time=fast", "available-now=5s",
    "once", "continuous=1s",
])
def test_trigger_parse_rejects(text):
    with pytest.raises(ValueError):
        Trigger.parse(text)


def test_trigger_keeps_fractions_of_a_second_in_the_proto():
    assert Trigger.parse("processing-time=500ms").interval == 0.5
    with pytest.raises(ValueError, match="at least 0.1s"):
        Trigger.processing_time(0.05)
    proto = AfterProcessingTimeMillis(0.25).to_runner_api(None)
    assert proto.after_processing_time.timestamp_transforms[0].delay.delay_millis == 250


def test_output_mode_parse():
    assert OutputMode.parse("Update") is OutputMode.UPDATE
    assert OutputMode.parse(OutputMode.COMPLETE) is OutputMode.COMPLETE
    with pytest.raises(ValueError, match="append, update, complete"):
        OutputMode.parse("overwrite")


def test_output_config_parses_strings_and_is_frozen():
    config = OutputConfig("complete", "processing-time=5s", "10 minutes")
    assert config == OutputConfig(OutputMode.COMPLETE, Trigger(5), 600.0)
    assert str(config) == "mode=complete trigger=processing-time=5s watermark_delay=600s"
    with pytest.raises(Exception):
        config.mode = OutputMode.UPDATE  # type: ignore[misc]
    assert OutputConfig() == OutputConfig("update", "available-now", None)


# --- validation (Spark's UnsupportedOperationChecker) ------------------------------------------------------------

def test_append_on_running_aggregation_is_refused_with_what_to_change():
    with pytest.raises(UnsupportedOperationError) as err:
        OutputConfig("append", "processing-time=5s", "10m").validate(QueryKind.AGGREGATION, "zip_counts")
    message = str(err.value)
    assert "Append output mode not supported when there are streaming aggregations" in message
    assert "without watermark" in message
    assert "'update' or 'complete'" in message
    assert isinstance(err.value, ValueError)


def test_append_on_windowed_aggregation_needs_a_watermark():
    with pytest.raises(UnsupportedOperationError, match="Set a watermark delay"):
        OutputConfig("append").validate(QueryKind.WINDOWED_AGGREGATION, "zip_window_counts")
    OutputConfig("append", watermark_delay=0).validate(QueryKind.WINDOWED_AGGREGATION, "zip_window_counts")


def test_complete_without_aggregation_is_refused():
    with pytest.raises(UnsupportedOperationError, match="no streaming aggregations"):
        OutputConfig("complete").validate(QueryKind.PROJECTION, "hits")
    OutputConfig("append").validate(QueryKind.PROJECTION, "hits")
    OutputConfig("update").validate(QueryKind.PROJECTION, "hits")


@pytest.mark.parametrize("mode", ["update", "complete"])
@pytest.mark.parametrize("kind", [QueryKind.AGGREGATION, QueryKind.WINDOWED_AGGREGATION])
def test_update_and_complete_allowed_on_aggregations(mode, kind):
    OutputConfig(mode, "processing-time=5s").validate(kind, "q")
    OutputConfig(mode, "available-now").validate(kind, "q")


# --- the mapping -------------------------------------------------------------------------------------------------

def _windowing(config: OutputConfig, windowfn=None):
    return config.aggregation_windowing(windowfn or GlobalWindows()).windowing


def test_processing_time_update_fires_early_and_discards():
    mode = "update"
    windowing = _windowing(OutputConfig(mode, "processing-time=5s"), SlidingWindows(600, 300, 120))
    # AfterProcessingTime has no __eq__; its repr names the delay.
    # A late trigger and a grace period only for Prism's sake (EARLY_TIMER_GRACE_SECONDS): no late record reaches it.
    assert repr(windowing.triggerfn) == repr(beam_trigger.AfterWatermark(
        early=beam_trigger.AfterProcessingTime(5), late=beam_trigger.AfterCount(1)))
    # DISCARDING: the runner holds only what came since the last firing (an accumulating pane keeps every element
    # until the window's last pane, which the global window never has); RunningTotals adds the panes up.
    assert windowing.accumulation_mode == beam_trigger.AccumulationMode.DISCARDING
    assert windowing.allowed_lateness == EARLY_TIMER_GRACE_SECONDS
    assert isinstance(windowing.windowfn, SlidingWindows)
    globally = _windowing(OutputConfig(mode, "processing-time=5s"), GlobalWindows())
    assert repr(globally.triggerfn) == repr(beam_trigger.AfterWatermark(early=beam_trigger.AfterProcessingTime(5)))
    assert globally.accumulation_mode == beam_trigger.AccumulationMode.DISCARDING
    assert globally.allowed_lateness == 0


@pytest.mark.parametrize("trigger", ["processing-time=5s", "available-now"])
def test_complete_discards_in_the_global_window(trigger):
    # Each pane carries what is new (the table adds them up); the global window is never behind the watermark, so
    # late records count, as in Spark's complete mode. Event-time windows are part of the key there.
    windowing = _windowing(OutputConfig("complete", trigger, 60), GlobalWindows())
    early = beam_trigger.AfterProcessingTime(5) if trigger != "available-now" else None
    assert repr(windowing.triggerfn) == repr(beam_trigger.AfterWatermark(early=early))
    assert windowing.accumulation_mode == beam_trigger.AccumulationMode.DISCARDING
    assert windowing.allowed_lateness == 0
    with pytest.raises(ValueError, match="the global window"):
        _windowing(OutputConfig("complete", trigger, 60), SlidingWindows(600, 300, 120))


@pytest.mark.parametrize("config", [
    OutputConfig("append", "processing-time=5s", 60), OutputConfig("append", "available-now", 60),
    OutputConfig("update", "available-now"),
])
def test_final_only_modes_fire_once_at_the_watermark(config):
    windowing = _windowing(config)
    assert windowing.triggerfn == beam_trigger.AfterWatermark()
    assert windowing.accumulation_mode == beam_trigger.AccumulationMode.DISCARDING
    assert windowing.allowed_lateness == 0


def test_only_early_firing_update_sums_panes():
    assert OutputConfig("update", "processing-time=5s").sums_panes
    assert not OutputConfig("update", "available-now").sums_panes
    assert not OutputConfig("complete", "processing-time=5s").sums_panes
    assert not OutputConfig("append", "processing-time=5s", 0).sums_panes


# --- RunningTotals -------------------------------------------------------------------------------------------------

def test_running_totals_add_panes_and_skip_an_empty_on_time_pane():
    fn, state = RunningTotalsFn(), FakeState()
    assert list(fn.process(("q", ("a", 1)), state)) == [("a", 1)]
    assert list(fn.process(("q", ("a", 2)), state)) == [("a", 3)]
    # Beam's on-time pane after early ones may bring nothing new: Spark's update mode would emit nothing.
    assert list(fn.process(("q", ("a", 0)), state)) == []
    # Keys share the cell and do not interfere.
    assert list(fn.process(("q", ("b", 4)), state)) == [("b", 4)]
    assert state.read() == {"a": 3, "b": 4}


def test_running_totals_do_not_depend_on_pane_order():
    # Prism delivered a window's on-time pane before its early panes: a sum comes out the same in any order.
    forward, backward = FakeState(), FakeState()
    panes = [2, 5, 1]
    for count in panes:
        list(RunningTotalsFn().process(("q", ("a", count)), forward))
    for count in reversed(panes):
        list(RunningTotalsFn().process(("q", ("a", count)), backward))
    assert forward.read() == backward.read() == {"a": 8}


def test_running_totals_on_test_stream_emit_each_changed_total_per_window():
    # Counts as a DISCARDING CombinePerKey emits them, two 10 s windows; a pane per key per processing-time firing.
    # Window [0, 10): a gets 1 then 2 more (totals 1, 3); b 1. Window [10, 20): a 5.
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([TimestampedValue(("a", 1), 1), TimestampedValue(("b", 1), 2)])
        .advance_processing_time(6)
        .add_elements([TimestampedValue(("a", 2), 3), TimestampedValue(("a", 5), 12)])
        .advance_watermark_to_infinity())
    with TestPipeline(options=streaming_options()) as p:
        totals = (p | stream | "Windows" >> beam.WindowInto(FixedWindows(10)) | RunningTotals()
                  | "Global" >> beam.WindowInto(GlobalWindows()))
        assert_that(totals, equal_to([("a", 1), ("b", 1), ("a", 3), ("a", 5)]))


# --- CompleteTable -----------------------------------------------------------------------------------------------

def test_row_deltas_combine_sums_counts_in_any_order():
    fn = RowDeltasCombineFn()
    rows = [ZipCount("a", 1), ZipCount("b", 1), ZipCount("a", 3), ZipCount("a", 2)]
    forward = fn.extract_output(
        fn.merge_accumulators([fn.add_input(fn.create_accumulator(), r) for r in rows]))
    backward = fn.create_accumulator()
    for row in reversed(rows):
        backward = fn.add_input(backward, row)
    assert forward == backward == {("a",): ZipCount("a", 6), ("b",): ZipCount("b", 1)}


def test_complete_table_fn_emits_whole_sorted_table_with_growing_batch_ids():
    fn, table, batch = CompleteTableFn(), FakeState(), FakeState()
    first = list(fn.process((None, {("b",): ZipCount("b", 1), ("a",): ZipCount("a", 1)}), table, batch))
    assert first == [Snapshot(0, (ZipCount("a", 1), ZipCount("b", 1)))]
    # Only "a" changed (3 new hits); "b" stops changing but stays in the table.
    second = list(fn.process((None, {("a",): ZipCount("a", 3)}), table, batch))
    assert second == [Snapshot(1, (ZipCount("a", 4), ZipCount("b", 1)))]
    # Empty panes (Beam's on-time pane after early ones) change nothing: no batch, as Spark runs none without new data.
    assert list(fn.process((None, {("a",): ZipCount("a", 0), ("b",): ZipCount("b", 0)}), table, batch)) == []
    third = list(fn.process((None, {("c",): ZipCount("c", 1)}), table, batch))
    assert third == [Snapshot(2, (ZipCount("a", 4), ZipCount("b", 1), ZipCount("c", 1)))]


def test_complete_table_sorts_null_keys_first_and_windows_by_start():
    fn = CompleteTableFn()
    rows = {(r.isp,): r for r in (IspCount("Comcast", 2), IspCount(None, 1), IspCount("AT&T", 1))}
    (snapshot,) = fn.process((None, rows), FakeState(), FakeState())
    assert snapshot.rows == (IspCount(None, 1), IspCount("AT&T", 1), IspCount("Comcast", 2))

    t = lambda minute: datetime.datetime(2026, 11, 23, 12, minute, tzinfo=UTC)  # noqa: E731
    windows = [WindowCount(t(7), t(17), "a", 1), WindowCount(t(2), t(12), "b", 1), WindowCount(t(2), t(12), "a", 1)]
    (snapshot,) = fn.process((None, {r[:-1]: r for r in windows}), FakeState(), FakeState())
    assert snapshot.rows == (windows[2], windows[1], windows[0])


def test_complete_table_on_test_stream_batches_per_interval_and_keeps_unchanged_keys():
    # Rows as a DISCARDING aggregation emits them (what is new per key). The batch trigger fires 5 s (processing
    # time) after the first row of a batch, so each advance of 6 s closes one batch; the end of input closes the last.
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([TimestampedValue(ZipCount("a", 1), 1), TimestampedValue(ZipCount("b", 1), 1)])
        .advance_processing_time(6)  # batch 0: a=1, b=1
        .add_elements([TimestampedValue(ZipCount("a", 1), 2)])
        .advance_processing_time(6)  # batch 1: a=2, b unchanged but present
        .add_elements([TimestampedValue(ZipCount("a", 0), 3)])  # an empty pane: no batch
        .advance_processing_time(6)
        .add_elements([TimestampedValue(ZipCount("c", 1), 4)])
        .advance_watermark_to_infinity())  # end of input: batch 2 with c
    with TestPipeline(options=streaming_options()) as p:
        snapshots = p | stream | CompleteTable("processing-time=5s")
        assert_that(snapshots, equal_to([
            Snapshot(0, (ZipCount("a", 1), ZipCount("b", 1))),
            Snapshot(1, (ZipCount("a", 2), ZipCount("b", 1))),
            Snapshot(2, (ZipCount("a", 2), ZipCount("b", 1), ZipCount("c", 1))),
        ]))


def test_complete_table_available_now_emits_one_snapshot_at_end_of_input():
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([TimestampedValue(ZipCount("a", 1), 1), TimestampedValue(ZipCount("b", 1), 1)])
        .advance_processing_time(60)  # no processing-time batches in available-now
        .add_elements([TimestampedValue(ZipCount("a", 1), 2)])
        .advance_processing_time(60)
        .advance_watermark_to_infinity())
    with TestPipeline(options=streaming_options()) as p:
        snapshots = p | stream | CompleteTable(Trigger.available_now())
        assert_that(snapshots, equal_to([Snapshot(0, (ZipCount("a", 2), ZipCount("b", 1)))]))
