"""The blog's aggregations as reusable PTransforms over PCollection[Hit].

| transform         | blog query                                  | rows (update/append)  | complete mode        |
|-------------------|---------------------------------------------|-----------------------|----------------------|
| `ZipCounts`       | groupBy("zipcode").count()                  | `ZipCount`            | `Snapshot` of them   |
| `IspCounts`       | groupBy("isp").count()                      | `IspCount`            | `Snapshot` of them   |
| `ZipWindowCounts` | groupBy(window(hittime, 10m, 5m, 2m), zip)  | `WindowCount`         | `Snapshot` of them   |

Each takes an `OutputConfig` (mode, trigger, watermark delay), validated in `__init__` against the query kind, so
append on a running total fails before the graph is built. How modes and triggers become Beam windowing, triggers
and state is decided in `output_modes.py`; this module only keys, windows and counts.

Counting is `CombinePerKey(CountCombineFn())`, so runners lift it into a partial count before the shuffle.

Windowed queries in append and update mode drop hits flagged `late` (behind their partition's watermark at the
source) before windowing and count them in `hitstream/late_records`; the running totals keep them, as Spark's
non-windowed aggregations do, and so does complete mode, where Spark ignores the watermark and keeps every window.
They also drop, and count in `hitstream/unwindowable_records`, a valid hit whose windows would fall outside the
years 1..9999 that WindowCount's datetime bounds can hold.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime
import logging
import operator
import re
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import apache_beam as beam
from apache_beam.metrics import MetricsFilter
from apache_beam.transforms.window import (
    GlobalWindow, GlobalWindows, IntervalWindow, SlidingWindows, TimestampedValue, WindowFn)
from apache_beam.utils import windowed_value
from apache_beam.utils.timestamp import Timestamp

from transforms import telemetry
from transforms.telemetry import (
    LATE_RECORDS, UNWINDOWABLE_RECORDS, WINDOW_HITS_IN, WINDOW_SLOTS_FINAL, WINDOW_SLOTS_IN)
from transforms.output_modes import (
    CompleteTable, OutputConfig, OutputMode, QueryKind, RunningTotals, parse_duration)
from transforms.times import to_micros
from transforms.rows import Hit, HitBatch, IspCount, WindowCount, ZipCount

_LOGGER = logging.getLogger(__name__)

# The blog's window: 10 minutes, sliding every 5, starting 2 minutes past the hour.
DEFAULT_WINDOW_SIZE = 600
DEFAULT_WINDOW_PERIOD = 300
DEFAULT_WINDOW_OFFSET = 120


class DropLateFn(beam.DoFn):
    """Hit -> the same Hit unless it was flagged late at the source; late ones only increment `late_records`.
    With `keep_late` (complete mode, which ignores the watermark as Spark's does) late hits are kept too.

    With `window` (size, period, offset in seconds) set, it also drops (and counts in `unwindowable_records`) the
    rare valid hit whose windows would start before year 1 or end after year 9999: WindowCount bounds are
    datetimes, and one such hit would otherwise fail every retry of its bundle. It keeps the window accounting's
    inputs (see `WindowAccounting`): every hit it gets in `window_hits_in`, and in `window_slots_in` the windows
    that the kept ones belong to.
    """

    def __init__(self, window: Optional[Tuple[float, float, float]] = None, keep_late: bool = False) -> None:
        self._keep_late = keep_late
        self._telemetry = telemetry.WindowTelemetry()
        self._window_us = window_micros(window) if window else None
        margin = datetime.timedelta(seconds=window[0] if window else 0)
        self._earliest = datetime.datetime.min.replace(tzinfo=datetime.timezone.utc) + margin
        self._latest = datetime.datetime.max.replace(tzinfo=datetime.timezone.utc) - margin

    def process(self, hit: Hit) -> Iterator[Hit]:
        yield from self.keep((hit,))

    def keep(self, hits: Sequence[Hit]) -> List[Hit]:
        """The hits that process() keeps, with one metric update per batch rather than per late hit."""
        earliest, latest, keep_late = self._earliest, self._latest, self._keep_late
        kept, late = [], 0
        for hit in hits:
            if hit.late and not keep_late:
                late += 1
            elif earliest <= hit.hittime <= latest:
                kept.append(hit)
            else:
                _LOGGER.warning("Dropping hit at %s: its windows fall outside years 1..9999", hit.hittime)
                self._telemetry.unwindowable()
        if late:
            self._telemetry.late(late)
        if self._window_us is not None and hits:
            self._telemetry.windows(len(hits), self._slots(kept))
        return kept

    def _slots(self, hits: Sequence[Hit]) -> int:
        """How many windows `hits` belong to: size / period each when the period divides the size."""
        size, period, _ = self._window_us
        if size % period == 0:
            return len(hits) * (size // period)
        return sum(window_slots(1, to_micros(hit.hittime), self._window_us) for hit in hits)

    def windowable(self, hit: Hit) -> bool:
        return self._earliest <= hit.hittime <= self._latest

    def on_time(self, hit: Hit) -> bool:
        """What process() keeps, without counting: for the aggregation checkpoint's copy of the counts."""
        return (self._keep_late or not hit.late) and self.windowable(hit)


def window_micros(window: Tuple[float, float, float]) -> Tuple[int, int, int]:
    """Sliding windows' (size, period, offset) from seconds to microseconds, as event times are counted."""
    return tuple(int(round(v * 1e6)) for v in window)


def window_slots(hits: int, micros: int, window_us: Tuple[int, int, int]) -> int:
    """(hit, window) memberships of `hits` hits at event time `micros`, for sliding windows (size, period, offset) in
    microseconds."""
    size, period, offset = window_us
    return hits * ((micros - offset) // period - (micros - offset - size) // period)


class CountFinalWindowsFn(beam.DoFn):
    """(key, count) in a window -> the same; adds what the windows finally hold to `window_slots_final`.

    Every pane counts: panes are DISCARDING in every mode (output_modes), each carrying what is new since the last,
    so a window's panes add up to what it finally holds. Nothing reaches a window after its on-time pane (late hits
    are dropped before windowing), except in complete mode, whose windows keep their late hits."""

    def __init__(self) -> None:
        self._telemetry = telemetry.WindowTelemetry()

    def process(self, count: Tuple[Any, int]) -> Iterator[Tuple[Any, int]]:
        self._telemetry.final_windows(count[1])
        yield count


@dataclasses.dataclass(frozen=True)
class WindowAccounting:
    """Where every valid hit of a windowed query went, from the job's metrics (summed over windowed query steps):
    into its windows, counted late, or dropped as unwindowable. `balanced` holds when every windowed step's final
    windows hold all the (hit, window) memberships that went in: a hit that reached a window's Combine behind the
    watermark, which the runner drops without a word, makes it False."""
    hits_in: int
    late: int
    unwindowable: int
    slots_in: int
    slots_final: int
    balanced: bool

    @property
    def hits_into_windows(self) -> int:
        return self.hits_in - self.late - self.unwindowable

    @property
    def hits_in_final_windows(self) -> float:
        """slots_final in hits: divided by the windows per on-time hit."""
        if not self.slots_in:
            return 0
        return round(self.slots_final * self.hits_into_windows / self.slots_in, 1)


def _query_step(step: str) -> str:
    """The top-level step (the query's label, CamelCase) of a metric's step name: Prism names steps by transform
    id, `ref_AppliedPTransform_<label, '/' as '-'>_<n>`; the other runners by label path."""
    return re.split(r"[/-]", step.removeprefix("ref_AppliedPTransform_"), maxsplit=1)[0]


def window_accounting(metrics) -> WindowAccounting:
    """The WindowAccounting of a PipelineResult's `metrics()` (committed values where the runner has them)."""
    names = (WINDOW_HITS_IN, LATE_RECORDS, UNWINDOWABLE_RECORDS, WINDOW_SLOTS_IN, WINDOW_SLOTS_FINAL)
    per_step = collections.defaultdict(lambda: dict.fromkeys(names, 0))
    for counter in metrics.query(MetricsFilter().with_namespace(telemetry.NAMESPACE))["counters"]:
        if counter.key.metric.name in names:
            query_step = _query_step(counter.key.step)
            value = counter.committed if counter.committed is not None else counter.attempted
            per_step[query_step][counter.key.metric.name] += value or 0
    steps = list(per_step.values())
    total = {name: sum(step[name] for step in steps) for name in names}
    return WindowAccounting(total[WINDOW_HITS_IN], total[LATE_RECORDS], total[UNWINDOWABLE_RECORDS],
                            total[WINDOW_SLOTS_IN], total[WINDOW_SLOTS_FINAL],
                            all(step[WINDOW_SLOTS_IN] == step[WINDOW_SLOTS_FINAL] for step in steps))


def _zipcode_one(hit: Hit) -> Tuple[str, int]:
    return hit.zipcode, 1


def _isp_one(hit: Hit) -> Tuple[Optional[str], int]:
    return hit.isp, 1


def _to_zip_count(total: Tuple[str, int]) -> ZipCount:
    return ZipCount(total[0], total[1])


def _to_isp_count(total: Tuple[Optional[str], int]) -> IspCount:
    return IspCount(total[0], total[1])


class WindowIntoKeyFn(beam.DoFn):
    """(key, n) in a sliding window -> ((window start, window end in micros, key), n): complete mode groups by the
    window as Spark does, as a column, in the global window (see output_modes)."""

    def process(self, partial: Tuple[Any, int],
                window: IntervalWindow = beam.DoFn.WindowParam) -> Iterator[Tuple[tuple, int]]:
        yield (window.start.micros, window.end.micros, partial[0]), partial[1]


def _micros_utc(micros: int) -> datetime.datetime:
    return Timestamp(micros=micros).to_utc_datetime(has_tz=True).astimezone(datetime.timezone.utc)


def _keyed_window_to_count(total: Tuple[tuple, int]) -> WindowCount:
    (start, end, zipcode), n = total
    return WindowCount(_micros_utc(start), _micros_utc(end), zipcode, n)


class ToWindowCountFn(beam.DoFn):
    """(zipcode, count) in an IntervalWindow -> WindowCount with UTC-aware window bounds."""

    def process(
            self, total: Tuple[str, int],
            window: IntervalWindow = beam.DoFn.WindowParam) -> Iterator[WindowCount]:
        yield WindowCount(_micros_utc(window.start.micros), _micros_utc(window.end.micros), total[0], total[1])


class PreAggregateFn(beam.DoFn):
    """HitBatch -> (key, n) partial counts, the fast path's replacement for DropLate + KeyBy.

    Global-window queries count per key. Windowed queries drop and count late hits as DropLateFn does, then count
    per (key, slide bucket): when the size is a multiple of the period, every hit of one period-aligned bucket
    belongs to the same sliding windows, so one partial count per bucket is exact. The partial is stamped with the
    earliest hittime in it, which lies in the bucket and, being on time, is never behind the source's watermark (in
    complete mode, which keeps late hits, a late one's partial may be); a global one with its earliest batch's
    timestamp.

    The partials of a bundle's batches are added up and emitted when the bundle finishes: one element per key (and
    bucket) per bundle rather than per poll, so the windowing and the Combine's per-element cost after this step is
    paid some forty times less often. Nothing leaves a stage before its bundle ends anyway, so no result comes later.

    With `checkpoint` (an AggregateCheckpoint, and this query's name in it) each batch's partials are also added to
    the aggregation checkpoint's counts (transforms/checkpoint.py): the hits are counted once for both.
    """

    def __init__(self, key_field: str, window: Optional[Tuple[float, float, float]] = None,
                 keep_late: bool = False, checkpoint: Any = None, checkpoint_name: str = "") -> None:
        self._key_field = key_field
        self._window = window
        self._drop_late = DropLateFn(window, keep_late)
        self._checkpoint = checkpoint
        self._checkpoint_name = checkpoint_name
        self._bundle: Dict[tuple, list] = {}  # this bundle's partials so far
        self._bundle_timestamp: Optional[Timestamp] = None  # its earliest batch's

    def start_bundle(self) -> None:
        self._bundle, self._bundle_timestamp = {}, None

    def process(self, batch: HitBatch, timestamp=beam.DoFn.TimestampParam) -> None:
        if self._window is None:
            partials = self._partials(batch.hits)
        else:
            partials = self._partials(self._drop_late.keep(batch.hits))
        if self._checkpoint is not None:
            self._checkpoint.count(self._checkpoint_name, batch, partials, self._recount)
        for key, (n, earliest) in partials.items():
            add_partial(self._bundle, key, n, earliest)
        if self._bundle_timestamp is None or timestamp < self._bundle_timestamp:
            self._bundle_timestamp = timestamp

    def finish_bundle(self) -> Iterator[windowed_value.WindowedValue]:
        bundle, self._bundle = self._bundle, {}
        for (key, _), (n, earliest) in bundle.items():
            stamp = self._bundle_timestamp if earliest is None else Timestamp(micros=earliest)
            yield windowed_value.WindowedValue((key, n), stamp, _GLOBAL_WINDOWS)

    def _partials(self, hits: Iterable[Hit]) -> Dict[tuple, list]:
        """{(key, slide bucket or None): [hits, earliest micros or None]}, the checkpoint's shape."""
        if self._window is None:
            return {(key, None): [n, None] for key, n in key_counts(hits, self._key_field).items()}
        return bucket_counts(hits, self._key_field, self._window)

    def _recount(self, hits: List[Hit]) -> Dict[tuple, list]:
        """What process() would count of `hits`, without its metrics: part of a batch, for the checkpoint."""
        return self._partials(hits if self._window is None else filter(self._drop_late.on_time, hits))


_GLOBAL_WINDOWS = (GlobalWindow(),)  # where the read's batches are


def add_partial(table: Dict[tuple, list], key: tuple, n: int, earliest: Optional[int]) -> None:
    """Add `n` hits whose earliest event time is `earliest` (micros, or None) to `table`'s partial for `key`."""
    entry = table.get(key)
    if entry is None:
        table[key] = [n, earliest]
        return
    entry[0] += n
    if earliest is not None:
        entry[1] = earliest if entry[1] is None else min(entry[1], earliest)


def key_counts(hits: Iterable[Hit], key_field: str) -> collections.Counter:
    """key -> hits: a global-window query's partial count."""
    key_of = operator.attrgetter(key_field)
    return collections.Counter(key_of(hit) for hit in hits)


def bucket_counts(hits: Iterable[Hit], key_field: str, window: Tuple[float, float, float]) -> Dict[tuple, list]:
    """(key, slide bucket) -> [hits, earliest hittime in micros]: a windowed query's partial count.

    When the size is a multiple of the period, every hit of one period-aligned bucket belongs to the same sliding
    windows, so one partial per bucket is exact; otherwise the bucket is the exact timestamp.
    """
    key_of = operator.attrgetter(key_field)
    size, period, offset = window_micros(window)
    bucket_us = period if size % period == 0 else 1
    groups: Dict[tuple, list] = {}
    for hit in hits:
        micros = to_micros(hit.hittime)
        group = groups.setdefault((key_of(hit), (micros - offset) // bucket_us), [0, micros])
        group[0] += 1
        group[1] = min(group[1], micros)
    return groups


class StampSeedFn(beam.DoFn):
    """(key, count, earliest micros or None), a partial saved by the checkpoint -> (key, count), timestamped in its
    slide bucket when windowed. A windowed partial's hits go into their windows as the pre-aggregation's do, so they
    count in `window_slots_in` (restored hits reach no DropLateFn)."""

    def __init__(self, window: Optional[Tuple[float, float, float]]) -> None:
        self._window_us = window_micros(window) if window else None
        self._telemetry = telemetry.WindowTelemetry()

    def process(self, partial: tuple) -> Iterator[Any]:
        key, n, earliest = partial
        if earliest is None:
            yield key, n
            return
        if self._window_us is not None:
            self._telemetry.windows(0, window_slots(n, earliest, self._window_us))
        yield TimestampedValue((key, n), Timestamp(micros=earliest))


class _CountQuery(beam.PTransform):
    """Shared wiring: [DropLate] -> KeyBy -> [AssignWindows -> WindowIntoKey, windowed complete] -> Window (mode's
    trigger) -> Count -> [RunningTotals] -> ToRows -> [CompleteTable]. Subclasses say what the key is, which windows,
    and which row."""
    QUERY = ""
    KIND = QueryKind.AGGREGATION

    KEY_FIELD = ""

    def __init__(self, output: Optional[OutputConfig] = None, label: Optional[str] = None,
                 batched: bool = False, seed: Sequence[tuple] = (), checkpoint: Any = None,
                 checkpoint_name: str = "") -> None:
        super().__init__(label)
        self._batched = batched  # input is HitBatch (the fast path) rather than Hit
        # The aggregation checkpoint the pre-aggregation counts into, as `checkpoint_name` (batched only).
        self._checkpoint = checkpoint
        self._checkpoint_name = checkpoint_name
        # Partial counts saved by a stopped job (transforms/checkpoint.py): (key, count, earliest micros or None).
        self._seed = tuple(seed)
        self._output = output if output is not None else OutputConfig()
        self._output.validate(self.KIND, self.QUERY)
        _LOGGER.debug("%s: %s", self.QUERY, self._output)

    @property
    def output(self) -> OutputConfig:
        return self._output

    def _key(self) -> Tuple[str, beam.PTransform]:
        raise NotImplementedError

    def _window_fn(self) -> WindowFn:
        return GlobalWindows()

    def window_params(self) -> Optional[Tuple[float, float, float]]:
        return None

    @property
    def keeps_late(self) -> bool:
        """Complete mode ignores the watermark, as Spark's does: late hits stay in their windows."""
        return self._output.mode is OutputMode.COMPLETE

    def _to_rows(self) -> beam.PTransform:
        raise NotImplementedError

    def expand(self, hits: beam.PCollection) -> beam.PCollection:
        if self._batched:
            keyed = hits | "PreAggregate" >> beam.ParDo(
                PreAggregateFn(self.KEY_FIELD, self.window_params(), self.keeps_late, self._checkpoint,
                               self._checkpoint_name))
            count = sum  # of partial counts
        else:
            if self.KIND is QueryKind.WINDOWED_AGGREGATION:
                # Before windowing: a late hit must not reach a window, and must be counted where it is dropped.
                hits = hits | "DropLate" >> beam.ParDo(
                    DropLateFn(self.window_params(), self.keeps_late)).with_output_types(Hit)
            key_label, key_step = self._key()
            keyed = hits | key_label >> key_step
            count = beam.combiners.CountCombineFn()
        if self._seed:
            if not self._batched:
                raise ValueError(f"{self.QUERY}: a checkpoint seed needs the batched fast path")
            seed = (hits.pipeline | "Seed" >> beam.Create(self._seed)
                    | "StampSeed" >> beam.ParDo(StampSeedFn(self.window_params())))
            keyed = (keyed, seed) | "WithSeed" >> beam.Flatten()
        window_fn = self._window_fn()
        if self.KIND is QueryKind.WINDOWED_AGGREGATION and self.keeps_late:
            keyed = (keyed | "AssignWindows" >> beam.WindowInto(window_fn)
                     | "WindowIntoKey" >> beam.ParDo(WindowIntoKeyFn()))
            window_fn = GlobalWindows()
        totals = (
            keyed
            | "Window" >> self._output.aggregation_windowing(window_fn)
            | "Count" >> beam.CombinePerKey(count))
        if self.KIND is QueryKind.WINDOWED_AGGREGATION:
            totals = totals | "CountFinalWindows" >> beam.ParDo(CountFinalWindowsFn())
        if self._output.sums_panes:
            totals = totals | "RunningTotals" >> RunningTotals()
        rows = totals | "ToRows" >> self._to_rows()
        if self._output.mode is OutputMode.COMPLETE:
            return rows | "CompleteTable" >> CompleteTable(self._output.trigger)
        return rows


class ZipCounts(_CountQuery):
    """PCollection[Hit] -> ZipCount rows (update) or Snapshots of them (complete): hits per zipcode, all time."""
    QUERY = "zip_counts"
    KEY_FIELD = "zipcode"

    def _key(self) -> Tuple[str, beam.PTransform]:
        return "KeyByZipcode", beam.Map(_zipcode_one).with_output_types(Tuple[str, int])

    def _to_rows(self) -> beam.PTransform:
        return beam.Map(_to_zip_count).with_output_types(ZipCount)


class IspCounts(_CountQuery):
    """PCollection[Hit] -> IspCount rows (update) or Snapshots of them (complete). A null ISP is its own group."""
    QUERY = "isp_counts"
    KEY_FIELD = "isp"

    def _key(self) -> Tuple[str, beam.PTransform]:
        return "KeyByIsp", beam.Map(_isp_one).with_output_types(Tuple[Optional[str], int])

    def _to_rows(self) -> beam.PTransform:
        return beam.Map(_to_isp_count).with_output_types(IspCount)


class ZipWindowCounts(_CountQuery):
    """PCollection[Hit] -> WindowCount rows (update/append) or Snapshots of them (complete).

    Sliding event-time windows on hittime: `SlidingWindows(size, period, offset)`, windows
    `[N * period + offset, N * period + offset + size)`. The defaults are the blog's 10 minutes every 5 starting 2
    past the hour: [12:02, 12:12), [12:07, 12:17), ... Durations are seconds or strings such as "10 minutes".
    """
    QUERY = "zip_window_counts"
    KEY_FIELD = "zipcode"
    KIND = QueryKind.WINDOWED_AGGREGATION

    def __init__(
            self,
            size: Union[float, str] = DEFAULT_WINDOW_SIZE,
            period: Union[float, str] = DEFAULT_WINDOW_PERIOD,
            offset: Union[float, str] = DEFAULT_WINDOW_OFFSET,
            output: Optional[OutputConfig] = None,
            label: Optional[str] = None,
            batched: bool = False,
            seed: Sequence[tuple] = (),
            checkpoint: Any = None,
            checkpoint_name: str = "") -> None:
        super().__init__(output, label, batched, seed, checkpoint, checkpoint_name)
        self.size = parse_duration(size)
        self.period = parse_duration(period)
        self.offset = parse_duration(offset)
        # Spark's window() rules, checked here so a bad flag fails at start, not inside a worker.
        if self.size <= 0:
            raise ValueError(f"window size must be > 0 seconds, got {size!r}")
        if not 0 < self.period <= self.size:
            raise ValueError(f"window period (slide) must be > 0 and <= the size {self.size:g}s, got {period!r}")
        if not 0 <= self.offset < self.period:
            raise ValueError(f"window offset (start time) must be >= 0 and < the period {self.period:g}s, "
                             f"got {offset!r}")

    def _key(self) -> Tuple[str, beam.PTransform]:
        return "KeyByZipcode", beam.Map(_zipcode_one).with_output_types(Tuple[str, int])

    def _window_fn(self) -> WindowFn:
        return SlidingWindows(self.size, self.period, self.offset)

    def window_params(self) -> Optional[Tuple[float, float, float]]:
        return self.size, self.period, self.offset

    def _to_rows(self) -> beam.PTransform:
        if self.keeps_late:  # the window is in the key (see WindowIntoKeyFn)
            return beam.Map(_keyed_window_to_count).with_output_types(WindowCount)
        return beam.ParDo(ToWindowCountFn()).with_output_types(WindowCount)
