"""Sink write throughput, measured in one run on this machine (not a timed test: it asserts correctness only).

    python -m pytest tests/integration/test_sinks_throughput.py -q -s -p no:cacheprovider

prints rows/s for the Parquet sink (durable commits: fsync, commit log, rename; 50 zipcodes x 2 days) and for JDBC
upserts into MariaDB (batches of 10,000 rows, new keys and then updates of existing keys), both driven through the
sink base (`SinkWriteFn`) as a pipeline drives them.
"""
from __future__ import annotations

import datetime
import time
import uuid

import duckdb
import pytest
import sqlalchemy as sa

from transforms.rows import Hit, WindowCount, ZipCount
from transforms.sinks.base import SinkWriteFn
from transforms.sinks.jdbc import WriteToJdbc
from transforms.sinks.parquet import WriteToParquet, duckdb_source

pytestmark = pytest.mark.timeout(900)

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _drive(sink, bundles) -> float:
    fn = SinkWriteFn(sink.make_writer(), sink.sink_name, sink.max_batch_size, sink.retry)
    fn.setup()
    started = time.perf_counter()
    for bundle in bundles:
        fn.start_bundle()
        for row in bundle:
            fn.process(row)
        fn.finish_bundle()
    seconds = time.perf_counter() - started
    fn.teardown()
    return seconds


def test_parquet_write_throughput(tmp_path):
    rows_per_bundle, bundles = 50_000, 10
    hits = []
    for i in range(rows_per_bundle * bundles):
        at = T0 + datetime.timedelta(seconds=i * 86400 * 2 / (rows_per_bundle * bundles))
        hits.append(Hit(at, f"{94000 + i % 50:05d}", "Comcast", "73.15.2.9", "San Francisco", "CA", "US",
                        f"u-{i % 9999}", "/watch?v=1", at.strftime("%Y-%m-%d"), "hits", i % 4, i // 4, 0))
    sink = WriteToParquet(str(tmp_path / "hits"), checkpoint_dir=str(tmp_path / "ck"))
    seconds = _drive(sink, [hits[b * rows_per_bundle:(b + 1) * rows_per_bundle] for b in range(bundles)])
    files = len(list((tmp_path / "hits").rglob("part-*.parquet")))
    print(f"\nparquet sink: {len(hits)} rows in {seconds:.2f} s = {len(hits) / seconds:,.0f} rows/s "
          f"({files} files, {rows_per_bundle} rows per bundle, durable commits)")
    assert duckdb.sql(f"SELECT count(*) FROM {duckdb_source(str(tmp_path / 'hits'))}").fetchall()[0][0] == len(hits)


def test_jdbc_upsert_throughput_on_mariadb(mysql_url):
    table, windows = f"bench_{uuid.uuid4().hex[:10]}", f"bench_w_{uuid.uuid4().hex[:10]}"
    keys, rounds = 10_000, 10
    sink = WriteToJdbc(mysql_url, table, query="zip_counts")
    # Round 0 inserts 10,000 new keys; rounds 1.. update every one of them (the update-mode steady state).
    bundles = [[ZipCount(f"{k:06d}", r + 1) for k in range(keys)] for r in range(rounds)]
    try:
        seconds = _drive(sink, bundles)
        total = keys * rounds
        print(f"\njdbc sink (MariaDB): {total} upserted rows in {seconds:.2f} s = {total / seconds:,.0f} rows/s "
              f"(batches of {sink.max_batch_size}, one transaction each)")
        window_sink = WriteToJdbc(mysql_url, windows, query="zip_window_counts")
        start = T0
        window_rows = [[WindowCount(start + datetime.timedelta(minutes=5 * (k // 100)),
                                    start + datetime.timedelta(minutes=5 * (k // 100) + 10), f"{k % 100:05d}", r + 1)
                        for k in range(keys)] for r in range(rounds)]
        seconds = _drive(window_sink, window_rows)
        print(f"jdbc sink (MariaDB, window rows, 3-column key): {total} upserted rows in {seconds:.2f} s = "
              f"{total / seconds:,.0f} rows/s")
        with sa.create_engine(mysql_url).connect() as conn:
            assert conn.execute(sa.text(f"SELECT count(*), min(count) FROM {table}")).one() == (keys, rounds)
            assert conn.execute(sa.text(f"SELECT count(*), min(count) FROM {windows}")).one() == (keys, rounds)
    finally:
        with sa.create_engine(mysql_url).begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {windows}"))
