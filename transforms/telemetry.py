"""The transforms' telemetry: what the Kafka read, the parse, the windowed queries and the sinks report as they run.

Each of those DoFns holds one of the step classes at the bottom (`ReadTelemetry`, `ParseTelemetry`,
`WindowTelemetry`, `SinkTelemetry`) and calls it once per batch. A call reports on two channels:
- the step's Beam metrics (namespace `hitstream`), the first: every runner aggregates them, and
  `PipelineResult.metrics()` returns them;
- `REGISTRY`, a process-global, thread-safe set of counters and current result rows, so that the driver's
  `hitstream/progress.py` (StreamingQueryProgress records, the dashboard) can read a live view every second. It sees
  the workers that run in the driver's process (LOOPBACK: Prism, direct), and nothing of workers elsewhere. A call
  skips it unless a query is active (`REGISTRY.active`).
The driver reads this module; nothing here knows the driver.
"""
from __future__ import annotations

import dataclasses
import logging
import operator
import os
import threading
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from apache_beam.metrics import Metrics

import transforms
from transforms.catalog import AGGREGATION_OF_ROW
from transforms.rows import Snapshot, result_key

_LOGGER = logging.getLogger(__name__)

NAMESPACE = "hitstream"  # of every Beam metric hitstream reports
_MIN_MICROS = -(2 ** 62)  # anything below is Beam's MIN_TIMESTAMP: no watermark yet
_AVG_SAMPLE = 64
_HITTIME = operator.attrgetter("hittime")



@dataclasses.dataclass
class PartitionState:
    next_offset: int  # the offset after the last record read
    interval_start: int  # next_offset when the current interval began (or the first read's first offset)
    latest: Optional[int] = None  # the log end offset (high watermark) last seen
    watermark: Optional[int] = None  # micros; None until the partition reports one
    rows: int = 0  # this interval
    seconds: float = 0.0  # this interval, in read calls


@dataclasses.dataclass
class SinkCounts:
    rows: int = 0
    errors: int = 0
    seconds: float = 0.0
    total_rows: int = 0
    total_errors: int = 0


@dataclasses.dataclass
class IntervalCounts:
    """What the hooks counted since the last snapshot."""
    input_rows: int = 0
    late_rows: int = 0
    dead_letters: int = 0
    read_calls: int = 0
    read_seconds: float = 0.0
    max_read_seconds: float = 0.0
    event_min: Optional[float] = None  # micros
    event_max: Optional[float] = None
    event_sum: float = 0.0
    event_count: int = 0


class ProgressRegistry:
    """Counters the DoFns update (any thread) and the publisher snapshots. `active` is False until a query starts:
    the hooks check it first and return, so a job without progress reporting pays one attribute read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = False
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._interval = IntervalCounts()
            self._partitions: Dict[Tuple[str, int], PartitionState] = {}
            self._sinks: Dict[str, SinkCounts] = {}
            self._results: Dict[str, Dict[tuple, tuple]] = {}
            self._totals = {"input": 0, "late": 0, "dead": 0, "window_hits": 0, "window_slots": 0,
                            "final_window_slots": 0}

    # hooks ------------------------------------------------------------------------------------------------------

    def record_read(self, topic: str, partition: int, first_offset: int, next_offset: int, count: int,
                    latest: Optional[int], watermark_state: Tuple[int, int], delay_micros: int,
                    seconds: float) -> None:
        """One read call of a partition: offsets [first_offset, next_offset) gave `count` records; `latest` is the
        log end offset; `watermark_state` is the partition watermark's (reported, max event) micros, so the
        watermark shown is the one the next call reports: max(reported, max event - delay)."""
        reported, max_event = watermark_state
        watermark_micros = max(reported, max_event - delay_micros)
        with self._lock:
            state = self._partitions.get((topic, partition))
            if state is None:
                state = self._partitions[(topic, partition)] = PartitionState(next_offset, first_offset)
            state.next_offset = max(state.next_offset, next_offset)
            if latest is not None and latest >= 0:
                state.latest = latest
            if watermark_micros > _MIN_MICROS:
                state.watermark = max(state.watermark or watermark_micros, watermark_micros)
            state.rows += count
            state.seconds += seconds
            interval = self._interval
            interval.read_calls += 1
            interval.read_seconds += seconds
            interval.max_read_seconds = max(interval.max_read_seconds, seconds)

    def record_parsed(self, records: int, hits: Iterable[Any]) -> None:
        """`records` input rows parsed, of which `hits` (Hit rows) were valid; the rest were dead letters."""
        hits = hits if isinstance(hits, (list, tuple)) else list(hits)
        event_min = event_max = None
        event_sum = 0.0
        if hits:
            # min and max compare datetimes in C; the average comes from at most _AVG_SAMPLE evenly spaced hits per
            # batch (converting every hittime would cost the fast path a few percent).
            times = list(map(_HITTIME, hits))
            event_min, event_max = min(times).timestamp() * 1e6, max(times).timestamp() * 1e6
            sample = times[::max(1, len(times) // _AVG_SAMPLE)]
            event_sum = sum(t.timestamp() for t in sample) * 1e6 / len(sample) * len(hits)
        with self._lock:
            interval = self._interval
            interval.input_rows += records
            interval.dead_letters += records - len(hits)
            self._totals["input"] += records
            self._totals["dead"] += records - len(hits)
            if hits:
                interval.event_min = event_min if interval.event_min is None else min(interval.event_min, event_min)
                interval.event_max = event_max if interval.event_max is None else max(interval.event_max, event_max)
                interval.event_sum += event_sum
                interval.event_count += len(hits)

    def record_late(self, count: int = 1) -> None:
        with self._lock:
            self._interval.late_rows += count
            self._totals["late"] += count

    def record_windows(self, hits: int, slots: int) -> None:
        """A windowed query got `hits` valid hits; the on-time ones belong to `slots` windows in all."""
        with self._lock:
            self._totals["window_hits"] += hits
            self._totals["window_slots"] += slots

    def record_final_windows(self, slots: int) -> None:
        """Final (on-time) window panes counted `slots` (hit, window) memberships."""
        with self._lock:
            self._totals["final_window_slots"] += slots

    def record_sink(self, name: str, rows: Any = (), errors: int = 0, seconds: float = 0.0) -> None:
        """A sink wrote `rows` (a list of rows or a complete-mode Snapshot), failed `errors` times, spent `seconds`."""
        snapshot = isinstance(rows, Snapshot)
        written = rows.rows if snapshot else rows
        with self._lock:
            sink = self._sinks.setdefault(name, SinkCounts())
            sink.rows += len(written)
            sink.total_rows += len(written)
            sink.errors += errors
            sink.total_errors += errors
            sink.seconds += seconds
            if written:
                self._keep_result(written, snapshot)

    def _keep_result(self, rows, replace: bool) -> None:
        query = AGGREGATION_OF_ROW.get(type(rows[0]))
        if query is None:
            return
        table = {} if replace else self._results.setdefault(query, {})
        for row in rows:
            table[result_key(row)] = row
        self._results[query] = table

    # reads ------------------------------------------------------------------------------------------------------

    def drain(self) -> Dict[str, Any]:
        """Everything counted since the last drain, plus the standing per-partition state; resets the interval."""
        with self._lock:
            interval, self._interval = self._interval, IntervalCounts()
            partitions = {}
            for tp, state in self._partitions.items():
                partitions[tp] = dataclasses.replace(state)
                state.interval_start, state.rows, state.seconds = state.next_offset, 0, 0.0
            sinks = {}
            for name, sink in self._sinks.items():
                sinks[name] = dataclasses.replace(sink)
                sink.rows, sink.errors, sink.seconds = 0, 0, 0.0
            return {"interval": interval, "partitions": partitions, "sinks": sinks, "totals": dict(self._totals)}

    def results(self) -> Dict[str, List[tuple]]:
        """The current rows of each aggregation query, as the sinks last wrote them."""
        with self._lock:
            return {query: list(table.values()) for query, table in self._results.items()}


REGISTRY = ProgressRegistry()


def worker_identity() -> Dict[str, Any]:
    """The process that runs this code and what it imports hitstream from: on a cluster-shaped runner, a worker
    other than the launcher, with the staged package (`runners/prism_cluster.py`)."""
    return {"pid": os.getpid(), "transforms": os.path.dirname(transforms.__file__)}


_IDENTIFIED = []  # this process logged its identity (once)


def _log_identity_once() -> None:
    if not _IDENTIFIED:
        _IDENTIFIED.append(True)
        _LOGGER.info("hitstream worker %(pid)d: transforms from %(transforms)s", worker_identity())


# The steps' telemetry: each DoFn holds one and calls it once per batch. Beam metrics first, then the registry.

class ReadTelemetry:
    """The Kafka read's: records read, per read call, late at the source, offsets lost to retention; and per
    partition (`partition_metric`) its records, read time, next offset, log end and watermark, so a launcher whose
    workers run elsewhere can build its progress from the job's metrics (`hitstream/job_metrics.py`)."""

    def __init__(self) -> None:
        _log_identity_once()
        self._records = Metrics.counter(NAMESPACE, "kafka_records_read")
        # One read call is one "trigger" of the read: the distribution's max shows that maxOffsetsPerTrigger holds.
        self._per_read = Metrics.distribution(NAMESPACE, "kafka_records_per_read")
        self._late = Metrics.counter(NAMESPACE, "kafka_records_late")
        self._lost = Metrics.counter(NAMESPACE, "kafka_offsets_lost")
        self._partitions: Dict[Tuple[str, int], tuple] = {}

    def read(self, topic: str, partition: int, first_offset: int, next_offset: int, count: int,
             latest: Optional[int], watermark_state: Tuple[int, int], delay_micros: int, seconds: float) -> None:
        self._records.inc(count)
        self._per_read.update(count)
        records, micros, offset, log_end, watermark = self._partition_metrics(topic, partition)
        records.inc(count)
        micros.inc(int(seconds * 1e6))
        offset.set(next_offset)
        if latest is not None and latest >= 0:
            log_end.set(latest)
        reported, max_event = watermark_state
        if max(reported, max_event - delay_micros) > _MIN_MICROS:  # what the next call reports (record_read)
            watermark.set(max(reported, max_event - delay_micros))
        if REGISTRY.active:
            REGISTRY.record_read(topic, partition, first_offset, next_offset, count, latest, watermark_state,
                                 delay_micros, seconds)

    def _partition_metrics(self, topic: str, partition: int) -> tuple:
        metrics = self._partitions.get((topic, partition))
        if metrics is None:
            metrics = self._partitions[(topic, partition)] = (
                Metrics.counter(NAMESPACE, partition_metric(topic, partition, "records")),
                Metrics.counter(NAMESPACE, partition_metric(topic, partition, "read_micros")),
                Metrics.gauge(NAMESPACE, partition_metric(topic, partition, "next_offset")),
                Metrics.gauge(NAMESPACE, partition_metric(topic, partition, "log_end")),
                Metrics.gauge(NAMESPACE, partition_metric(topic, partition, "watermark_micros")))
        return metrics

    def late(self, count: int) -> None:
        """Flagged late at the source; the windowed queries count what they drop (WindowTelemetry.late)."""
        if count:
            self._late.inc(count)

    def lost(self, offsets: int) -> None:
        self._lost.inc(offsets)


def partition_metric(topic: str, partition: int, what: str) -> str:
    """The name of one partition's read metric: `kafka/<topic>/<partition>/<what>` (no topic name holds a '/')."""
    return f"kafka/{topic}/{partition}/{what}"


RECORDS_PARSED = "records_parsed"  # every source's input rows
DEAD_LETTERS = "dead_letters"


class ParseTelemetry:
    """The parse's: records in, dead letters out."""

    def __init__(self) -> None:
        self._records = Metrics.counter(NAMESPACE, RECORDS_PARSED)
        self._dead_letters = Metrics.counter(NAMESPACE, DEAD_LETTERS)

    def parsed(self, records: int, hits: Sequence[Any]) -> None:
        """`records` parsed, of which `hits` (Hit rows) were valid; the rest were dead letters."""
        self._records.inc(records)
        if records > len(hits):
            self._dead_letters.inc(records - len(hits))
        if REGISTRY.active:
            REGISTRY.record_parsed(records, hits)


# The window accounting's metrics, per windowed query step (see transforms.queries.window_accounting).
WINDOW_HITS_IN = "window_hits_in"  # valid hits that reached the query
LATE_RECORDS = "late_records"  # of those, dropped as late
UNWINDOWABLE_RECORDS = "unwindowable_records"  # dropped: their windows fall outside years 1..9999
WINDOW_SLOTS_IN = "window_slots_in"  # (hit, window) memberships of the on-time ones
WINDOW_SLOTS_FINAL = "window_slots_final"  # the sum of the windows' final (on-time pane) counts


class WindowTelemetry:
    """A windowed query's: where its hits went (the window accounting)."""

    def __init__(self) -> None:
        self._hits_in = Metrics.counter(NAMESPACE, WINDOW_HITS_IN)
        self._late = Metrics.counter(NAMESPACE, LATE_RECORDS)
        self._unwindowable = Metrics.counter(NAMESPACE, UNWINDOWABLE_RECORDS)
        self._slots_in = Metrics.counter(NAMESPACE, WINDOW_SLOTS_IN)
        self._slots_final = Metrics.counter(NAMESPACE, WINDOW_SLOTS_FINAL)

    def late(self, count: int) -> None:
        self._late.inc(count)
        if REGISTRY.active:
            REGISTRY.record_late(count)

    def unwindowable(self) -> None:
        self._unwindowable.inc()

    def windows(self, hits: int, slots: int) -> None:
        """`hits` valid hits reached the query; the on-time ones belong to `slots` windows in all."""
        if hits:
            self._hits_in.inc(hits)
        self._slots_in.inc(slots)
        if REGISTRY.active:
            REGISTRY.record_windows(hits, slots)

    def final_windows(self, slots: int) -> None:
        """An on-time pane, a window's final count, counted `slots` (hit, window) memberships."""
        self._slots_final.inc(slots)
        if REGISTRY.active:
            REGISTRY.record_final_windows(slots)


ROWS_WRITTEN, WRITE_ERRORS, WRITE_MICROS = "rows_written", "write_errors", "write_micros"  # per sink: <name>.<what>


class SinkTelemetry:
    """A sink's (metrics `<name>.rows_written`, `.write_errors`, `.retries`, `.write_micros`), and its rows as the
    live result."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._rows_written = Metrics.counter(NAMESPACE, f"{name}.{ROWS_WRITTEN}")
        self._write_errors = Metrics.counter(NAMESPACE, f"{name}.{WRITE_ERRORS}")
        self._retries = Metrics.counter(NAMESPACE, f"{name}.retries")
        self._write_micros = Metrics.counter(NAMESPACE, f"{name}.{WRITE_MICROS}")

    def written(self, rows: Any) -> None:
        """`rows`: a list of rows, or a complete-mode Snapshot."""
        self._rows_written.inc(len(rows.rows if isinstance(rows, Snapshot) else rows))
        if REGISTRY.active:
            REGISTRY.record_sink(self._name, rows)

    def failed(self, will_retry: bool) -> None:
        self._write_errors.inc()
        if will_retry:
            self._retries.inc()
        if REGISTRY.active:
            REGISTRY.record_sink(self._name, errors=1)

    def spent(self, seconds: float) -> None:
        self._write_micros.inc(int(seconds * 1e6))
        if REGISTRY.active:
            REGISTRY.record_sink(self._name, seconds=seconds)
