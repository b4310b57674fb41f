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
