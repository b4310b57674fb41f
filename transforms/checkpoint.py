"""The aggregation checkpoint: with --checkpoint-dir, a restarted job goes on with the running totals and window
counts where the stopped (or killed) one left them, instead of starting them from zero.

Saved per Kafka partition, in `<dir>/aggregates/<topic>/<partition>.json`:
- `offset`: every record of the partition below it is counted in `partials`, none at or above it;
- `watermark`: the source's watermark state there (reported watermark, max event time), so late flags after a
  restart are the ones the stopped job would have given;
- `partials`: per query, the partial counts of those records (per key; per key and slide bucket for windows), the
  same partials the fast path feeds to each query's Combine;
- `queries`: what the partials were counted for, so a changed query cannot be fed old counts.

Why it is consistent:
- Each query's pre-aggregation (`transforms.queries.PreAggregateFn`) adds the partials it computes for its Combine
  to the counts here (`count`), so nothing is counted twice. It runs fused with the Kafka read (no shuffle between
  the read, the parse and it), and Beam hands each emitted batch downstream before the read goes on, so when a read
  call for a partition ends at offset E, every query has counted every record below E. The call then takes a copy
  of the counts (at most once per `interval`, and always when a bounded read completes) and saves it when the
  runner finalizes the bundle, atomically: temp file, fsync, rename.
- Finalization comes after the bundle's output is committed and its finish_bundle calls returned; the other steps
  fused with the read, the Parquet hits sink and the dead-letter sinks, flush there, so the records below E are
  durable in them too.
- On restart the source reads each partition from its saved offset with its saved watermark state, and each query's
  Combine gets the saved partials (the seed) beside the new data. Records read before the kill but after the saved
  offset are read again and counted once: the partials exclude them. Sinks keyed by Kafka record (Parquet) or by
  key (JDBC, Kafka) absorb the replay.
- A retried bundle hands records already counted to the pre-aggregations again; `count` skips them by offset.

The pre-aggregations and the read share one in-process registry, so this needs them in one worker process: Prism
and the DirectRunner (LOOPBACK) are; on Flink, Spark and Dataflow use the runner's own checkpoints.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from typing import Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

import orjson

from transforms.durable import write_atomically
from transforms.queries import add_partial
from transforms.rows import Hit, HitBatch

_LOGGER = logging.getLogger(__name__)

SAVE_INTERVAL_SECONDS = 1.0


class QuerySpec(NamedTuple):
    """What one query counts: its name, the Hit field it groups by, (size, period, offset) for windows, and whether
    its windows take late hits (complete mode; its name then says so, e.g. zip_window_counts:complete)."""
    name: str
    key_field: str
    window: Optional[Tuple[float, float, float]] = None
    keep_late: bool = False

    def identity(self) -> list:
        """What a checkpoint file records of the query, to refuse counts made for another."""
        return [self.name, self.key_field, list(self.window) if self.window else None]


class Saved(NamedTuple):
    """Where a partition's saved counts stand: its offset and the source's watermark state there."""
    offset: int
    watermark: Tuple[int, int]


@dataclasses.dataclass(frozen=True)
class AggregateCheckpoint:
    """The checkpoint dir and the queries counted into it; shared by the source, the pre-aggregations and the
    seed."""
    directory: str
    queries: Tuple[QuerySpec, ...]
    interval: float = SAVE_INTERVAL_SECONDS

    def path(self, topic: str, partition: int) -> str:
        return os.path.join(self.directory, "aggregates", topic, f"{partition}.json")

    def _read(self, topic: str, partition: int) -> Optional[dict]:
        path = self.path(topic, partition)
        try:
            with open(path, "rb") as file:
                saved = orjson.loads(file.read())
        except FileNotFoundError:
            return None
        except orjson.JSONDecodeError as error:
            raise ValueError(self._broken(path, f"it is not whole JSON ({error})")) from None
        if not _well_formed(saved):
            raise ValueError(self._broken(path, "it lacks the offset, watermark, queries or partials of a "
                                                "hitstream aggregate checkpoint"))
        self._check_queries(saved, path)
        return saved

    def _broken(self, path: str, why: str) -> str:
        # Never reset to zero counts: the sinks already hold what the saved counts led to.
        return (f"--checkpoint-dir {self.directory}: {path} cannot be used: {why}. hitstream writes it whole (a "
                f"temp file, then a rename), so something else changed it. Restore it from a backup, or start "
                f"afresh with a new checkpoint dir and empty sinks.")

    def _check_queries(self, saved: dict, path: str) -> None:
        wanted = [q.identity() for q in self.queries]
        if saved["queries"] != wanted:
            raise ValueError(
                f"--checkpoint-dir {self.directory} holds counts for other queries or windows ({saved['queries']} "
                f"in {path}); this job counts {wanted}. Use a new checkpoint dir for a changed job.")

    def resume(self, topic: str, partition: int) -> Optional[Saved]:
        """Where the source resumes this partition, or None when nothing was saved for it."""
        saved = self._read(topic, partition)
        return None if saved is None else Saved(saved["offset"], tuple(saved["watermark"]))

    def saved(self) -> Iterator[dict]:
        """Every partition's saved file, read and checked (a broken or foreign one raises, naming it)."""
        root = os.path.join(self.directory, "aggregates")
        for topic in sorted(os.listdir(root)) if os.path.isdir(root) else ():
            for name in sorted(os.listdir(os.path.join(root, topic))):
                if name.endswith(".json"):  # else a temp file of a save that a kill interrupted
                    yield self._read(topic, int(name[:-len(".json")]))

    def seeds(self) -> Dict[str, List[tuple]]:
        """Per query, every saved partial summed over partitions: (key, count, earliest micros or None). Reads
        each file once, and refuses a broken or foreign one, naming it."""
        totals: Dict[str, Dict[tuple, list]] = {}
        for saved in self.saved():
            for query, rows in saved["partials"].items():
                total = totals.setdefault(query, {})
                for key, bucket, n, earliest in rows:
                    add_partial(total, (key, bucket), n, earliest)
        return {query: [(key, n, earliest) for (key, _), (n, earliest) in total.items()]
                for query, total in totals.items()}

    def counts(self, topic: str, partition: int, start: int, watermark: Tuple[int, int]) -> "PartitionCounts":
        """The registry's counts for a partition whose read call starts at `start` (see `at_call_start`)."""
        key = (self.directory, topic, partition)
        with _LOCK:
            counts = _REGISTRY.get(key)
            if counts is None:
                saved = self._read(topic, partition)
                names = [q.name for q in self.queries]
                counts = (PartitionCounts.from_saved(saved, names) if saved
                          else PartitionCounts(dict.fromkeys(names, start), watermark))
                _REGISTRY[key] = counts
            return counts

    def at_call_start(self, topic: str, partition: int, start: int, watermark: Tuple[int, int]) -> None:
        """Called by the source as a read call for the partition begins at `start`, before it reads. Fails the
        read, so the job, once a save has failed: going on would count what no checkpoint can keep."""
        failure = save_failure(self.directory)
        if failure:
            raise OSError(failure)
        counts = self.counts(topic, partition, start, watermark)
        with _LOCK:
            # Behind: nothing was read in between (offsets with no record, such as transaction markers, or a first
            # read). Ahead: a retried bundle; `count` skips what was already counted.
            counts.catch_up(start)

    def at_call_end(self, topic: str, partition: int, end: int, watermark: Tuple[int, int], final: bool
                    ) -> Optional[Callable[[], None]]:
        """Called by the source after a read call that stopped at offset `end`: the save to run when the runner
        finalizes the bundle (its output committed, the fused sinks flushed), or None when none is due."""
        counts = self.counts(topic, partition, end, watermark)
        with _LOCK:
            counts.catch_up(end)  # offsets with no record at the end of the range
            if any(offset != end for offset in counts.counted.values()):
                return None  # a retried bundle read less than was counted: the counts are ahead of the sinks
            due = final or time.monotonic() - counts.taken_at >= self.interval
            if not due or end == counts.taken_offset:
                return None
            counts.taken_offset, counts.taken_at = end, time.monotonic()
            counts.watermark = tuple(watermark)
            document = counts.to_json(self.queries, end)
        path = self.path(topic, partition)

        def save() -> None:
            with counts.save_lock:
                if end > counts.saved_offset:  # finalizations may run out of order
                    temp = f"{path}.{os.getpid()}.tmp"
                    try:
                        write_atomically(path, document, temp=temp)
                    except OSError as error:
                        # The runner only logs a failed finalization, so keep the failure for the read to raise.
                        # The file on disk is the last whole save: a restart replays from its offset.
                        _SAVE_FAILURES.setdefault(self.directory, f"--checkpoint-dir: saving {path} failed: "
                                                                  f"{error}")
                        _LOGGER.error("%s", _SAVE_FAILURES[self.directory])
                        with contextlib.suppress(OSError):
                            os.remove(temp)
                        return
                    counts.saved_offset = end

        return save

    def count(self, query: str, batch: HitBatch, partials: Dict[tuple, list],
              recount: Callable[[List[Hit]], Dict[tuple, list]]) -> None:
        """Add `partials`, a batch's partial counts for `query` ({(key, slide bucket or None): [hits, earliest
        micros or None]}), to its partition's counts. A retried bundle's batch that was counted before is skipped,
        and one counted in part is recounted from its new hits with `recount(hits)`."""
        key = (self.directory, batch.topic, batch.partition)
        with _LOCK:
            counts = _REGISTRY.get(key)
            if counts is None:
                raise RuntimeError(
                    f"--checkpoint-dir: no read of {batch.topic} [{batch.partition}] in this worker process; the "
                    "aggregation checkpoint needs the Kafka read and the queries' pre-aggregation in one process "
                    "(Prism or the DirectRunner). On other runners, leave it to the runner's own checkpoints.")
            counted = counts.counted[query]
            if batch.next_offset <= counted:
                return  # counted before (a retried bundle)
            if batch.hits and batch.hits[0].offset < counted:
                partials = recount([hit for hit in batch.hits if hit.offset >= counted])
            counts.add(query, partials)
            counts.counted[query] = batch.next_offset


def save_failure(directory: str) -> Optional[str]:
    """Why a save into this checkpoint dir failed in this process (a full disk, say), or None."""
    return _SAVE_FAILURES.get(os.path.abspath(directory))


def forget_save_failure(directory: str) -> None:
    """A new job on the dir starts from its files: an earlier job's failed save is not its own."""
    _SAVE_FAILURES.pop(os.path.abspath(directory), None)


@dataclasses.dataclass
class PartitionCounts:
    """The partials of one partition's records, per query: those below the query's offset in `counted`. The queries
    count a batch one after another, so their offsets differ only within a read call."""
    counted: Dict[str, int]
    watermark: Tuple[int, int]
    partials: Dict[str, Dict[tuple, list]] = dataclasses.field(default_factory=dict)
    taken_offset: int = -1  # the last offset a save was prepared for
    taken_at: float = float("-inf")
    saved_offset: int = -1  # the last offset written to the file
    save_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def from_saved(cls, saved: dict, queries: Iterable[str]) -> "PartitionCounts":
        partials = {query: {(key, bucket): [n, earliest] for key, bucket, n, earliest in rows}
                    for query, rows in saved["partials"].items()}
        return cls(dict.fromkeys(queries, saved["offset"]), tuple(saved["watermark"]), partials,
                   taken_offset=saved["offset"], saved_offset=saved["offset"])

    def catch_up(self, offset: int) -> None:
        """Every query has counted the records below `offset` (there are none between its offset and this one)."""
        for query, counted in self.counted.items():
            self.counted[query] = max(counted, offset)

    def add(self, query: str, partials: Dict[tuple, list]) -> None:
        table = self.partials.setdefault(query, {})
        for key, (n, earliest) in partials.items():
            add_partial(table, key, n, earliest)

    def to_json(self, queries: Iterable[QuerySpec], offset: int) -> bytes:
        return orjson.dumps({
            "offset": offset,
            "watermark": list(self.watermark),
            "queries": [q.identity() for q in queries],
            "partials": {query: [[key, bucket, n, earliest] for (key, bucket), (n, earliest) in table.items()]
                         for query, table in self.partials.items()},
        })


def _well_formed(saved) -> bool:
    """The shape `PartitionCounts.to_json` writes."""
    return (isinstance(saved, dict) and isinstance(saved.get("offset"), int) and
            isinstance(saved.get("watermark"), list) and len(saved["watermark"]) == 2 and
            isinstance(saved.get("queries"), list) and isinstance(saved.get("partials"), dict) and
            all(isinstance(rows, list) and all(isinstance(row, list) and len(row) == 4 for row in rows)
                for rows in saved["partials"].values()))


# (directory, topic, partition) -> PartitionCounts, shared by the read and the pre-aggregations of one worker
# process.
_REGISTRY: Dict[Tuple[str, str, int], PartitionCounts] = {}
_LOCK = threading.Lock()
# checkpoint dir -> why a save failed, for the read and the job's end to raise (see `save`).
_SAVE_FAILURES: Dict[str, str] = {}
