"""Tests for transforms/sinks/parquet.py on real files: Hive layout, exactly-once per Kafka record (replays, out-of-order
delivery, concurrent writers), and recovery from every state a kill can leave behind. The SIGKILL tests of a real
writer process are in tests/integration/test_sinks_parquet.py."""
from __future__ import annotations

import datetime
import os
import threading

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from transforms.rows import DeadLetter, Hit, Snapshot, WindowCount
from transforms.sinks.parquet import (
    DEFAULT_COMMIT_DIR, HIVE_NULL, LOG_NAME, TEMP_DIR, OffsetRanges, ParquetWriter, WriteToParquet,
    dataset, duckdb_source, offset_runs, partition_groups)

pytestmark = pytest.mark.timeout(120)

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 11, 23, 23, 58, tzinfo=UTC)


def hit(partition: int, offset: int, zipcode: str = "94107", minutes: int = 0) -> Hit:
    at = T0 + datetime.timedelta(minutes=minutes)
    return Hit(at, zipcode, "Comcast", None, None, None, None, None, None, at.strftime("%Y-%m-%d"), "hits",
               partition, offset, 0)


def writer_for(base, **kwargs) -> ParquetWriter:
    """A set-up writer; it commits each batch as it comes unless `rows_per_commit` says otherwise."""
    sink = WriteToParquet(str(base), **{"rows_per_commit": 1, **kwargs})
    writer = sink.make_writer()
    writer.setup()
    return writer


def coordinates(base) -> list:
    return sorted(duckdb.sql(f'SELECT topic, partition, "offset" FROM {duckdb_source(str(base))}').fetchall())


def test_offset_ranges_merge_and_contain():
    ranges = OffsetRanges([[0, 4], [6, 9]])
    assert 5 not in ranges and 6 in ranges and 10 not in ranges and -1 not in ranges
    ranges.add(5, 5)
    assert ranges.runs() == [[0, 9]]
    ranges.add(20, 25)
    ranges.add(12, 12)
    assert ranges.runs() == [[0, 9], [12, 12], [20, 25]] and ranges.high == 25
    ranges.close_gaps_below(15)
    assert ranges.runs() == [[0, 12], [20, 25]]
    assert ranges.overlaps(13, 19) is False and ranges.overlaps(13, 20) and ranges.overlaps(-5, 0)
    assert not ranges.overlaps(26, 30)


def test_offset_runs_per_partition_from_columns():
    table = pa.table({"topic": ["b", "a", "a", "a", "a", "a", "a", "a"],
                      "partition": pa.array([0, 1, 1, 1, 0, 1, 1, 1], pa.int32()),
                      "offset": pa.array([5, 7, 1, 2, 4, 3, 9, 3], pa.int64())})  # 3 twice: one record twice
    assert offset_runs(table) == [["a", 0, [[4, 4]]], ["a", 1, [[1, 3], [7, 7], [9, 9]]], ["b", 0, [[5, 5]]]]


def test_partition_groups_keep_nulls_and_row_indexes():
    zipcodes = pa.array(["02134", None, "02134", "94107"])
    days = pa.array(["d1", "d1", "d1", "d2"])
    groups = {values: indexes.tolist() for values, indexes in partition_groups([zipcodes, days], 4)}
    assert groups == {("02134", "d1"): [0, 2], (None, "d1"): [1], ("94107", "d2"): [3]}
    assert [(v, i.tolist()) for v, i in partition_groups([], 2)] == [((), [0, 1])]


def test_hive_layout_partitions_by_zipcode_and_day(tmp_path):
    writer = writer_for(tmp_path / "hits")
    writer.write_rows([hit(0, 0, "02134"), hit(0, 1, "94107"), hit(0, 2, "94107", minutes=5)], 0)
    dirs = sorted(os.path.relpath(root, tmp_path / "hits") for root, _, files in os.walk(tmp_path / "hits")
                  if any(f.endswith(".parquet") for f in files))
    assert dirs == ["zipcode=02134/day=2026-11-23", "zipcode=94107/day=2026-11-23", "zipcode=94107/day=2026-11-24"]
    # Partition columns live in the directory names only, as Spark writes them.
    some_file = next((tmp_path / "hits").rglob("*.parquet"))
    assert "zipcode" not in pq.read_schema(some_file).names and "hittime" in pq.read_schema(some_file).names
    # Readers pick up the partitions with no extra step; zipcodes stay strings (leading zero kept).
    table = dataset(str(tmp_path / "hits")).to_table()
    assert sorted(table.column("zipcode").to_pylist()) == ["02134", "94107", "94107"]
    rows = duckdb.sql(f"SELECT zipcode, day, count(*) FROM {duckdb_source(str(tmp_path / 'hits'))} "
                      f"GROUP BY ALL ORDER BY ALL").fetchall()
    assert rows == [("02134", "2026-11-23", 1), ("94107", "2026-11-23", 1), ("94107", "2026-11-24", 1)]


def test_a_new_partition_is_visible_without_any_extra_step(tmp_path):
    writer = writer_for(tmp_path / "hits")
    writer.write_rows([hit(0, 0, "1")], 0)
    assert len(coordinates(tmp_path / "hits")) == 1
    writer.write_rows([hit(0, 1, "2")], 1)
    assert len(coordinates(tmp_path / "hits")) == 2


def test_replayed_records_are_skipped(tmp_path):
    writer = writer_for(tmp_path / "hits")
    writer.write_rows([hit(p, o) for p in range(2) for o in range(100)], 0)
    writer.write_rows([hit(p, o) for p in range(2) for o in range(50, 150)], 1)  # half replay, half new
    assert coordinates(tmp_path / "hits") == sorted(("hits", p, o) for p in range(2) for o in range(150))
    assert writer.skipped == 100


def test_out_of_order_delivery_of_a_split_partition_loses_nothing(tmp_path):
    # A runner split a partition's read: offsets 500-999 are committed before 0-499 arrive.
    writer = writer_for(tmp_path / "hits")
    writer.write_rows([hit(0, o) for o in range(500, 1000)], 0)
    writer.write_rows([hit(0, o) for o in range(0, 500)], 1)
    writer.write_rows([hit(0, o) for o in range(0, 1000, 7)], 2)  # and a replay of some of both
    assert coordinates(tmp_path / "hits") == [("hits", 0, o) for o in range(1000)]


def test_gaps_stay_open_within_the_horizon_and_close_beyond_it(tmp_path):
    writer = writer_for(tmp_path / "hits", dedupe_horizon=100)
    writer.write_rows([hit(0, o) for o in range(0, 1000) if o != 10 and o != 990], 0)
    writer.write_rows([hit(0, 10), hit(0, 990)], 1)
    # offset 990 is within 100 of the newest committed offset, so its gap was open: written. 10 was closed.
    assert ("hits", 0, 990) in coordinates(tmp_path / "hits")
    assert ("hits", 0, 10) not in coordinates(tmp_path / "hits")


def test_concurrent_writers_of_one_path_write_each_record_once(tmp_path):
    writers = [writer_for(tmp_path / "hits", checkpoint_dir=str(tmp_path / "ck")) for _ in range(4)]
    records = [hit(p, o, f"{o % 7}") for p in range(3) for o in range(2000)]

    def run(writer, seed):
        # Every writer writes every record, in different batches: each must land once.
        for start in range(seed * 97 % 500, len(records) + 500, 500):
            writer.write_rows(records[max(0, start - 500):start], start)

    threads = [threading.Thread(target=run, args=(w, i)) for i, w in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert coordinates(tmp_path / "hits") == sorted(("hits", p, o) for p in range(3) for o in range(2000))


def test_recovery_deletes_temp_files_of_uncommitted_transactions(tmp_path):
    base = tmp_path / "hits"
    writer = writer_for(base)
    writer.write_rows([hit(0, 0)], 0)
    # A writer killed after writing its temp file, before the commit line.
    (base / TEMP_DIR / "1-dead-00000.parquet.tmp").write_bytes(b"half a parquet file")
    writer_for(base)
    assert os.listdir(base / TEMP_DIR) == []
    assert coordinates(base) == [("hits", 0, 0)]


def test_recovery_rolls_committed_transactions_forward(tmp_path):
    base = tmp_path / "hits"
    writer = writer_for(base)
    writer.write_rows([hit(0, 0)], 0)
    # Simulate a kill after the commit line, before the rename: move the file back to its temp name.
    final = next(base.rglob("part-*.parquet"))
    entry = orjson.loads((base / DEFAULT_COMMIT_DIR / LOG_NAME).read_bytes().splitlines()[-1])
    temp, final_rel = entry["files"][0]
    assert final == base / final_rel
    os.replace(final, base / temp)
    assert not list(base.rglob("part-*.parquet"))  # what a reader sees now: nothing yet
    writer_for(base)  # restart
    assert final.exists() and coordinates(base) == [("hits", 0, 0)]
    # And the replay after the restart adds nothing.
    writer_for(base).write_rows([hit(0, 0)], 0)
    assert coordinates(base) == [("hits", 0, 0)]


def test_a_torn_last_log_line_is_an_uncommitted_transaction(tmp_path):
    base = tmp_path / "hits"
    writer = writer_for(base)
    writer.write_rows([hit(0, 0)], 0)
    log_path = base / DEFAULT_COMMIT_DIR / LOG_NAME
    size = log_path.stat().st_size
    with open(log_path, "ab") as log:
        log.write(b'{"txn": "torn", "files": [["_temporary/torn-0.parq')
    (base / TEMP_DIR / "torn-00000.parquet.tmp").write_bytes(b"x")
    restarted = writer_for(base)
    assert log_path.stat().st_size == size  # the torn tail is cut off
    assert os.listdir(base / TEMP_DIR) == []
    restarted.write_rows([hit(0, 0), hit(0, 1)], 0)
    assert coordinates(base) == [("hits", 0, 0), ("hits", 0, 1)]


def test_compaction_keeps_what_is_committed(tmp_path):
    base = tmp_path / "hits"
    writer = writer_for(base, compact_every=3)
    for o in range(10):
        writer.write_rows([hit(0, o)], o)
    lines = (base / DEFAULT_COMMIT_DIR / LOG_NAME).read_bytes().splitlines()
    assert len(lines) < 10
    restarted = writer_for(base, compact_every=3)
    restarted.write_rows([hit(0, o) for o in range(12)], 0)
    assert coordinates(base) == [("hits", 0, o) for o in range(12)]


def test_the_commit_log_lives_in_the_checkpoint_dir(tmp_path):
    writer_for(tmp_path / "hits", checkpoint_dir=str(tmp_path / "ck")).write_rows([hit(0, 0)], 0)
    logs = list((tmp_path / "ck").rglob(LOG_NAME))
    assert len(logs) == 1 and not (tmp_path / "hits" / DEFAULT_COMMIT_DIR).exists()


def test_window_counts_in_append_mode_are_once_per_window_and_zipcode(tmp_path):
    end = T0 + datetime.timedelta(minutes=10)
    writer = writer_for(tmp_path / "w", row_type=WindowCount)
    writer.write_rows([WindowCount(T0, end, "94107", 3)], 0)
    writer.write_rows([WindowCount(T0, end, "94107", 3), WindowCount(T0, end, "10001", 1)], 1)
    got = duckdb.sql(f"SELECT zipcode, day, count FROM {duckdb_source(str(tmp_path / 'w'))} ORDER BY 1").fetchall()
    assert got == [("10001", "2026-11-23", 1), ("94107", "2026-11-23", 3)]


def test_dead_letters_go_to_parquet_with_the_same_machinery(tmp_path):
    from transforms.sinks.parquet import WriteDeadLettersToParquet
    writer = WriteDeadLettersToParquet(str(tmp_path / "dead")).make_writer()
    writer.setup()
    dead = DeadLetter("hits", 0, 3, 1_795_000_000_000, b"k", b"\xff not utf-8", "bad utf-8", "parse",
                      (("trace", b"t1"), ("empty", None)))
    writer.write_rows([dead], 0)
    writer.write_rows([dead], 1)
    got = duckdb.sql(f'SELECT day, "offset", value, step, headers '
                     f'FROM {duckdb_source(str(tmp_path / "dead"))}').fetchall()
    assert got == [("2026-11-18", 3, b"\xff not utf-8", "parse",
                    [{"key": "trace", "value": b"t1"}, {"key": "empty", "value": None}])]


def test_null_and_odd_partition_values(tmp_path):
    writer = writer_for(tmp_path / "hits", partition_by=("isp",))
    writer.write_rows([hit(0, 0)._replace(isp=None), hit(0, 1)._replace(isp="AT&T/Wireless")], 0)
    names = sorted(p.name for p in (tmp_path / "hits").iterdir() if p.name.startswith("isp="))
    assert names == ["isp=AT%26T%2FWireless", f"isp={HIVE_NULL}"]
    assert sorted(dataset(str(tmp_path / "hits"), ("isp",)).to_table().column("isp").to_pylist(),
                  key=str) == ["AT&T/Wireless", None]


def test_config_errors_fail_at_build_time(tmp_path):
    with pytest.raises(ValueError, match="cannot partition"):
        WriteToParquet(str(tmp_path), partition_by=("isp",), row_type=WindowCount)
    with pytest.raises(ValueError, match="not a local path"):
        WriteToParquet("gs://bucket/hits")
    with pytest.raises(ValueError, match="column name"):
        WriteToParquet(str(tmp_path), partition_by=("zip code",))
    writer = writer_for(tmp_path / "hits")
    with pytest.raises(ValueError, match="Complete output mode"):
        writer.write_snapshot(Snapshot(0, ()))


def test_a_commit_log_line_that_is_not_a_commit_is_refused_and_a_torn_tail_is_not(tmp_path):
    from transforms.sinks.parquet import LOG_NAME, check_log
    writer = writer_for(tmp_path / "hits")
    writer.write_rows([hit(0, 0), hit(0, 1)], 0)
    log = next((tmp_path / "hits").rglob(LOG_NAME))
    whole = log.read_bytes()
    log.write_bytes(whole + b'{"txn": "2", "files": [["_tempor')  # a write killed mid-commit: not a commit
    check_log(str(log.parent))
    for line, says in ((b"not json at all", "line 2 is whole but it is not JSON"),
                       (b'{"txn": "2", "offsets": [["hits", 0, [[5]]]]}', "lacks the files, offsets and keys"),
                       (b"[1, 2]", "lacks the files")):
        log.write_bytes(whole + line + b"\n")
        with pytest.raises(ValueError) as refused:
            check_log(str(log.parent))
        assert says in str(refused.value) and str(log) in str(refused.value), refused.value
        with pytest.raises(ValueError, match="new checkpoint dir"):
            WriteToParquet(str(tmp_path / "hits"))  # the sink, when the pipeline is built
        with pytest.raises(ValueError, match="new checkpoint dir") as caught:
            writer.write_rows([hit(0, 2)], 1)  # a running writer, as it catches up with the log
        assert "line 2 is whole" in str(caught.value)  # the file's line, though the writer had read line 1 before
    assert len(coordinates(tmp_path / "hits")) == 2  # nothing was written past a broken log


def parquet_files(base) -> list:
    return [f for _, _, files in os.walk(base) for f in files if f.endswith(".parquet")]


def test_records_are_held_as_arrow_until_the_bundle_ends_then_committed_as_one_transaction(tmp_path):
    writer = writer_for(tmp_path / "hits", rows_per_commit=1000)
    writer.start_bundle()
    writer.write_rows([hit(0, o, "94107") for o in range(100)], 0)
    writer.write_rows([hit(1, o, "02134") for o in range(100)], 1)
    writer.write_rows([hit(0, o, "94107") for o in range(100, 200)], 2)
    assert parquet_files(tmp_path / "hits") == []
    writer.finish_bundle()
    assert len(parquet_files(tmp_path / "hits")) == 2  # one file per partition directory, not per batch
    assert coordinates(tmp_path / "hits") == sorted([("hits", 0, o) for o in range(200)] +
                                                    [("hits", 1, o) for o in range(100)])


def test_held_records_commit_once_they_reach_rows_per_commit(tmp_path):
    writer = writer_for(tmp_path / "hits", rows_per_commit=100)
    writer.start_bundle()
    writer.write_rows([hit(0, o) for o in range(60)], 0)
    assert parquet_files(tmp_path / "hits") == []
    writer.write_rows([hit(0, o) for o in range(60, 120)], 1)
    assert coordinates(tmp_path / "hits") == [("hits", 0, o) for o in range(120)]


def test_a_replay_of_held_records_is_written_once(tmp_path):
    writer = writer_for(tmp_path / "hits", rows_per_commit=1000)
    writer.start_bundle()
    writer.write_rows([hit(0, o) for o in range(100)], 0)
    writer.write_rows([hit(0, o) for o in range(50, 150)], 1)  # half of it held already
    writer.finish_bundle()
    assert coordinates(tmp_path / "hits") == [("hits", 0, o) for o in range(150)]
    assert writer.skipped == 50


def test_a_new_bundle_drops_what_a_failed_one_held(tmp_path):
    writer = writer_for(tmp_path / "hits", rows_per_commit=1000)
    writer.start_bundle()
    writer.write_rows([hit(0, o) for o in range(10)], 0)
    writer.start_bundle()  # the runner gave up on that bundle: it replays those records elsewhere
    writer.write_rows([hit(0, o) for o in range(10, 20)], 0)
    writer.finish_bundle()
    assert coordinates(tmp_path / "hits") == [("hits", 0, o) for o in range(10, 20)]
