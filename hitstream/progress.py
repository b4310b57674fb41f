"""A running job's progress as Spark shows it: the StreamingQuery handle, its records and its listeners.

Spark users read `query.status`, `query.lastProgress`, `query.recentProgress` and register a
`StreamingQueryListener`. hitstream gives the same for a Beam job:

    query = progress.start_query(name="blog:hits", interval=1.0)   # hitstream/job.py does this for `hitstream run`
    result = pipeline.run(); query.bind(result)
    query.last_progress     # dict, the newest progress record (None before the first)
    query.recent_progress   # list of the last 100 records, oldest first
    query.status            # {"message", "isDataAvailable", "isTriggerActive", "jobState"}
    query.add_listener(fn)  # fn(progress_dict) per record, or an object with on_query_started /
                            # on_query_progress / on_query_terminated (Spark's listener methods)
    progress.STREAMS.add_listener(fn)  # every query of this process, like spark.streams.addListener

The dashboard serves the same records as JSON: `/progress`, `/progress/recent`, `/status` (hitstream/dashboard.py).

How it works. Hooks in the DoFns report into one process-global, thread-safe `REGISTRY` (`transforms/telemetry.py`,
with the transforms; this module only reads it):

* the Kafka source (`ReadPartitionsFn.process`): per read call, topic, partition, first and next offset, records
  claimed, the partition's cached high watermark (log end), its watermark and the call's wall time;
* parse: records parsed (every source's input rows), dead letters, and the hittime of each parsed hit;
* the windowed queries: late records dropped (behind the watermark; a job that runs zip_window_counts in two
  output modes has two windowed branches, and each counts its drops), the hits they got and the windows those
  belong to, and the counts of their final windows (the window accounting);
* every sink (`SinkWriteFn`): rows written, failed attempts, write time, and the rows themselves, so the dashboard
  can chart the current zip_counts / zip_window_counts whatever sink the job writes them to.

A publisher thread snapshots and resets the interval counters every `interval` seconds (1 s by default; Beam has no
per-trigger callback on the launcher, so a record covers one interval, not one trigger) and publishes a record
(`hitstream/progress_record.py` lists its fields).

Where it works. The hooks write to this process's memory, so REGISTRY is complete when the SDK workers run in the
launching process: Prism and the DirectRunner (in-process engine), both with LOOPBACK, and Flink or Spark with
`--environment_type=LOOPBACK`. Where they run elsewhere (prism-cluster, a Flink/Spark cluster, Dataflow), pass a
`hitstream.job_metrics.JobMetrics` as the registry: it builds the same snapshots from the job service's metrics
(`hitstream/job.py` chooses). Only one job per process should report to REGISTRY at a time: it cannot tell two
jobs' DoFns apart, so `start()` resets it, and the hooks do nothing when no query is active (so benchmarks pay
nothing).

Counts follow the bundles the runner ran: a bundle that fails and is retried is counted again, as Spark's metrics
count a retried task. Sources other than Kafka (socket, directory) show input rows and event times but no offsets.
"""
from __future__ import annotations

import collections
import logging
import os
import threading
import time
import uuid
from typing import Any, Deque, Dict, List, Optional

from apache_beam.runners.runner import PipelineState

from hitstream.progress_record import build_progress
from transforms.telemetry import REGISTRY, ProgressRegistry

_LOGGER = logging.getLogger(__name__)

DEFAULT_INTERVAL = 1.0
RECENT_PROGRESS = 100  # Spark's spark.sql.streaming.numRecentProgressUpdates
RESULT_WINDOWS = 12  # windows of zip_window_counts kept for the dashboard's pies


Listener = Any  # a callable(progress) or an object with on_query_started / on_query_progress / on_query_terminated


def _notify(listener: Listener, event: str, payload: Any) -> None:
    try:
        method = getattr(listener, event, None)
        if method is not None:
            method(payload)
        elif event == "on_query_progress" and callable(listener):
            listener(payload)
    except Exception:  # a broken listener must not stop progress reporting (Spark logs and goes on too)
        _LOGGER.exception("progress: listener %r failed on %s", listener, event)


class StreamingQueryManager:
    """Spark's `spark.streams`: the active queries of this process, and listeners for all of them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: List[Listener] = []
        self._queries: List["StreamingQuery"] = []

    @property
    def active(self) -> List["StreamingQuery"]:
        with self._lock:
            return [q for q in self._queries if q.is_active]

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def listeners(self) -> List[Listener]:
        with self._lock:
            return list(self._listeners)

    def _started(self, query: "StreamingQuery") -> None:
        with self._lock:
            self._queries = [q for q in self._queries if q.is_active] + [query]


STREAMS = StreamingQueryManager()


class StreamingQuery:
    """A handle on the running job's progress: Spark's StreamingQuery, for what Beam lets the launcher see."""

    def __init__(self, name: str = "hitstream", interval: float = DEFAULT_INTERVAL, query_id: Optional[str] = None,
                 registry: ProgressRegistry = REGISTRY) -> None:
        """`registry`: where the records come from, REGISTRY (workers in this process) or a
        `hitstream.job_metrics.JobMetrics` (workers elsewhere: the job service's metrics)."""
        if interval <= 0:
            raise ValueError("progress interval must be positive")
        self.id = query_id or str(uuid.uuid4())
        self.run_id = str(uuid.uuid4())
        self.name = name
        self.interval = interval
        self._registry = registry
        self._lock = threading.Lock()
        self._recent: Deque[Dict[str, Any]] = collections.deque(maxlen=RECENT_PROGRESS)
        self._listeners: List[Listener] = []
        self._batch_id = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._result = None
        self._last_tick = time.monotonic()
        self._message = "Initializing sources"

    # Spark's names, in Python spelling
    @property
    def runId(self) -> str:  # noqa: N802 (Spark's name)
        return self.run_id

    @property
    def is_active(self) -> bool:
        return self._thread is not None and not self._stop.is_set()

    @property
    def last_progress(self) -> Optional[Dict[str, Any]]:
        with self._lock:
            return self._recent[-1] if self._recent else None

    @property
    def recent_progress(self) -> List[Dict[str, Any]]:
        with self._lock:
            return list(self._recent)

    @property
    def status(self) -> Dict[str, Any]:
        last = self.last_progress
        data = bool(last and last["numInputRows"])
        message = self._message
        if self.is_active and last is not None:
            message = "Processing new data" if data else "Waiting for data to arrive"
        return {"message": message, "isDataAvailable": data, "isTriggerActive": self.is_active and data,
                "jobState": self._job_state(), "id": self.id, "runId": self.run_id, "name": self.name,
                "batchId": last["batchId"] if last else None}

    def _job_state(self) -> Optional[str]:
        if self._result is None:
            return None
        try:
            return str(self._result.state)
        except Exception:  # a finished portable job may no longer answer
            return "UNKNOWN"

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def bind(self, result) -> None:
        """Attach the job's PipelineResult, so `status` reports its state and `stop()` can cancel it (and a
        JobMetrics registry can ask its job service)."""
        self._result = result
        if hasattr(self._registry, "bind"):
            self._registry.bind(result)

    def start(self) -> "StreamingQuery":
        """Reset the registry, turn the hooks on and publish a record every `interval` seconds."""
        if self._thread is not None:
            return self
        self._registry.reset()
        self._registry.active = True
        self._last_tick = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name=f"hitstream-progress-{self.name}", daemon=True)
        self._thread.start()
        STREAMS._started(self)
        for listener in self._all_listeners():
            _notify(listener, "on_query_started", self)
        return self

    def close(self) -> None:
        """Publish a last record (what happened since the previous one), turn the hooks off, tell the listeners.
        The job itself is left alone; `stop()` also cancels it."""
        if self._thread is None or self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)
        self.publish()
        self._registry.active = False
        if hasattr(self._registry, "close"):
            self._registry.close()
        self._message = "Stopped"
        for listener in self._all_listeners():
            _notify(listener, "on_query_terminated", self)

    def stop(self) -> None:
        """Spark's query.stop(): cancel the bound job if it still runs, then `close()`."""
        result = self._result
        if result is not None:
            try:
                if not PipelineState.is_terminal(result.state):
                    result.cancel()
            except Exception as error:  # already gone: nothing to cancel
                _LOGGER.info("progress: could not cancel the job: %s", error)
        self.close()

    def _all_listeners(self) -> List[Listener]:
        with self._lock:
            own = list(self._listeners)
        return own + STREAMS.listeners()

    def _loop(self) -> None:
        while not self._stop.wait(max(0.0, self._last_tick + self.interval - time.monotonic())):
            try:
                self.publish()
            except Exception:  # keep reporting: one bad snapshot must not end the thread
                _LOGGER.exception("progress: could not publish a record")

    def publish(self) -> Dict[str, Any]:
        """Snapshot the registry now and publish one record (the thread calls this every interval)."""
        with self._lock:
            now = time.monotonic()
            elapsed, self._last_tick = now - self._last_tick, now
            record = build_progress(self._registry.drain(), query_id=self.id, run_id=self.run_id, name=self.name,
                                    batch_id=self._batch_id, elapsed=elapsed)
            self._batch_id += 1
            self._recent.append(record)
        for listener in self._all_listeners():
            _notify(listener, "on_query_progress", record)
        return record

    def results(self) -> Dict[str, List[tuple]]:
        return self._registry.results()


def start_query(name: str = "hitstream", interval: float = DEFAULT_INTERVAL, checkpoint_dir: Optional[str] = None
                ) -> StreamingQuery:
    """Start reporting progress for the job about to run in this process. With a checkpoint dir the query id is
    stable across restarts (Spark keeps it in the checkpoint); runId is new each start."""
    return StreamingQuery(name=name, interval=interval, query_id=query_id_for(checkpoint_dir)).start()


def query_id_for(checkpoint_dir: Optional[str]) -> Optional[str]:
    """A query id stable across restarts on one checkpoint dir; None (a new id) without one."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, os.path.abspath(checkpoint_dir))) if checkpoint_dir else None
