"""Progress from the metrics the job service reports, for jobs whose workers run in other processes.

`transforms/telemetry.py` reports every step twice: as Beam metrics, and into REGISTRY, the memory of the process
that runs the workers. When that process is not the launcher (`--runner prism-cluster`; Flink, Spark or Dataflow
workers), the launcher sees only the metrics. `JobMetrics` stands in for REGISTRY in `StreamingQuery`: each
`drain()` asks the job service (GetJobMetrics, which Prism, Flink and Dataflow answer) and turns the counters into
what happened since the previous drain, the gauges into the partitions' offsets, log ends and watermarks. So the
records carry input and processed rates, lag per partition, the watermark, late rows and dead letters.

What the metrics cannot give: a runner counts a bundle's metrics when the bundle ends, so a record shows what
finished bundles did; and the event-time min/max/avg of each interval (only the watermark is known).
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Dict, List, Tuple

import grpc
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.portability.api import beam_job_api_pb2
from apache_beam.runners.portability.portable_runner import PortableMetrics

from transforms import telemetry
from transforms.telemetry import IntervalCounts, PartitionState, SinkCounts

_LOGGER = logging.getLogger(__name__)


def fresh_metrics(result):
    """The job's metrics as the job service reports them now. A portable result (Prism, Flink, Spark) keeps the
    first answer of `result.metrics()` for good (Beam 2.77's PipelineResult.metrics), so this asks again."""
    service = getattr(result, "_job_service", None)
    if service is None:  # Dataflow and the in-process runners query afresh themselves
        return result.metrics()
    return PortableMetrics(service.GetJobMetrics(beam_job_api_pb2.GetJobMetricsRequest(job_id=result._job_id)))


def _read(result) -> Tuple[Dict[str, int], Dict[str, int], int]:
    """hitstream's counters (summed over steps) and gauges by name, and the read calls (the distribution's
    count)."""
    metrics = fresh_metrics(result).query(MetricsFilter().with_namespace(telemetry.NAMESPACE))
    counters: Dict[str, int] = {}
    for counter in metrics["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + (value or 0)
    gauges: Dict[str, int] = {}
    for gauge in metrics["gauges"]:
        value = gauge.committed if gauge.committed is not None else gauge.attempted
        if value is not None and value.value is not None:
            gauges[gauge.key.metric.name] = max(gauges.get(gauge.key.metric.name, value.value), value.value)
    calls = sum((d.committed or d.attempted).count for d in metrics["distributions"]
                if d.key.metric.name == "kafka_records_per_read" and (d.committed or d.attempted))
    return counters, gauges, calls


class JobMetrics:
    """A ProgressRegistry's reading side (`drain`, `results`) over the job service's metrics. The metrics carry no
    rows: `results()` comes from `live_results` (a `hitstream.kafka_results.KafkaResults`), or is empty."""

    def __init__(self, live_results=None) -> None:
        self.active = False  # the registry's flag; nothing here reports into it
        self._lock = threading.Lock()
        self._result = None
        self._live_results = live_results
        self.reset()

    def bind(self, result) -> None:
        self._result = result

    def reset(self) -> None:
        with self._lock:
            self._previous: Tuple[Dict[str, int], Dict[str, int], int] = ({}, {}, 0)
            self._interval_start: Dict[Tuple[str, int], int] = {}

    def drain(self) -> Dict[str, Any]:
        """What finished bundles did since the last drain, in REGISTRY.drain()'s shape."""
        counters, gauges, calls = self._previous
        if self._result is not None:
            try:
                counters, gauges, calls = _read(self._result)
            except grpc.RpcError as error:  # the job ended and its job service is gone: nothing new to report
                _LOGGER.debug("progress: the job service did not answer: %s", error.code())
        with self._lock:
            before, _, calls_before = self._previous
            self._previous = (counters, gauges, calls)
            delta = {name: value - before.get(name, 0) for name, value in counters.items()}
            partitions = self._partitions(gauges, delta)
        interval = IntervalCounts(
            input_rows=delta.get(telemetry.RECORDS_PARSED, 0), late_rows=delta.get(telemetry.LATE_RECORDS, 0),
            dead_letters=delta.get(telemetry.DEAD_LETTERS, 0), read_calls=calls - calls_before,
            read_seconds=sum(p.seconds for p in partitions.values()))
        totals = {"input": counters.get(telemetry.RECORDS_PARSED, 0), "late": counters.get(telemetry.LATE_RECORDS, 0),
                  "dead": counters.get(telemetry.DEAD_LETTERS, 0),
                  "window_hits": counters.get(telemetry.WINDOW_HITS_IN, 0),
                  "window_slots": counters.get(telemetry.WINDOW_SLOTS_IN, 0),
                  "final_window_slots": counters.get(telemetry.WINDOW_SLOTS_FINAL, 0)}
        return {"interval": interval, "partitions": partitions, "sinks": self._sinks(counters, delta),
                "totals": totals}

    def _partitions(self, gauges: Dict[str, int], delta: Dict[str, int]) -> Dict[Tuple[str, int], PartitionState]:
        partitions = {}
        for name, next_offset in gauges.items():
            parts = name.split("/")
            if len(parts) != 4 or parts[0] != "kafka" or parts[3] != "next_offset":
                continue
            topic, partition = parts[1], int(parts[2])
            records, micros, log_end, watermark = (telemetry.partition_metric(topic, partition, what) for what in
                                                   ("records", "read_micros", "log_end", "watermark_micros"))
            start = self._interval_start.get((topic, partition), next_offset - delta.get(records, 0))
            self._interval_start[(topic, partition)] = next_offset
            partitions[(topic, partition)] = PartitionState(
                next_offset=next_offset, interval_start=start, latest=gauges.get(log_end),
                watermark=gauges.get(watermark), rows=delta.get(records, 0), seconds=delta.get(micros, 0) / 1e6)
        return partitions

    @staticmethod
    def _sinks(counters: Dict[str, int], delta: Dict[str, int]) -> Dict[str, SinkCounts]:
        sinks = {}
        for name in counters:
            sink, _, what = name.rpartition(".")
            if what != telemetry.ROWS_WRITTEN:
                continue
            errors, micros = f"{sink}.{telemetry.WRITE_ERRORS}", f"{sink}.{telemetry.WRITE_MICROS}"
            sinks[sink] = SinkCounts(rows=delta.get(name, 0), errors=delta.get(errors, 0),
                                     seconds=delta.get(micros, 0) / 1e6, total_rows=counters[name],
                                     total_errors=counters.get(errors, 0))
        return sinks

    def results(self) -> Dict[str, List[tuple]]:
        return self._live_results.results() if self._live_results is not None else {}

    def close(self) -> None:
        if self._live_results is not None:
            self._live_results.close()
