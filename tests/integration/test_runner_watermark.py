"""The cause of the window loss (issue 13), on its own: a splittable DoFn stage's output watermark must be held by
every restriction still outstanding, not only by the one whose bundle finished last.

Two restrictions, like two Kafka partitions, each emit one record per process() call and checkpoint. Both walk the
same event times, 0, 10, 20 ... minutes, and report their own watermark after each record (the SDF contract: no
later output of theirs is older). "fast" runs ahead; "slow" sleeps in every call, so its records come long after
fast's watermark has passed them. A downstream per-window count must still see both records of every window: the
slow restriction's residual holds the watermark at its own progress.

Prism 2.77 as released took the stage's watermark from the latest bundle's residuals alone, so fast's estimate
became the stage's watermark and the GroupByKey dropped slow's records as late, silently: this test lost about
half of slow's windows there. hitstream's stack builds Prism with the fix (stack/prism-residual-watermarks.patch).

And the window accounting that makes such a loss visible: a source that reports a watermark ahead of its own records
makes the GroupByKey drop hits that were never flagged late, and `window_accounting` no longer balances.
"""
from __future__ import annotations

import time
import uuid

import apache_beam as beam
import pytest
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import FixedWindows, TimestampedValue
from apache_beam.utils.timestamp import Timestamp

import runners
from tests.collect import CollectFn, collected
from tests.unit.test_queries import at, hit, wc
from transforms.output_modes import OutputConfig
from transforms.times import to_micros
from transforms.queries import ZipWindowCounts, window_accounting

STEPS = 24
STEP_SECONDS = 600
SLOW_SLEEP_SECONDS = {"fast": 0.0, "slow": 0.25}


class _Steps(RestrictionProvider):
    def initial_restriction(self, name):
        return OffsetRange(0, STEPS)

    def create_tracker(self, restriction):
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, name, restriction):
        return restriction.size()


class WalkEventTimeFn(beam.DoFn):
    """name -> (name, step) at event time step * 10 minutes, one step per call, with its watermark after it."""

    @beam.DoFn.unbounded_per_element()
    def process(self, name: str, tracker=beam.DoFn.RestrictionParam(_Steps()),
                watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())):
        step = tracker.current_restriction().start
        if not tracker.try_claim(step):
            return
        time.sleep(SLOW_SLEEP_SECONDS[name])
        event_time = Timestamp(step * STEP_SECONDS)
        yield TimestampedValue((name, step), event_time)
        watermark.set_watermark(event_time)
        if step + 1 < STEPS:
            tracker.defer_remainder()


@pytest.mark.parametrize("runner", ["prism", "direct"])
@pytest.mark.timeout(180)
def test_each_restriction_holds_the_stage_watermark(runner):
    name = uuid.uuid4().hex
    options = PipelineOptions(runners.pipeline_args(runner, streaming=False))
    with beam.Pipeline(options=options) as p:
        (p | beam.Create(["fast", "slow"])
         | "Walk" >> beam.ParDo(WalkEventTimeFn())
         | beam.WindowInto(FixedWindows(STEP_SECONDS))
         | beam.Map(lambda record: (record[0], 1))
         | beam.CombinePerKey(sum)
         | beam.ParDo(CollectFn(name)))
    per_restriction = {}
    for _, (walker, count) in collected(name):
        per_restriction[walker] = per_restriction.get(walker, 0) + count
    # Every step of both walks reached its window: none was dropped as late.
    assert per_restriction == {"fast": STEPS, "slow": STEPS}, per_restriction


class AheadOfItsRecordsFn(beam.DoFn):
    """A broken source: hits at 12:03 and 12:04, a watermark of 12:30, then a hit at 12:05 it never flags late."""
    CALLS = ((("12:03", "12:04"), "12:30"), (("12:05",), None))

    @beam.DoFn.unbounded_per_element()
    def process(self, _, tracker=beam.DoFn.RestrictionParam(_Steps()),
                watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())):
        step = tracker.current_restriction().start
        if step >= len(self.CALLS) or not tracker.try_claim(step):
            return
        clocks, reported = self.CALLS[step]
        for clock in clocks:
            yield TimestampedValue(hit("a", clock), Timestamp(micros=to_micros(at(clock))))
        if reported:
            watermark.set_watermark(Timestamp(micros=to_micros(at(reported))))
            tracker.defer_remainder()
        else:
            tracker.try_claim(STEPS - 1)


@pytest.mark.timeout(180)
def test_window_accounting_shows_hits_the_runner_dropped_behind_the_watermark():
    name = uuid.uuid4().hex
    options = PipelineOptions(runners.pipeline_args("prism", streaming=False))
    p = beam.Pipeline(options=options)
    (p | beam.Create(["source"])
     | "Read" >> beam.ParDo(AheadOfItsRecordsFn())
     | ZipWindowCounts(output=OutputConfig("append", "available-now", watermark_delay=600))
     | beam.ParDo(CollectFn(name)))
    result = p.run()
    result.wait_until_finish()
    # The 12:05 hit belonged to both windows; the runner dropped it from both, with no late count.
    assert sorted(row for _, row in collected(name)) == [wc("11:57", "12:07", "a", 2), wc("12:02", "12:12", "a", 2)]
    accounting = window_accounting(result.metrics())
    assert (accounting.hits_in, accounting.late, accounting.slots_in, accounting.slots_final) == (3, 0, 6, 4)
    assert not accounting.balanced and accounting.hits_in_final_windows < accounting.hits_into_windows
