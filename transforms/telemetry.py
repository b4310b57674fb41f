"""The transforms' telemetry for the driver's progress records: what the Kafka read, the parse, the windowed queries
and the sinks report as they run, besides their Beam metrics (namespace `hitstream`).

Two channels. The DoFns' Beam metrics are the first: every runner aggregates them and `PipelineResult.metrics()`
returns them. The second is `REGISTRY`, a process-global, thread-safe set of counters and current result rows that
the hooks below write to, so the driver's `hitstream/progress.py` (StreamingQueryProgress records, the dashboard)
can read a live view every second. It sees the workers that run in the driver's process (LOOPBACK: Prism, direct),
and nothing of workers elsewhere. The driver reads it; nothing here knows the driver.

Each hook returns at once unless a query is active (`REGISTRY.active`), so a job without progress reporting pays one
attribute read per call.
"""
from __future__ import annotations

import dataclasses
import operator
import threading
from typing import Any, Dict, Iterable, List, Optional, Tuple

from transforms.rows import IspCount, WindowCount, ZipCount, result_key

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


# Row types of the blog's aggregations -> their query.
_RESULT_QUERIES: Dict[type, str] = {ZipCount: "zip_counts", IspCount: "isp_counts", WindowCount: "zip_window_counts"}


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
        snapshot = hasattr(rows, "batch_id") and hasattr(rows, "rows")
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
        query = _RESULT_QUERIES.get(type(rows[0]))
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


# The hooks: one call from each DoFn. Each returns at once unless a query is active.

def record_read(topic: str, partition: int, first_offset: int, next_offset: int, count: int,
                latest: Optional[int], watermark_state: Tuple[int, int], delay_micros: int, seconds: float) -> None:
    if REGISTRY.active:
        REGISTRY.record_read(topic, partition, first_offset, next_offset, count, latest, watermark_state,
                             delay_micros, seconds)


def record_parsed(records: int, hits: Iterable[Any]) -> None:
    if REGISTRY.active:
        REGISTRY.record_parsed(records, hits)


def record_late(count: int = 1) -> None:
    if REGISTRY.active:
        REGISTRY.record_late(count)


def record_windows(hits: int, slots: int) -> None:
    if REGISTRY.active:
        REGISTRY.record_windows(hits, slots)


def record_final_windows(slots: int) -> None:
    if REGISTRY.active:
        REGISTRY.record_final_windows(slots)


def record_sink(name: str, rows: Any = (), errors: int = 0, seconds: float = 0.0) -> None:
    if REGISTRY.active:
        REGISTRY.record_sink(name, rows, errors, seconds)
