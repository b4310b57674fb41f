"""Spark's output modes and triggers, mapped to Beam, in one place.

Spark Structured Streaming runs a query as micro-batches and asks two questions: *when* does a batch run (the
trigger) and *which* result rows does it hand to the sink (the output mode). Beam has no batches: a GroupByKey fires
panes per key and window when its trigger says so. This module translates, and the queries in `queries.py` only call
`OutputConfig.aggregation_windowing()` plus the two tails below.

Triggers (`Trigger.parse`):

* `processing-time=<interval>` (`5s`, `500ms`, `1 minute`, ...): Spark runs a batch every interval. At least
  0.1 s; fractions of a second need a runner that runs triggers from the pipeline proto (Prism, Flink, Dataflow),
  see `AfterProcessingTimeMillis`.
* `available-now`: read what the source holds at start, finish every result, stop. In Beam this is simply a bounded
  source: the watermark reaches +inf when the input ends and every window fires its final pane.

Output modes (`OutputMode`) and what each becomes in Beam:

================  ======================================  ===================================================
mode              trigger = processing-time=<i>           trigger = available-now
================  ======================================  ===================================================
update            AfterWatermark(early=AfterProcessing-   AfterWatermark(); one final pane per key and window
                  Time(i)), DISCARDING (each pane         when the input ends (windows: at window end).
                  carries what is new); then
                  `RunningTotals` adds each pane into
                  the key's total for its window and
                  emits the totals that changed.
append            AfterWatermark(), DISCARDING,           same
(windowed only)   allowed_lateness=0: each window once,
                  final, when the watermark passes its
                  end.
complete          GlobalWindows with the event-time       GlobalWindows, AfterWatermark(), DISCARDING: one
                  window in the key, AfterWatermark(      pane per key at the end of input; then
                  early=AfterProcessingTime(i)),          `CompleteTable` with AfterWatermark(): exactly one
                  DISCARDING (each pane carries what is   Snapshot, at the end of input.
                  new); then `CompleteTable`: one key,
                  GlobalWindows, AfterWatermark(early=
                  AfterProcessingTime(i)) DISCARDING,
                  summed into the whole table held in
                  `CompleteTableFn` state, which emits a
                  `Snapshot(batch_id, every row)`.
================  ======================================  ===================================================

In update and append mode allowed_lateness is 0, except where early firings need a grace period for Prism
(`EARLY_TIMER_GRACE_SECONDS`); no record can arrive in it, because records behind the watermark are dropped before
windowing. Complete mode keeps late records (Spark's complete mode ignores the watermark), and the global window
is never behind any watermark.

Why these choices:

* **update.** `AfterProcessingTime(i)` fires `i` after the first element of a pane, per key and window, so a key
  that got no new data has no pane and is not emitted. `AfterWatermark(early=...)` rather than
  `Repeatedly(AfterProcessingTime)` because it guarantees a final pane when the window closes or the input ends.
  Panes are DISCARDING, each the count of what is new, and `RunningTotalsFn` keeps each key's total per window in
  state and emits it when a pane changed it (an on-time pane with nothing new is not emitted, as Spark would not).
  Not ACCUMULATING, which would make each pane carry the total itself: a runner has to keep every element of an
  accumulating pane until the window's last pane, and re-fire all of them at each trigger (Prism 2.77 does,
  `elementmanager.go`: "When accumulating, we need to retain all elements until the last pane firing"). The
  global window of zip_counts never has a last pane, so a streaming job's runner memory and the work of every
  firing grew with each bundle's partial counts since the start: the 30-minute soak's Prism grew to about 1 GB
  and fell behind after 12 minutes. Summed here, the runner holds only what came since the last firing.
* **append.** The watermark delay is applied at the source as bounded out-of-orderness: the source's watermark is
  `max event time seen - delay` (per partition, the minimum over partitions), and records already behind it are
  flagged `late`. So Beam's "the watermark passed the window end" is exactly Spark's "window end + delay < max
  event time", and one `AfterWatermark()` pane per window is Spark's append output. Windowed queries drop
  `late` records before windowing and count them (`hitstream/late_records`), like Spark drops data older than
  the watermark; with allowed_lateness 0, Beam would drop them anyway, silently.
* **complete.** Beam has no such mode, so it is built, not relabelled: the per-key counts from the aggregation are
  regrouped onto a single key and batched by a processing-time trigger (one batch per interval, like a Spark
  micro-batch), and `CompleteTableFn` keeps the whole result table in state and emits every row, sorted, with a
  `batch_id` that grows by one per snapshot. The aggregation's panes are DISCARDING, so each carries what is new
  for its key since the last pane and the table adds them up, which is order-proof. A batch that changes nothing
  (Beam's empty on-time panes) emits no snapshot, as Spark runs no batch without new data. Windowed complete does
  what Spark does, which groups by the window as a column: each count's event-time windows are assigned as usual
  and then made part of its key in the global window, so every window stays and late records still count in it.
  (Beam windows with an unbounded allowed lateness would do the same, but Prism 2.77 panics, "assignment to entry
  in nil map" in buildEventTimeBundle, when a late-firing window's state is collected at the end of a bounded
  input.)

  The batch cadence comes from a trigger rather than a processing-time timer in the DoFn because a Python DoFn
  cannot read the runner's processing-time clock (there is no `setRelative`): a timer set from `time.time()` never
  fires under TestStream's test clock on the DirectRunner (measured on Beam 2.77), while trigger timers use the
  runner's clock on every runner. The end-of-input snapshot is the batching trigger's final on-time pane, which
  every runner emits when the watermark reaches the end of the global window.

What Beam cannot match exactly:

* Spark fires every key of a batch at one instant; Beam's processing-time triggers are per key and window, so
  update rows of one interval arrive spread over that interval, and a complete snapshot can lag up to two intervals
  (one for the aggregation's early pane, one for the batch).
* Spark's watermark is the max event time over all partitions minus the delay; Beam's is a minimum over the
  source's splits. The `late` flag is set per partition at the source (see `rows.KafkaRecord`).
* Spark's default "as fast as possible" trigger (interval 0) has no Beam equivalent; the shortest interval here
  is 0.1 s (see Triggers above).
* Beam does not promise order between steps: a runner may hand a sink an older update row or snapshot after a
  newer one. Update totals of one key and window only grow and snapshots carry `batch_id`, so a sink that keeps
  the higher count / higher batch_id is exact.
"""
from __future__ import annotations

import dataclasses
import enum
import logging
import re
from typing import Any, Dict, Hashable, Iterator, Optional, Tuple, Union

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.transforms import trigger as beam_trigger
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.transforms.window import GlobalWindows, WindowFn

from transforms.rows import Snapshot, result_key

_LOGGER = logging.getLogger(__name__)


class UnsupportedOperationError(ValueError):
    """A query/output-mode combination that Spark refuses too. Raised before the graph is built."""


class OutputMode(str, enum.Enum):
    """Spark's output modes. See the module docstring for what each becomes in Beam."""
    APPEND = "append"
    UPDATE = "update"
    COMPLETE = "complete"

    @classmethod
    def parse(cls, text: Union[str, "OutputMode"]) -> "OutputMode":
        if isinstance(text, OutputMode):
            return text
        try:
            return cls(str(text).strip().lower())
        except ValueError:
            raise ValueError(
                f"unknown output mode {text!r}: use one of {', '.join(m.value for m in cls)}") from None


class QueryKind(enum.Enum):
    """What output-mode validation needs to know about a query."""
    PROJECTION = "projection"  # no aggregation: the `hits` query
    AGGREGATION = "aggregation"  # groupBy without an event-time window: zip_counts, isp_counts
    WINDOWED_AGGREGATION = "windowed aggregation"  # groupBy(window(hittime), ...): zip_window_counts


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$")
_UNIT_SECONDS = {
    "": 1.0, "ms": 0.001, "milli": 0.001, "millis": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
    "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}


def parse_duration(text: Union[str, int, float]) -> float:
    """Seconds from `5s`, `500ms`, `10 minutes`, `1.5h` or a bare number of seconds (Spark's interval words)."""
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        match = _DURATION_RE.match(str(text).lower())
        if not match or match.group(2) not in _UNIT_SECONDS:
            raise ValueError(f"not a duration: {text!r} (write e.g. 5s, 500ms, 10 minutes)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 0 or seconds != seconds:
        raise ValueError(f"a duration must be >= 0, got {text!r}")
    return seconds


def _format_seconds(seconds: float) -> str:
    return f"{seconds:g}s"


MIN_TRIGGER_INTERVAL = 0.1  # seconds

# Windowed queries with early (processing-time) firings keep a closed window's state this long in event time.
# Prism 2.77 panics ("assignment to entry in nil map", elementmanager.go buildProcessingTimeBundle) when an early
# firing's timer goes off after the watermark has closed and collected its window, which happens whenever event time
# runs faster than the wall clock (catch-up, backfill). No record can use the grace: records behind the watermark
# are flagged late at the source and dropped before windowing, so the output is unchanged.
EARLY_TIMER_GRACE_SECONDS = 24 * 3600


class AfterProcessingTimeMillis(beam_trigger.AfterProcessingTime):
    """AfterProcessingTime whose delay keeps its milliseconds in the pipeline proto.

    Beam Python writes `delay_millis=delay * 1000`, which a fractional delay turns into a float the proto refuses,
    and reads it back as `delay_millis // 1000`. Runners that run triggers from the proto (Prism, Flink, Dataflow)
    honour the milliseconds; a runner that rebuilds the trigger in Python floors it to whole seconds.
    """

    def to_runner_api(self, context):
        delay = beam_runner_api_pb2.TimestampTransform(
            delay=beam_runner_api_pb2.TimestampTransform.Delay(delay_millis=int(round(self.delay * 1000))))
        return beam_runner_api_pb2.Trigger(
            after_processing_time=beam_runner_api_pb2.Trigger.AfterProcessingTime(timestamp_transforms=[delay]))


@dataclasses.dataclass(frozen=True)
class Trigger:
    """Spark's trigger: `processing-time=<interval>` (at least 0.1 s) or `available-now` (interval None)."""
    interval: Optional[float] = None

    def __post_init__(self) -> None:
        if self.interval is None:
            return
        if not self.interval >= MIN_TRIGGER_INTERVAL:
            raise ValueError(f"a processing-time trigger needs an interval of at least {MIN_TRIGGER_INTERVAL:g}s, "
                             f"got {self.interval!r}s")
        if float(self.interval).is_integer():
            object.__setattr__(self, "interval", int(self.interval))

    @classmethod
    def available_now(cls) -> "Trigger":
        return cls(None)

    @classmethod
    def processing_time(cls, interval: Union[str, float]) -> "Trigger":
        return cls(parse_duration(interval))  # type: ignore[arg-type]  # __post_init__ checks and makes it int

    @classmethod
    def parse(cls, text: Union[str, "Trigger"]) -> "Trigger":
        """`processing-time=5s`, `processingTime=10 seconds` or `available-now` / `availableNow`."""
        if isinstance(text, Trigger):
            return text
        name, sep, arg = str(text).partition("=")
        name = re.sub(r"[-_\s]", "", name.lower())
        if name == "availablenow" and not sep:
            return cls.available_now()
        if name == "processingtime" and arg.strip():
            return cls.processing_time(arg)
        raise ValueError(
            f"unknown trigger {text!r}: use 'processing-time=<interval>' (e.g. processing-time=5s) or "
            "'available-now'")

    @property
    def is_available_now(self) -> bool:
        return self.interval is None

    def __str__(self) -> str:
        return "available-now" if self.interval is None else f"processing-time={_format_seconds(self.interval)}"


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    """How a query emits: output mode, trigger and watermark delay (Spark's `withWatermark`), validated at start.

    Strings are accepted and parsed: `OutputConfig("update", "processing-time=5s", "10 minutes")`.
    `watermark_delay` is in seconds; None means the query has no watermark, which Spark's append mode refuses.
    The delay itself is applied at the source (see the module docstring); here it only feeds validation.
    """
    mode: OutputMode = OutputMode.UPDATE
    trigger: Trigger = Trigger()
    watermark_delay: Optional[float] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", OutputMode.parse(self.mode))
        object.__setattr__(self, "trigger", Trigger.parse(self.trigger))
        if self.watermark_delay is not None:
            object.__setattr__(self, "watermark_delay", parse_duration(self.watermark_delay))

    def validate(self, kind: QueryKind, query: str) -> None:
        """Refuse what Spark's UnsupportedOperationChecker refuses, with a message that says what to change."""
        if self.mode is OutputMode.APPEND and kind is QueryKind.AGGREGATION:
            raise UnsupportedOperationError(
                f"Append output mode not supported when there are streaming aggregations on streaming "
                f"DataFrames/DataSets without watermark (query {query!r}): a running total is never final, so it "
                f"has nothing to append. Use output mode 'update' or 'complete' for {query!r}, or a windowed "
                f"query (zip_window_counts) with a watermark delay.")
        if self.mode is OutputMode.APPEND and kind is QueryKind.WINDOWED_AGGREGATION and self.watermark_delay is None:
            raise UnsupportedOperationError(
                f"Append output mode not supported when there are streaming aggregations on streaming "
                f"DataFrames/DataSets without watermark (query {query!r}): without a watermark a window is never "
                f"final. Set a watermark delay (e.g. --watermark-delay=10m) or use output mode 'update' or "
                f"'complete'.")
        if self.mode is OutputMode.COMPLETE and kind is QueryKind.PROJECTION:
            raise UnsupportedOperationError(
                f"Complete output mode not supported when there are no streaming aggregations on streaming "
                f"DataFrames/Datasets (query {query!r}): there is no result table to repeat. Use output mode "
                f"'append' or 'update' for {query!r}.")

    @property
    def fires_early(self) -> bool:
        """True when aggregations emit before their window (or the input) ends: update/complete on processing-time."""
        return not self.trigger.is_available_now and self.mode is not OutputMode.APPEND

    @property
    def sums_panes(self) -> bool:
        """True when an update query fires more than one pane per key and window, which `RunningTotals` adds up."""
        return self.mode is OutputMode.UPDATE and self.fires_early

    def aggregation_windowing(self, windowfn: WindowFn) -> beam.WindowInto:
        """The WindowInto to put before an aggregation's CombinePerKey (see the mapping table above). Panes are
        DISCARDING in every mode: each carries what is new since the last."""
        if self.mode is OutputMode.COMPLETE and not isinstance(windowfn, GlobalWindows):
            raise ValueError("complete mode aggregates in the global window; event-time windows are part of the key "
                             "there (see the module docstring)")
        discarding = beam_trigger.AccumulationMode.DISCARDING
        if not self.fires_early:
            return beam.WindowInto(windowfn, trigger=beam_trigger.AfterWatermark(), accumulation_mode=discarding,
                                   allowed_lateness=0)
        early = AfterProcessingTimeMillis(self.trigger.interval)
        if isinstance(windowfn, GlobalWindows):
            return beam.WindowInto(windowfn, trigger=beam_trigger.AfterWatermark(early=early),
                                   accumulation_mode=discarding, allowed_lateness=0)
        # late=AfterCount(1) only keeps Beam from calling a finishing trigger with a grace period unsafe: no late
        # record reaches it (see EARLY_TIMER_GRACE_SECONDS).
        trigger = beam_trigger.AfterWatermark(early=early, late=beam_trigger.AfterCount(1))
        return beam.WindowInto(windowfn, trigger=trigger, accumulation_mode=discarding,
                               allowed_lateness=EARLY_TIMER_GRACE_SECONDS)

    def __str__(self) -> str:
        delay = "none" if self.watermark_delay is None else _format_seconds(self.watermark_delay)
        return f"mode={self.mode.value} trigger={self.trigger} watermark_delay={delay}"


# ---------------------------------------------------------------------------------------------------------------
# update: the panes' counts added up per key and window.


class RunningTotalsFn(beam.DoFn):
    """(query, (key, count of a DISCARDING pane)) -> (key, total so far in this window), when the pane changed it.

    Every key of the query shares one state cell per window, {key: total}, rather than a cell per key: a state read
    is a blocking round trip to the runner (Prism gives no cache tokens, so the SDK cannot cache it), and per key they
    made a 200-key firing take 2-3 s on Prism (about 10 ms a read next to a busy Kafka read). Now a bundle reads once
    per window. The cell is garbage-collected with its window. Sums do not depend on the order panes arrive in, so a
    runner that delivers a window's on-time pane before its early ones (Prism, Beam 2.77, was measured doing so)
    changes nothing. A pane added from a stale read of the cell would be lost for good, so this relies on the runner
    giving a key to one bundle at a time, which Prism 2.77 broke when it split a slow bundle (the stack's Prism is
    patched: stack/prism-split-keeps-keys.patch).
    """
    TOTALS = ReadModifyWriteStateSpec("totals", PickleCoder())

    def process(self, element: Tuple[str, Tuple[Hashable, int]],
                totals=beam.DoFn.StateParam(TOTALS)) -> Iterator[Tuple[Hashable, int]]:
        _, (key, count) = element
        if not count:  # an on-time pane with nothing new since the last early one
            return
        table: Dict[Hashable, int] = totals.read() or {}
        table[key] = table.get(key, 0) + count
        totals.write(table)
        yield key, table[key]


def _key_by_query(count: Tuple[Hashable, int]) -> Tuple[str, Tuple[Hashable, int]]:
    return _QUERY_KEY, count


_QUERY_KEY = "query"  # every count of a query shares one key: its totals live in one state cell per window


class RunningTotals(beam.PTransform):
    """PCollection[(key, count)] of an update query's DISCARDING panes -> (key, total) for each key a pane changed."""

    def expand(self, counts: beam.PCollection) -> beam.PCollection:
        return (counts
                | "KeyByQuery" >> beam.Map(_key_by_query).with_output_types(Tuple[str, Tuple[Any, int]])
                | "AddToTotals" >> beam.ParDo(RunningTotalsFn()))


# ---------------------------------------------------------------------------------------------------------------
# complete: Beam has none, so it is built here.

_TABLE_KEY = "table"  # every row of a complete-mode table shares one key: the table lives in one state cell


def _key_by_table(row: tuple) -> Tuple[str, tuple]:
    return _TABLE_KEY, row


def _sort_key(row: tuple) -> tuple:
    # Nulls first, as Spark sorts ascending; a null ISP is a group of its own.
    return tuple((value is not None, value) for value in row[:-1])


def _plus(row: tuple, seen: Optional[tuple]) -> tuple:
    """Result `row` (its count: what is new for its key) added to `seen`, the row held for the same key."""
    return row if seen is None else row._replace(count=seen.count + row.count)


class RowDeltasCombineFn(beam.CombineFn):
    """Rows of DISCARDING panes -> {row key: row with their counts summed}: the changes of one complete-mode
    batch."""

    def create_accumulator(self) -> Dict[tuple, tuple]:
        return {}

    def add_input(self, accumulator: Dict[tuple, tuple], row: tuple) -> Dict[tuple, tuple]:
        key = result_key(row)
        accumulator[key] = _plus(row, accumulator.get(key))
        return accumulator

    def merge_accumulators(self, accumulators) -> Dict[tuple, tuple]:
        accumulators = iter(accumulators)
        merged = next(accumulators, None) or {}
        for accumulator in accumulators:
            for key, row in accumulator.items():
                merged[key] = _plus(row, merged.get(key))
        return merged

    def extract_output(self, accumulator: Dict[tuple, tuple]) -> Dict[tuple, tuple]:
        return accumulator


class CompleteTableFn(beam.DoFn):
    """(table key, {row key: row}) batches -> Snapshot(batch_id, every row of the table so far, sorted).

    Runs on a single key in the global window, so the whole result table is one state cell. A batch's rows carry
    what is new for their key (see `RowDeltasCombineFn`) and are added to the table, which makes it independent of
    the order in which batches arrive. A batch that changes nothing emits nothing.
    """
    TABLE = ReadModifyWriteStateSpec("table", PickleCoder())
    NEXT_BATCH_ID = ReadModifyWriteStateSpec("next_batch_id", VarIntCoder())

    def process(
            self, element: Tuple[Any, Dict[tuple, tuple]],
            table_state=beam.DoFn.StateParam(TABLE),
            batch_state=beam.DoFn.StateParam(NEXT_BATCH_ID)) -> Iterator[Snapshot]:
        _, changes = element
        table: Dict[tuple, tuple] = table_state.read() or {}
        changed = False
        for key, row in changes.items():
            if row.count:
                table[key] = _plus(row, table.get(key))
                changed = True
        if not changed:
            return
        table_state.write(table)
        batch_id = batch_state.read() or 0
        batch_state.write(batch_id + 1)
        yield Snapshot(batch_id, tuple(sorted(table.values(), key=_sort_key)))


class CompleteTable(beam.PTransform):
    """Result rows (ZipCount, IspCount, WindowCount of DISCARDING panes, any windows) -> PCollection[Snapshot].

    `trigger` sets the batch cadence: one batch per processing-time interval, or one at the end of input.
    """

    def __init__(self, trigger: Union[Trigger, str], label: Optional[str] = None) -> None:
        super().__init__(label)
        self._trigger = Trigger.parse(trigger)
        if self._trigger.is_available_now:
            self._batching = beam_trigger.AfterWatermark()
        else:
            self._batching = beam_trigger.AfterWatermark(
                early=AfterProcessingTimeMillis(self._trigger.interval))

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        return (
            rows
            | "KeyByTable" >> beam.Map(_key_by_table).with_output_types(Tuple[str, Any])
            | "BatchWindow" >> beam.WindowInto(
                GlobalWindows(), trigger=self._batching,
                accumulation_mode=beam_trigger.AccumulationMode.DISCARDING, allowed_lateness=0)
            | "RowDeltasPerBatch" >> beam.CombinePerKey(RowDeltasCombineFn())
            | "Table" >> beam.ParDo(CompleteTableFn()).with_output_types(Snapshot))
