"""The per-partition watermark: the max event time seen minus the watermark delay."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.io.watermark_estimators import WatermarkEstimator
from apache_beam.transforms.core import WatermarkEstimatorProvider
from apache_beam.utils.timestamp import Timestamp

from transforms.kafka_source.partitions import PartitionSpec


class PartitionWatermark(WatermarkEstimator):
    """Per-partition watermark: the max event time seen minus the watermark delay, never moving back.

    The watermark reported to the runner lags one process() call behind the records: a call's output is committed
    together with the watermark reported at its end, and a runner drops what is already behind it, so the report
    must not pass anything the same call emitted. `start_call` moves it up to what earlier calls saw; the late check
    inside a call uses the running value, so whether a record is late depends only on its partition's order.
    State is (reported_micros, max_event_micros), so a checkpointed residual keeps both.
    """

    def __init__(self, state):
        self._reported, self._max_event = state

    def observe_timestamp(self, timestamp):
        pass  # the DoFn reports event times itself, with observe_event

    def current_watermark(self) -> Timestamp:
        return Timestamp(micros=self._reported)

    def get_estimator_state(self):
        return self._reported, self._max_event

    def start_call(self, delay_micros: int):
        self._reported = max(self._reported, self._max_event - delay_micros)

    def observe_event(self, event_micros: int, delay_micros: int) -> bool:
        """Record one event time; True when it is behind the partition's watermark (a late record)."""
        return bool(self.observe_events([event_micros], delay_micros))

    def observe_events(self, event_micros: list, delay_micros: int) -> list:
        """Record event times in read order; the indexes of those behind the partition's watermark (late)."""
        reported, max_event = self._reported, self._max_event
        late = []
        for index, micros in enumerate(event_micros):
            if micros < reported or micros < max_event - delay_micros:
                late.append(index)
            if micros > max_event:
                max_event = micros
        self._max_event = max_event
        return late

    def advance_idle(self, now_micros: int, delay_micros: int):
        """A caught-up partition that emitted nothing in this call: no record older than now minus the delay
        should arrive, so it must not hold the other partitions back."""
        self._reported = max(self._reported, now_micros - delay_micros)


class PartitionWatermarkProvider(WatermarkEstimatorProvider):
    """Starts from the PartitionSpec's saved watermark state (MIN_TIMESTAMP when there is no checkpoint)."""

    def initial_estimator_state(self, spec: PartitionSpec, restriction):
        return spec.watermark_state

    def create_watermark_estimator(self, state) -> PartitionWatermark:
        return PartitionWatermark(state)

    def estimator_state_coder(self):
        return beam.coders.TupleCoder([beam.coders.VarIntCoder(), beam.coders.VarIntCoder()])
