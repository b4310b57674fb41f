"""Progress records (hitstream/progress.py) and the dashboard's JSON (hitstream/dashboard.py), without a job: the
registry is fed the way the DoFn hooks feed it."""
from __future__ import annotations

import datetime
import io
import threading
import time

import pytest
from rich.console import Console

from hitstream import dashboard, progress, progress_record, terminal
from transforms import telemetry
from transforms.rows import Hit, Snapshot, WindowCount, ZipCount

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 11, 23, 19, 0, tzinfo=UTC)
NO_WATERMARK = (-(2 ** 63) + 1, -(2 ** 63) + 1)  # a partition that has seen no event time yet (Beam's MIN)


def _micros(moment: datetime.datetime) -> int:
    return int(moment.timestamp() * 1e6)


def _hit(seconds: float, zipcode: str = "94107") -> Hit:
    hittime = T0 + datetime.timedelta(seconds=seconds)
    return Hit(hittime, zipcode, None, None, None, None, None, None, None, hittime.date().isoformat(),
               "hits", 0, 0, 0)


def _window(start_minute: int, zipcode: str, count: int) -> WindowCount:
    start = T0 + datetime.timedelta(minutes=start_minute)
    return WindowCount(start, start + datetime.timedelta(minutes=10), zipcode, count)


def _progress(registry: telemetry.ProgressRegistry, batch_id: int = 0, elapsed: float = 2.0) -> dict:
    return progress_record.build_progress(registry.drain(), query_id="q", run_id="r", name="test", batch_id=batch_id,
                                   elapsed=elapsed)


@pytest.fixture()
def registry():
    reg = telemetry.ProgressRegistry()
    reg.active = True
    return reg


def test_hooks_do_nothing_while_no_query_is_active():
    assert not telemetry.REGISTRY.active
    telemetry.REGISTRY.drain()
    before = telemetry.REGISTRY.drain(), telemetry.REGISTRY.results()
    telemetry.ReadTelemetry().read("hits-never-read", 0, 0, 10, 10, 10, NO_WATERMARK, 0, 0.1)
    telemetry.ParseTelemetry().parsed(10, [_hit(1)])
    telemetry.WindowTelemetry().late(3)
    telemetry.SinkTelemetry("memory.zip_counts").written([ZipCount("94107", 1)])
    after = telemetry.REGISTRY.drain(), telemetry.REGISTRY.results()
    assert after == before and after[0]["interval"] == telemetry.IntervalCounts()


def test_offsets_lag_and_rates_per_interval(registry):
    wm = (_micros(T0), _micros(T0 + datetime.timedelta(minutes=12)))
    registry.record_read("hits", 0, 0, 100, 100, 150, wm, 600_000_000, 0.2)
    registry.record_read("hits", 0, 100, 120, 20, 150, wm, 600_000_000, 0.05)
    registry.record_read("hits", 1, 40, 90, 50, 90, (_micros(T0), _micros(T0)), 600_000_000, 0.25)
    registry.record_parsed(170, [])
    first = _progress(registry, elapsed=2.0)
    assert first["numInputRows"] == 170 and first["inputRowsPerSecond"] == 85.0
    assert first["durationMs"]["getBatch"] == 500 and first["durationMs"]["triggerExecution"] == 500
    assert first["durationMs"]["bundles"] == 3 and first["durationMs"]["maxBundle"] == 250
    assert first["processedRowsPerSecond"] == 340.0  # 170 rows in 0.5 s of reads
    (source,) = first["sources"]
    assert source["description"] == "KafkaV2[Subscribe[hits]]"
    assert source["startOffset"] == {"hits": {"0": 0, "1": 40}}
    assert source["endOffset"] == {"hits": {"0": 120, "1": 90}}
    assert source["latestOffset"] == {"hits": {"0": 150, "1": 90}}
    assert source["lag"] == {"hits": {"0": 30, "1": 0}} and source["numInputRows"] == 170
    assert source["metrics"]["maxOffsetsBehindLatest"] == "30"
    # The watermark the next call reports: max(reported, max event - delay); the query's is the slowest partition's.
    assert source["watermark"]["hits"] == {"0": "2026-11-23T19:02:00.000Z", "1": "2026-11-23T19:00:00.000Z"}
    assert first["eventTime"]["watermark"] == "2026-11-23T19:00:00.000Z"

    # The next interval starts where this one ended; an idle partition keeps its offsets and lag.
    registry.record_read("hits", 0, 120, 150, 30, 160, wm, 600_000_000, 0.1)
    second = _progress(registry, batch_id=1, elapsed=1.0)
    (source,) = second["sources"]
    assert source["startOffset"] == {"hits": {"0": 120, "1": 90}}
    assert source["endOffset"] == {"hits": {"0": 150, "1": 90}} and source["lag"] == {"hits": {"0": 10, "1": 0}}
    assert source["numInputRows"] == 30 and second["numInputRows"] == 0  # nothing parsed in this interval


def test_a_partition_without_event_time_has_no_watermark(registry):
    registry.record_read("hits", 0, 0, 0, 0, 0, NO_WATERMARK, 0, 0.01)
    record = _progress(registry)
    assert record["eventTime"] == {"watermark": None}
    assert record["sources"][0]["watermark"] == {"hits": {"0": None}}


def test_parsed_rows_give_event_time_stats_and_dead_letters(registry):
    registry.record_parsed(5, [_hit(0), _hit(30), _hit(60)])
    registry.record_parsed(1, ())
    registry.record_late(2)
    record = _progress(registry)
    assert record["numInputRows"] == 6 and record["deadLetterRows"] == 3 and record["lateRows"] == 2
    assert record["eventTime"]["min"] == "2026-11-23T19:00:00.000Z"
    assert record["eventTime"]["max"] == "2026-11-23T19:01:00.000Z"
    assert record["eventTime"]["avg"] == "2026-11-23T19:00:30.000Z"
    registry.record_parsed(2, [_hit(1)])
    later = _progress(registry, batch_id=1)
    assert later["deadLetterRows"] == 1 and later["lateRows"] == 0
    assert (later["totalInputRows"], later["totalDeadLetterRows"], later["totalLateRows"]) == (8, 4, 2)


def test_window_accounting_shows_hits_into_windows_late_and_in_final_windows(registry):
    registry.record_windows(10, 16)  # 10 hits, of which the 8 on time belong to 2 windows each
    registry.record_late(2)
    registry.record_final_windows(12)  # the windows closed so far hold 6 of them
    assert _progress(registry)["windowAccounting"] == {
        "hitsIntoWindows": 8, "lateHits": 2, "hitsInFinalWindows": 6.0, "windowSlots": 16, "finalWindowSlots": 12}


def test_sinks_count_rows_errors_and_keep_the_current_results(registry):
    registry.record_sink("kafka.zip_counts", [ZipCount("94107", 2), ZipCount("94016", 1)], seconds=0.03)
    registry.record_sink("kafka.zip_counts", [ZipCount("94107", 5)])
    registry.record_sink("kafka.zip_counts", errors=1)
    registry.record_sink("memory.zip_window_counts", Snapshot(0, (_window(0, "94107", 3), _window(5, "94107", 1))))
    registry.record_sink("parquet.hits", [_hit(0)])  # raw hits are not a chart's result
    record = _progress(registry)
    sinks = {s["description"]: s for s in record["sinks"]}
    assert sinks["kafka.zip_counts"] == {"description": "kafka.zip_counts", "numOutputRows": 3, "errors": 1,
                                         "totalOutputRows": 3, "totalErrors": 1}
    assert sinks["memory.zip_window_counts"]["numOutputRows"] == 2 and sinks["parquet.hits"]["numOutputRows"] == 1
    assert record["durationMs"]["addBatch"] == 30
    results = registry.results()
    assert sorted(results["zip_counts"]) == [ZipCount("94016", 1), ZipCount("94107", 5)]  # update: upserted
    # Complete mode: a snapshot replaces the query's rows.
    registry.record_sink("memory.zip_window_counts", Snapshot(1, (_window(5, "94107", 2),)))
    assert registry.results()["zip_window_counts"] == [_window(5, "94107", 2)]
    assert "hits" not in results
    # The next interval counts afresh; the totals go on.
    registry.record_sink("kafka.zip_counts", [ZipCount("94107", 6)])
    sinks = {s["description"]: s for s in _progress(registry, batch_id=1)["sinks"]}
    assert sinks["kafka.zip_counts"]["numOutputRows"] == 1 and sinks["kafka.zip_counts"]["totalOutputRows"] == 4
    assert sinks["kafka.zip_counts"]["errors"] == 0 and sinks["kafka.zip_counts"]["totalErrors"] == 1


def test_results_json_keeps_the_newest_windows():
    rows = [_window(5 * i, zipcode, i + 1) for i in range(20) for zipcode in ("94107", "94016")]
    out = dashboard.results_json({"zip_window_counts": rows, "zip_counts": [ZipCount("b", 2), ZipCount("a", 1)]},
                                 windows=3)
    assert out["zip_counts"] == [["a", 1], ["b", 2]]
    assert [w["window_start"] for w in out["zip_window_counts"]] == [
        "2026-11-23T20:25:00Z", "2026-11-23T20:30:00Z", "2026-11-23T20:35:00Z"]
    assert out["zip_window_counts"][-1] == {"window_start": "2026-11-23T20:35:00Z",
                                            "window_end": "2026-11-23T20:45:00Z",
                                            "counts": [["94016", 20], ["94107", 20]]}
    assert dashboard.results_json({}) == {}


def test_query_publishes_every_interval_and_tells_its_listeners():
    registry = telemetry.ProgressRegistry()
    query = progress.StreamingQuery(name="q1", interval=0.05, registry=registry)
    seen, events = [], []

    class Listener:
        def on_query_started(self, q):
            events.append(("started", q.name))

        def on_query_progress(self, record):
            events.append(("progress", record["batchId"]))

        def on_query_terminated(self, q):
            events.append(("terminated", q.status["message"]))

    query.add_listener(seen.append)
    query.add_listener(Listener())
    assert query.status["message"] == "Initializing sources" and query.last_progress is None
    query.start()
    try:
        assert registry.active and query.is_active
        registry.record_parsed(7, [_hit(0)])
        deadline = time.monotonic() + 5
        while sum(r["numInputRows"] for r in seen) < 7 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert query.status["isDataAvailable"] or query.status["message"] == "Waiting for data to arrive"
    finally:
        query.close()
    assert not registry.active and not query.is_active
    assert sum(r["numInputRows"] for r in seen) == 7
    assert [r["batchId"] for r in seen] == list(range(len(seen))) and len(seen) >= 2
    assert query.last_progress == seen[-1] and query.recent_progress == seen
    assert {r["id"] for r in seen} == {query.id} and {r["runId"] for r in seen} == {query.run_id}
    assert events[0] == ("started", "q1") and events[-1] == ("terminated", "Stopped")
    assert [e for e in events if e[0] == "progress"] == [("progress", r["batchId"]) for r in seen]
    assert query.status["message"] == "Stopped" and not query.status["isTriggerActive"]


def test_recent_progress_keeps_the_last_100_and_a_broken_listener_is_skipped():
    registry = telemetry.ProgressRegistry()
    query = progress.StreamingQuery(interval=60, registry=registry)
    calls = []

    def broken(record):
        calls.append(record["batchId"])
        raise RuntimeError("listener bug")

    query.add_listener(broken)
    for _ in range(120):
        query.publish()
    assert [r["batchId"] for r in query.recent_progress] == list(range(20, 120))
    assert calls == list(range(120))


def test_manager_listeners_hear_every_query_and_ids_follow_the_checkpoint(tmp_path):
    heard = []
    progress.STREAMS.add_listener(heard.append)
    try:
        first = progress.start_query(name="a", interval=60, checkpoint_dir=str(tmp_path))
        first.close()
        second = progress.start_query(name="a", interval=60, checkpoint_dir=str(tmp_path))
        assert second in progress.STREAMS.active and first not in progress.STREAMS.active
        second.close()
    finally:
        progress.STREAMS.remove_listener(heard.append)
    assert first.id == second.id and first.run_id != second.run_id
    assert [r["runId"] for r in heard] == [first.run_id, second.run_id]
    assert progress.StreamingQuery().id != progress.StreamingQuery().id  # no checkpoint: a new id each time


def test_stop_cancels_a_running_job_and_leaves_a_finished_one():
    class Result:
        def __init__(self, state):
            self.state, self.cancelled = state, False

        def cancel(self):
            self.cancelled = True

    for state, cancelled in (("RUNNING", True), ("DONE", False), ("CANCELLED", False)):
        query = progress.StreamingQuery(interval=60, registry=telemetry.ProgressRegistry()).start()
        result = Result(state)
        query.bind(result)
        assert query.status["jobState"] == state
        query.stop()
        assert result.cancelled is cancelled and not query.is_active


def test_dashboard_json_routes():
    query = progress.StreamingQuery(name="routes", interval=60, registry=telemetry.ProgressRegistry())
    for _ in range(3):
        query.publish()
    dashboard._QUERY["current"] = query
    try:
        assert dashboard._progress({}) == (200, query.last_progress)
        status, body = dashboard._recent({"since": "0"})
        assert status == 200 and [r["batchId"] for r in body["progress"]] == [1, 2]
        assert dashboard._recent({"since": "x"})[0] == 400
        assert dashboard._recent({})[1]["progress"] == query.recent_progress
        assert dashboard._status({})[1]["name"] == "routes"
        assert dashboard._results({}) == (200, {})
    finally:
        dashboard._QUERY["current"] = None
    assert dashboard._progress({}) == (200, None)


def test_terminal_progress_only_on_a_tty_unless_forced(monkeypatch):
    class Stream(io.StringIO):
        def __init__(self, tty):
            super().__init__()
            self._tty = tty

        def isatty(self):
            return self._tty

    monkeypatch.delenv("HITSTREAM_PROGRESS", raising=False)
    assert terminal.terminal_wanted(Stream(True)) and not terminal.terminal_wanted(Stream(False))
    monkeypatch.setenv("HITSTREAM_PROGRESS", "1")
    assert terminal.terminal_wanted(Stream(False))
    monkeypatch.setenv("HITSTREAM_PROGRESS", "0")
    assert not terminal.terminal_wanted(Stream(True))


def test_terminal_panel_shows_rates_lag_watermark_and_sinks(registry):
    wm = (_micros(T0), _micros(T0 + datetime.timedelta(minutes=15)))
    registry.record_read("hits", 2, 0, 900, 900, 1000, wm, 600_000_000, 0.3)
    registry.record_parsed(900, [_hit(0)] * 890)
    registry.record_sink("memory.zip_counts", [ZipCount("94107", 890)])
    record = _progress(registry, batch_id=4, elapsed=1.0)
    console = Console(file=io.StringIO(), width=110, force_terminal=False)
    console.print(terminal.render_progress(record))
    text = console.file.getvalue()
    for expected in ("900.0 rows/s", "hits[2]", "100", "2026-11-23T19:05:00.000Z", "memory.zip_counts", "0 / 10",
                     "batch", "KafkaV2[Subscribe[hits]]", "hitstream · test"):
        assert expected in text, (expected, text)

    stream = io.StringIO()
    panel = terminal.TerminalProgress(stream=stream)
    query = progress.StreamingQuery(name="blog[term]", interval=60, registry=telemetry.ProgressRegistry())
    query.add_listener(panel)
    query.start()
    query.close()
    assert "hitstream · blog[term]" in stream.getvalue()


def test_hooks_are_thread_safe(registry):
    def reader(partition):
        for i in range(2000):
            registry.record_read("hits", partition, i, i + 1, 1, 5000, NO_WATERMARK, 0, 0.0)
            registry.record_parsed(1, ())

    threads = [threading.Thread(target=reader, args=(p,)) for p in range(4)]
    for t in threads:
        t.start()
    total = 0
    while any(t.is_alive() for t in threads):
        total += _progress(registry)["numInputRows"]
    for t in threads:
        t.join()
    record = _progress(registry)
    total += record["numInputRows"]
    assert total == 8000 and record["totalInputRows"] == 8000
    assert record["sources"][0]["endOffset"] == {"hits": {str(p): 2000 for p in range(4)}}
