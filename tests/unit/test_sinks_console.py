"""Tests for transforms/sinks/console.py: Spark's console output, "Batch: N" and a table, numRows and truncate."""
from __future__ import annotations

import datetime

import pytest

from transforms.rows import Snapshot, WindowCount, ZipCount
from transforms.sinks.base import SinkWriteFn
from transforms.sinks.console import WriteToConsole

pytestmark = pytest.mark.timeout(60)


def _print(sink: WriteToConsole, elements) -> None:
    fn = SinkWriteFn(sink.make_writer(), sink.sink_name, sink.max_batch_size, sink.retry)
    fn.setup()
    fn.start_bundle()
    for element in elements:
        fn.process(element)
    fn.finish_bundle()


def test_update_rows_print_as_one_sorted_batch(capsys):
    _print(WriteToConsole("zip_counts"), [ZipCount("94107", 3), ZipCount("10001", 1)])
    out = capsys.readouterr().out
    assert "Batch: 0" in out and "zip_counts" in out
    assert out.index("10001") < out.index("94107")


def test_snapshot_prints_with_its_batch_id_and_num_rows(capsys):
    rows = tuple(ZipCount(f"{i:05d}", i) for i in range(30))
    _print(WriteToConsole("zip_counts", num_rows=5), [Snapshot(4, rows)])
    out = capsys.readouterr().out
    assert "Batch: 4" in out and "00004" in out and "00005" not in out
    assert "only showing top 5 rows" in out


def test_truncate_cuts_cells_at_twenty_characters(capsys):
    long = "z" * 30
    _print(WriteToConsole("t", truncate=True), [ZipCount(long, 1)])
    assert "z" * 17 + "..." in capsys.readouterr().out
    _print(WriteToConsole("t", truncate=False), [ZipCount(long, 1)])
    assert long in capsys.readouterr().out


def test_num_rows_must_be_positive():
    with pytest.raises(ValueError, match="numRows"):
        WriteToConsole("t", num_rows=0)


def test_window_times_print_whole_in_utc_as_spark_shows_them(capsys):
    start = datetime.datetime(2026, 3, 15, 23, 2, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    end = datetime.datetime(2026, 3, 15, 22, 12, 0, 250_000, tzinfo=datetime.timezone.utc)
    _print(WriteToConsole("zip_window_counts", truncate=True), [WindowCount(start, end, "94107", 7)])
    out = capsys.readouterr().out
    assert "2026-03-15 22:02:00 " in out and "2026-03-15 22:12:00.25 " in out and "..." not in out
