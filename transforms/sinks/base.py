"""The base every sink stands on: batching, retry with backoff, metrics and idempotency keys (STYLE 6).

A sink is two small classes:

* a `SinkWriter`, which knows one system. It gets whole batches: `write_rows(rows, batch_id)` in update and append
  modes (rows already de-duplicated by idempotency key), `write_snapshot(snapshot)` in complete mode (the sink must
  end up holding exactly `snapshot.rows`), and `finish_bundle()` for whatever must be durable before a bundle may
  end (a Kafka flush). It names its transient errors in `TRANSIENT_ERRORS` or `is_transient()`.
* a `Sink` PTransform that validates its configuration in `__init__` and returns the writer from `make_writer()`.

`SinkWriteFn` does the rest, for every sink alike:

* **Batching.** Rows are buffered per bundle and handed over at `max_batch_size` rows and at the end of the bundle.
  Nothing outlives a bundle: the Kafka source commits offsets only after the runner has finished the bundles that
  hold its records, so a sink that kept rows past `finish_bundle` could lose them.
* **Idempotency keys.** `idempotency_key(row)` is what makes a row the same row across retries and replays: the
  Kafka coordinates `(topic, partition, offset)` for records and hits, and everything but `count` for aggregation
  rows (`(zipcode,)`, `(window_start, window_end, zipcode)`). Within a batch a key keeps one row, the one with the
  highest count (running totals only grow), so a writer sees each key once and upserts by it.
* **Retry.** A transient error retries the same call with exponential backoff and jitter (`RetryPolicy`); anything
  else, or a transient error that outlasts the policy, fails the bundle, and the runner retries the bundle. Writers
  are idempotent by key, so a retried batch does not duplicate.
* **Metrics**, in namespace `hitstream`, named per sink: `<sink>.rows_written`, `<sink>.write_errors` (failed
  attempts) and `<sink>.retries`, where `<sink>` is the sink's name, e.g. `jdbc.zip_test` or `parquet.hits`.
"""
from __future__ import annotations

import dataclasses
import logging
import operator
import random
import time
from typing import Callable, Dict, Hashable, Iterable, Iterator, List, Optional, Sequence, Tuple, Type

import apache_beam as beam
from apache_beam.transforms.trigger import AccumulationMode, AfterCount, Repeatedly
from apache_beam.transforms.window import GlobalWindows

from transforms import telemetry
from transforms.rows import HitBatch, Snapshot, replaces

_LOGGER = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_SIZE = 10_000

_KAFKA_COORDINATES = ("topic", "partition", "offset")


def idempotency_key(row: tuple) -> Tuple[Hashable, ...]:
    """The identity of a row across retries and replays (see the module docstring)."""
    key_fn = _KEY_FNS.get(type(row))
    if key_fn is None:
        key_fn = _KEY_FNS[type(row)] = _key_fn(type(row))
    return key_fn(row)


def _key_fn(row_type: type) -> Callable[[tuple], Tuple[Hashable, ...]]:
    fields = tuple(getattr(row_type, "_fields", ()))
    if all(name in fields for name in _KAFKA_COORDINATES):
        get = operator.attrgetter(*_KAFKA_COORDINATES)
        return get
    if fields and fields[-1] == "count":
        width = len(fields) - 1
        return lambda row: tuple(row[:width])
    return tuple


_KEY_FNS: Dict[type, Callable[[tuple], Tuple[Hashable, ...]]] = {}


def key_columns_of(row: tuple) -> Tuple[str, ...]:
    """The field names that `idempotency_key` takes from rows of this type."""
    fields = tuple(row._fields)
    if all(name in fields for name in _KAFKA_COORDINATES):
        return _KAFKA_COORDINATES
    if fields and fields[-1] == "count":
        return fields[:-1]
    return fields


def _newer(row: tuple, seen: tuple) -> bool:
    """Whether `row` should replace `seen` for the same key: for result rows the higher count wins
    (`rows.replaces`); any other row (a Hit, a dead letter) is the same record again, and the first stays."""
    fields = getattr(row, "_fields", ())
    return bool(fields) and fields[-1] == "count" and replaces(row, seen)


def dedupe(rows: Sequence[tuple]) -> List[tuple]:
    """One row per idempotency key, in first-seen order; a higher count replaces a lower one."""
    kept: Dict[Hashable, tuple] = {}
    for row in rows:
        key = idempotency_key(row)
        seen = kept.get(key)
        if seen is None or _newer(row, seen):
            kept[key] = row
    return list(kept.values())


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: `initial_backoff * multiplier ** (attempt - 1)`, capped, with +/- `jitter` spread."""
    max_attempts: int = 6
    initial_backoff: float = 0.2
    max_backoff: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1 or not 0 <= self.jitter < 1:
            raise ValueError(f"invalid RetryPolicy {self}")

    def nominal_backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based), before jitter."""
        return min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based), with jitter."""
        return self.nominal_backoff(attempt) * (1 + random.uniform(-self.jitter, self.jitter))

    def budget(self) -> float:
        """Seconds of backoff before the last attempt gives up (before jitter): how long an outage it outlasts."""
        return sum(self.nominal_backoff(attempt) for attempt in range(1, self.max_attempts))


def call_with_retry(fn: Callable[[], object], *, policy: RetryPolicy, is_transient: Callable[[BaseException], bool],
                    on_error: Callable[[int, BaseException, bool], None] = lambda attempt, error, retry: None,
                    sleep: Callable[[float], None] = time.sleep) -> object:
    """Call `fn` until it succeeds; retry transient errors up to `policy.max_attempts`, re-raise anything else.

    `on_error(attempt, error, will_retry)` is told about every failed attempt.
    """
    attempt = 1
    while True:
        try:
            return fn()
        except Exception as error:  # classified below: transient ones retried, the rest re-raised
            will_retry = attempt < policy.max_attempts and is_transient(error)
            on_error(attempt, error, will_retry)
            if not will_retry:
                raise
            sleep(policy.backoff(attempt))
            attempt += 1


class SinkWriter:
    """One system's writes. Created on the launcher, pickled to workers; open connections in `setup()`."""

    #: Exceptions worth retrying: the same call may succeed later (connection lost, deadlock, broker away).
    TRANSIENT_ERRORS: Tuple[Type[BaseException], ...] = ()

    def setup(self) -> None:
        """Open clients. Called once per worker DoFn instance."""

    def start_bundle(self) -> None:
        """A new bundle begins: forget per-bundle state left by a failed one."""

    def write_rows(self, rows: List[tuple], batch_id: int) -> None:
        """Update/append: write `rows` (one per idempotency key). Must be idempotent: it may be called again."""
        raise NotImplementedError

    def write_snapshot(self, snapshot: Snapshot) -> None:
        """Complete: afterwards the sink holds exactly `snapshot.rows`. Must be idempotent."""
        raise NotImplementedError

    def finish_bundle(self) -> None:
        """Make everything written in this bundle durable (e.g. flush a producer); raise if it is not."""

    def teardown(self) -> None:
        """Close clients."""

    def is_transient(self, error: BaseException) -> bool:
        return isinstance(error, self.TRANSIENT_ERRORS)

    def on_retry(self, error: BaseException) -> None:
        """Called before a transient failure is retried, e.g. to drop a broken connection."""


class SinkWriteFn(beam.DoFn):
    """Drives a SinkWriter: batches per bundle, de-duplicates by key, retries, counts. See the module docstring."""

    def __init__(self, writer: SinkWriter, name: str, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                 retry: RetryPolicy = RetryPolicy()) -> None:
        if max_batch_size < 1:
            raise ValueError(f"sink {name}: max_batch_size must be at least 1")
        self._writer = writer
        self._name = name
        self._max_batch_size = max_batch_size
        self._retry = retry
        self._telemetry = telemetry.SinkTelemetry(name)
        self._pending: Dict[Hashable, tuple] = {}  # one row per idempotency key
        # The fast path's polls, kept whole (see `_add_hits`); the last offset pending per (topic, partition).
        self._hit_runs: List[tuple] = []
        self._hit_rows = 0
        self._last_offsets: Dict[Tuple[str, int], int] = {}
        self._next_batch_id = 0

    def setup(self) -> None:
        self._writer.setup()

    def start_bundle(self) -> None:
        self._pending = {}
        self._hit_runs, self._hit_rows, self._last_offsets = [], 0, {}
        self._writer.start_bundle()

    def process(self, element: object) -> Iterator[None]:
        if isinstance(element, Snapshot):
            self._flush()  # keep arrival order between rows and snapshots
            self._call(lambda: self._writer.write_snapshot(element), "write_snapshot")
            self._telemetry.written(element)
            return iter(())
        if type(element) is HitBatch:
            self._add_hits(element.hits)
        else:
            self._add_rows((element,))
        return iter(())

    def _add_hits(self, hits: tuple) -> None:
        """A poll's hits (the fast path's `hits`): distinct records of one partition, in offset order. While each
        partition's polls follow one another they are kept whole, with no per-row look-up; a poll that goes back
        over offsets already pending (a replay) takes the per-row path, which keeps one row per record."""
        if not hits:
            return
        partition = (hits[0].topic, hits[0].partition)
        last = self._last_offsets.get(partition, -1)
        self._last_offsets[partition] = max(last, hits[-1].offset)
        if hits[0].offset <= last:
            runs, self._hit_runs, self._hit_rows = self._hit_runs, [], 0
            for run in runs:  # keep arrival order: what came before this poll goes first
                self._add_rows(run)
            self._add_rows(hits)
            return
        self._hit_runs.append(hits)
        self._hit_rows += len(hits)
        if len(self._pending) + self._hit_rows >= self._max_batch_size:
            self._flush()

    def _add_rows(self, rows: Iterable[tuple]) -> None:
        pending = self._pending
        for row in rows:
            key = idempotency_key(row)
            seen = pending.get(key)
            if seen is None or _newer(row, seen):
                pending[key] = row
            if len(pending) + self._hit_rows >= self._max_batch_size:
                self._flush()
                pending = self._pending

    def finish_bundle(self) -> None:
        self._flush()
        self._call(self._writer.finish_bundle, "finish_bundle")

    def teardown(self) -> None:
        self._writer.teardown()

    def _flush(self) -> None:
        if not self._pending and not self._hit_runs:
            return
        rows = list(self._pending.values())
        for run in self._hit_runs:
            rows.extend(run)
        batch_id = self._next_batch_id
        self._call(lambda: self._writer.write_rows(rows, batch_id), "write_rows")
        self._next_batch_id += 1
        self._pending, self._hit_runs, self._hit_rows = {}, [], 0
        self._telemetry.written(rows)

    def _call(self, fn: Callable[[], object], what: str) -> None:
        def on_error(attempt: int, error: BaseException, will_retry: bool) -> None:
            self._telemetry.failed(will_retry)
            # The first line only: a SQL error's full text repeats the statement and its parameters.
            reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            if will_retry:
                _LOGGER.warning("sink %s: %s failed (attempt %d of %d), retrying in about %.1f s: %s", self._name,
                                what, attempt, self._retry.max_attempts, self._retry.nominal_backoff(attempt), reason)
                self._writer.on_retry(error)
            else:
                _LOGGER.error("sink %s: %s failed (attempt %d of %d), failing the bundle: %s",
                              self._name, what, attempt, self._retry.max_attempts, reason)

        started = time.monotonic()
        call_with_retry(fn, policy=self._retry, is_transient=self._writer.is_transient, on_error=on_error)
        self._telemetry.spent(time.monotonic() - started)


class Sink(beam.PTransform):
    """Base of every sink PTransform: rows (update/append) or Snapshots (complete) in, nothing out.

    Subclasses validate their configuration in `__init__` and implement `make_writer()`; `name` names the metrics.
    """

    def __init__(self, name: str, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                 retry: Optional[RetryPolicy] = None, label: Optional[str] = None) -> None:
        super().__init__(label)
        if max_batch_size < 1:
            raise ValueError(f"sink {name}: max_batch_size must be at least 1")
        self.sink_name = name
        self.max_batch_size = max_batch_size
        self.retry = retry or RetryPolicy()

    def make_writer(self) -> SinkWriter:
        raise NotImplementedError

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        written = pcoll | "WriteBatches" >> beam.ParDo(
            SinkWriteFn(self.make_writer(), self.sink_name, self.max_batch_size, self.retry)).with_output_types(
                Tuple[bytes, bytes])
        # Nothing reaches this GroupByKey; it is there for Prism. Prism 2.77 busy-waits on every bundle of a stage
        # that has no output leaving it (stage.go's progress loop selects on an already-closed channel until the
        # bundle's response comes), so a sink's stage burnt a core for as long as each of its bundles ran, and
        # starved the state and data requests of every other bundle. An output to another stage makes it wait like
        # any other. (Prism elides a Reshuffle, so it takes a real GroupByKey, with a trigger so that an unbounded
        # input may use it.)
        return (written
                | "FlushWindow" >> beam.WindowInto(GlobalWindows(), trigger=Repeatedly(AfterCount(1)),
                                                   accumulation_mode=AccumulationMode.DISCARDING)
                | "Flushed" >> beam.GroupByKey())
