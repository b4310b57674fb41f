"""The aggregation checkpoint's bookkeeping (transforms/checkpoint.py), without a runner: what the queries'
pre-aggregations count into it, what a retried bundle adds, when a save is due, and what a restart reads back."""
import collections
import datetime

import pytest
from apache_beam.utils.timestamp import Timestamp

from transforms import checkpoint as ckpt
from transforms.checkpoint import AggregateCheckpoint, QuerySpec
from transforms.queries import PreAggregateFn
from transforms.rows import Hit, HitBatch

UTC = datetime.timezone.utc
BASE = datetime.datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
QUERIES = (QuerySpec("zip_counts", "zipcode"), QuerySpec("zip_window_counts", "zipcode", (600.0, 300.0, 120.0)))
MIN_WATERMARK = (-2**62, -2**62)


def hit(offset: int, zipcode: str, minute: float, late: bool = False) -> Hit:
    when = BASE + datetime.timedelta(minutes=minute)
    return Hit(when, zipcode, "isp", None, None, None, None, None, None, when.date().isoformat(), "t", 0, offset, 0,
               late)


@pytest.fixture
def checkpoint(tmp_path):
    yield AggregateCheckpoint(str(tmp_path), QUERIES, interval=3600)
    for key in [k for k in ckpt._REGISTRY if k[0] == str(tmp_path)]:
        del ckpt._REGISTRY[key]


def count(checkpoint, hits, next_offset):
    """The batch through every query's pre-aggregation, as the fused read stage runs it."""
    batch = HitBatch(tuple(hits), "t", 0, next_offset)
    for query in checkpoint.queries:
        fn = PreAggregateFn(query.key_field, query.window, query.keep_late, checkpoint, query.name)
        fn.start_bundle()
        fn.process(batch, timestamp=Timestamp(0))
        list(fn.finish_bundle())


def seeds(checkpoint, query):
    return sorted(checkpoint.seeds().get(query, []), key=repr)


def test_a_final_save_holds_every_record_below_its_offset_once(checkpoint):
    checkpoint.at_call_start("t", 0, 0, MIN_WATERMARK)
    count(checkpoint, [hit(0, "a", 1), hit(1, "a", 3), hit(2, "b", 4)], 3)
    # A retried bundle hands offsets 1..2 over again, with offset 3 new: only offset 3 is added.
    count(checkpoint, [hit(1, "a", 3), hit(2, "b", 4), hit(3, "b", 8)], 4)
    save = checkpoint.at_call_end("t", 0, 4, (5, 6), final=True)
    assert save is not None
    save()
    assert checkpoint.resume("t", 0) == ckpt.Saved(4, (5, 6))
    assert sorted((k, n) for k, n, _ in checkpoint.seeds().get("zip_counts", [])) == [("a", 2), ("b", 2)]
    # Buckets start at 12:02 every 5 minutes: 12:01 is in the 11:57 bucket; 12:03 and 12:04 in 12:02; 12:08 in 12:07.
    windowed = collections.Counter()
    for key, n, earliest in checkpoint.seeds().get("zip_window_counts", []):
        windowed[(key, datetime.datetime.fromtimestamp(earliest / 1e6, UTC).strftime("%H:%M"))] += n
    assert windowed == {("a", "12:01"): 1, ("a", "12:03"): 1, ("b", "12:04"): 1, ("b", "12:08"): 1}


def test_late_hits_are_in_the_running_totals_but_not_in_the_windows(checkpoint):
    checkpoint.at_call_start("t", 0, 0, MIN_WATERMARK)
    count(checkpoint, [hit(0, "a", 1), hit(1, "a", 2, late=True)], 2)
    checkpoint.at_call_end("t", 0, 2, MIN_WATERMARK, final=True)()
    assert [(k, n) for k, n, _ in checkpoint.seeds().get("zip_counts", [])] == [("a", 2)]
    assert [(k, n) for k, n, _ in checkpoint.seeds().get("zip_window_counts", [])] == [("a", 1)]


def test_no_save_while_the_counts_are_ahead_of_the_read(checkpoint):
    checkpoint.at_call_start("t", 0, 0, MIN_WATERMARK)
    count(checkpoint, [hit(0, "a", 1), hit(1, "a", 1)], 2)
    # The bundle failed; its retry reads only up to offset 1: the counts hold offset 1 too, whose sinks may not
    # have it yet, so nothing may be saved.
    checkpoint.at_call_start("t", 0, 0, MIN_WATERMARK)
    assert checkpoint.at_call_end("t", 0, 1, MIN_WATERMARK, final=False) is None
    assert checkpoint.resume("t", 0) is None


def test_saves_wait_for_the_interval_unless_the_read_is_complete(tmp_path):
    checkpoint = AggregateCheckpoint(str(tmp_path), QUERIES, interval=3600)
    checkpoint.at_call_start("t", 0, 0, MIN_WATERMARK)
    count(checkpoint, [hit(0, "a", 1)], 1)
    checkpoint.at_call_end("t", 0, 1, MIN_WATERMARK, final=False)()  # the first save is due at once
    count(checkpoint, [hit(1, "a", 1)], 2)
    assert checkpoint.at_call_end("t", 0, 2, MIN_WATERMARK, final=False) is None
    checkpoint.at_call_end("t", 0, 2, MIN_WATERMARK, final=True)()
    assert checkpoint.resume("t", 0).offset == 2
    del ckpt._REGISTRY[(str(tmp_path), "t", 0)]


def test_a_restart_counts_on_from_the_saved_file(checkpoint):
    checkpoint.at_call_start("t", 0, 0, MIN_WATERMARK)
    count(checkpoint, [hit(0, "a", 1)], 1)
    checkpoint.at_call_end("t", 0, 1, MIN_WATERMARK, final=True)()
    ckpt._REGISTRY.clear()  # a new worker process
    checkpoint.at_call_start("t", 0, 1, MIN_WATERMARK)
    count(checkpoint, [hit(1, "a", 2)], 2)
    checkpoint.at_call_end("t", 0, 2, MIN_WATERMARK, final=True)()
    assert [(k, n) for k, n, _ in checkpoint.seeds().get("zip_counts", [])] == [("a", 2)]


def test_a_changed_query_cannot_reuse_the_counts(checkpoint, tmp_path):
    checkpoint.at_call_start("t", 0, 0, MIN_WATERMARK)
    count(checkpoint, [hit(0, "a", 1)], 1)
    checkpoint.at_call_end("t", 0, 1, MIN_WATERMARK, final=True)()
    changed = AggregateCheckpoint(str(tmp_path), (QuerySpec("zip_window_counts", "zipcode", (600.0, 60.0, 0.0)),))
    with pytest.raises(ValueError, match="Use a new checkpoint dir"):
        changed.seeds()


def test_counting_without_the_read_in_this_process_fails_loudly(checkpoint):
    with pytest.raises(RuntimeError, match="one process"):
        count(checkpoint, [hit(0, "a", 1)], 1)


@pytest.mark.parametrize("content, why", [
    (b'{"offset": 12, "watermark": [0, 0], "queries": [["zip_co', "not whole JSON"),
    (b"[]", "lacks the offset"),
    (b'{"offset": 12, "watermark": [0, 0], "queries": []}', "lacks the offset, watermark, queries or partials"),
    (b'{"offset": 12, "watermark": [0, 0], "queries": [], "partials": {"zip_counts": [["a", 1]]}}', "lacks"),
])
def test_a_broken_checkpoint_file_is_refused_with_its_path_never_reset(checkpoint, tmp_path, content, why):
    path = tmp_path / "aggregates" / "t" / "0.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    for read in (lambda: checkpoint.seeds().get("zip_counts", []), lambda: checkpoint.resume("t", 0)):
        with pytest.raises(ValueError) as refused:
            read()
        assert why in str(refused.value) and str(path) in str(refused.value)
        assert "new checkpoint dir" in str(refused.value)
