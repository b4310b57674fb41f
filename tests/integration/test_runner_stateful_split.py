"""A key's state must be changed by one bundle at a time, also when the runner splits a slow bundle of a stateful
DoFn.

Prism splits a bundle that made no progress between two progress reports. Prism 2.77 as released then released every
key of the residual elements, also a key the primary was still processing, so the residuals of that key started in
a second bundle beside the primary. Both read the key's state as it was before either, and the bundle that committed
last overwrote the other's changes: a running total lost whole bundles' worth of counts. This is what lost whole panes
of update mode's totals in a fast catch-up (5587dea, reverted in 2f675f7). hitstream's stack builds Prism with the
fix (stack/prism-split-keeps-keys.patch).

One key, ELEMENTS elements in one bundle, each slow enough that Prism splits; the DoFn counts them in its state and
emits the count after each. The last count must be ELEMENTS. On Prism as released this test measured fewer.
"""
from __future__ import annotations

import time
import uuid

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

import runners
from tests.collect import CollectFn, collected

ELEMENTS = 40
SECONDS_PER_ELEMENT = 0.15


class CountSlowlyFn(beam.DoFn):
    """(key, n) -> the number of elements of `key` counted so far, in state read, changed and written per element."""
    COUNT = ReadModifyWriteStateSpec("count", VarIntCoder())

    def process(self, element, count=beam.DoFn.StateParam(COUNT)):
        time.sleep(SECONDS_PER_ELEMENT)  # no progress between two of Prism's reports: it splits the bundle
        total = (count.read() or 0) + 1
        count.write(total)
        yield total


@pytest.mark.timeout(180)
def test_a_split_bundle_keeps_its_key_until_the_primary_ends():
    name = uuid.uuid4().hex
    options = PipelineOptions(runners.pipeline_args("prism", streaming=False))
    with beam.Pipeline(options=options) as p:
        (p | beam.Create([("key", n) for n in range(ELEMENTS)])
         | "CountSlowly" >> beam.ParDo(CountSlowlyFn())
         | beam.ParDo(CollectFn(name)))
    counts = sorted(count for _, count in collected(name))
    # Each count once, 1 to ELEMENTS: no two bundles counted from the same state.
    assert counts == list(range(1, ELEMENTS + 1)), f"last count {max(counts)} of {ELEMENTS}: {counts}"
