"""Tests for transforms/sinks/foreach.py: Spark's ForeachWriter contract (open / process / close per batch) and
foreachBatch, called directly and through a pipeline."""
from __future__ import annotations

import json

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from transforms.rows import Snapshot, ZipCount
from transforms.sinks.base import SinkWriteFn
from transforms.sinks.foreach import ForeachWriter, WriteToForeach, foreach_batch

pytestmark = pytest.mark.timeout(120)


class Recorder(ForeachWriter):
    def __init__(self, accept: bool = True, fail_on: str = "") -> None:
        self.events = []
        self.accept = accept
        self.fail_on = fail_on

    def open(self, partition_id, epoch_id):
        self.events.append(("open", epoch_id))
        return self.accept

    def process(self, row):
        if row.zipcode == self.fail_on:
            raise RuntimeError("cannot write " + row.zipcode)
        self.events.append(("process", row))

    def close(self, error):
        self.events.append(("close", None if error is None else str(error)))


def _drive(sink, elements):
    fn = SinkWriteFn(sink.make_writer(), sink.sink_name, sink.max_batch_size, sink.retry)
    fn.setup()
    fn.start_bundle()
    for element in elements:
        fn.process(element)
    fn.finish_bundle()
    return fn


def test_open_process_close_per_batch():
    writer = Recorder()
    _drive(WriteToForeach(writer), [ZipCount("a", 1), ZipCount("b", 2), Snapshot(5, (ZipCount("c", 3),))])
    assert writer.events == [("open", 0), ("process", ZipCount("a", 1)), ("process", ZipCount("b", 2)),
                             ("close", None), ("open", 5), ("process", ZipCount("c", 3)), ("close", None)]


def test_open_returning_false_skips_the_batch():
    writer = Recorder(accept=False)
    _drive(WriteToForeach(writer), [ZipCount("a", 1)])
    assert writer.events == [("open", 0), ("close", None)]


def test_an_error_in_process_reaches_close_and_fails_the_bundle():
    writer = Recorder(fail_on="b")
    with pytest.raises(RuntimeError, match="cannot write b"):
        _drive(WriteToForeach(writer), [ZipCount("a", 1), ZipCount("b", 2)])
    assert writer.events[-1] == ("close", "cannot write b")


def test_foreach_batch_gets_rows_and_batch_id():
    calls = []
    _drive(foreach_batch(lambda rows, batch_id: calls.append((batch_id, rows))),
           [ZipCount("a", 1), Snapshot(9, (ZipCount("b", 2),))])
    assert calls == [(0, [ZipCount("a", 1)]), (9, [ZipCount("b", 2)])]


class FileWriter(ForeachWriter):
    """Writes each row as a JSON line into one file per batch (runs in the worker, so it must be picklable)."""

    def __init__(self, folder):
        self.folder = folder

    def open(self, partition_id, epoch_id):
        self.out = open(f"{self.folder}/{partition_id}-{epoch_id}.jsonl", "w")
        return True

    def process(self, row):
        self.out.write(json.dumps(row._asdict()) + "\n")

    def close(self, error):
        self.out.close()


def test_a_writer_runs_inside_a_pipeline(tmp_path):
    pipeline = beam.Pipeline(runner=FnApiRunner())
    _ = pipeline | beam.Create([ZipCount(str(i), i) for i in range(20)]) | WriteToForeach(FileWriter(str(tmp_path)))
    pipeline.run().wait_until_finish()
    rows = [json.loads(line) for path in tmp_path.iterdir() for line in path.read_text().splitlines()]
    assert sorted(r["count"] for r in rows) == list(range(20))


def test_only_a_foreach_writer_is_accepted():
    with pytest.raises(TypeError):
        WriteToForeach(object())
