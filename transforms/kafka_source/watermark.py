"""The per-partition watermark: the max event time seen minus the watermark delay; and where a caught-up
partition's watermark goes, so that it holds no window back (apache/beam#20908)."""
from __future__ import annotations

import threading
from typing import Optional

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

    def max_event_micros(self) -> int:
        return self._max_event

    def advance_idle(self, to_micros: int):
        """A caught-up partition that emitted nothing in this call moves up to `to_micros` (see EventTimeHighs for
        what that is), so that it does not hold the other partitions back."""
        self._reported = max(self._reported, to_micros)


MIN_MICROS = -(2 ** 63)


class EventTimeHighs:
    """The highest event time each Kafka source (by `KafkaSourceConfig.source_id`) has read in this process.

    Spark's watermark is one for the query: the highest event time seen over every partition, minus the delay. A
    partition with data keeps its own (its highest minus the delay, never ahead of Spark's); a caught-up one
    follows this highest, minus the delay, rather than the clock (`--idle-watermark data`), so a replay of old
    hits is not late and a quiet partition holds no window back. Where every partition runs in one process (Prism,
    direct) that is Spark's global watermark. On a runner with several worker processes each sees only the
    partitions it reads: never ahead of the whole job, so no hit becomes late that Spark would count; a worker
    whose partitions are all quiet holds the job's windows until one of them gets data again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._highest = {}

    def observe(self, source_id: str, micros: int) -> None:
        with self._lock:
            if micros > self._highest.get(source_id, MIN_MICROS):
                self._highest[source_id] = micros

    def highest(self, source_id: str) -> Optional[int]:
        return self._highest.get(source_id)


EVENT_TIME_HIGHS = EventTimeHighs()


class PartitionWatermarkProvider(WatermarkEstimatorProvider):
    """Starts from the PartitionSpec's saved watermark state (MIN_TIMESTAMP when there is no checkpoint)."""

    def initial_estimator_state(self, spec: PartitionSpec, restriction):
        return spec.watermark_state

    def create_watermark_estimator(self, state) -> PartitionWatermark:
        return PartitionWatermark(state)

    def estimator_state_coder(self):
        return beam.coders.TupleCoder([beam.coders.VarIntCoder(), beam.coders.VarIntCoder()])
