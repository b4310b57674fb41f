"""bench/raw_loop.py's pieces that need no service: its windows, its Parquet layout and the check of its sinks."""
import collections
import datetime
import types

import sqlalchemy as sa

from bench import raw_loop, reference
from transforms.parse import parse_value

UTC = datetime.timezone.utc


def _hits(values, first_offset=0):
    hits = []
    for offset, value in enumerate(values, start=first_offset):
        hit = parse_value(value)
        hit.update(partition=0, offset=offset, kafka_timestamp=0)
        hits.append(hit)
    return hits


def test_window_starts_agree_with_the_reference_on_and_around_every_boundary():
    base = 1_773_612_000_000
    for ms in range(base - 700_000, base + 700_000, 1_000):
        for moment in (ms - 1, ms, ms + 1):
            assert sorted(raw_loop.window_starts(moment)) == sorted(reference.window_starts(moment)), moment


def test_hits_land_one_file_per_zipcode_and_day_per_batch(tmp_path):
    path = tmp_path / "hits"
    raw_loop.write_hits(_hits([b'{"hittime": "2026-03-15T23:59:59Z", "zipcode": "02134", "isp": "a"}',
                               b'{"hittime": "2026-03-16T00:00:01+00:00", "zipcode": "02134"}',
                               b'{"hittime": 1773619200000, "zipcode": "94107"}']), path, "t", 0)
    raw_loop.write_hits(_hits([b'{"hittime": "2026-03-16T00:30:00+01:00", "zipcode": "02134"}'], 3), path, "t", 1)
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*.parquet"))
    assert files == ["zipcode=02134/day=2026-03-15/part-000000-0.parquet",
                     "zipcode=02134/day=2026-03-15/part-000001-0.parquet",
                     "zipcode=02134/day=2026-03-16/part-000000-0.parquet",
                     "zipcode=94107/day=2026-03-16/part-000000-0.parquet"]
    assert raw_loop.parquet_hits(str(path)) == {"02134": 3, "94107": 1}
    assert raw_loop.parquet_day_mismatches(str(path)) == 0


def test_check_names_each_sink_that_differs_from_the_report(tmp_path, monkeypatch):
    path = tmp_path / "hits"
    raw_loop.write_hits(_hits([b'{"hittime": 1773612000000, "zipcode": "1"}'] * 2
                              + [b'{"hittime": 1773612000000, "zipcode": "2"}']), path, "t", 0)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE zips (zip VARCHAR(64) PRIMARY KEY, count BIGINT)"))
        connection.execute(sa.text("INSERT INTO zips VALUES ('1', 2), ('2', 1)"))
    engine.dispose()
    monkeypatch.setattr(raw_loop, "read_topic", lambda bootstrap, topic: [
        b'{"zipcode": "1", "count": 1}', b'{"zipcode": "2", "count": 1}', b'{"zipcode": "1", "count": 2}'])
    start = "2026-03-15T21:57:00.000Z", "2026-03-15T22:07:00.000Z"
    later = "2026-03-15T21:52:00.000Z", "2026-03-15T22:02:00.000Z"
    windows = [[*start, "1", 2], [*start, "2", 1], [*later, "1", 2], [*later, "2", 1]]
    result = {"hits_path": str(path), "jdbc_table": "zips", "output_topic": "out", "dead_letters": 1,
              "zip_window_counts": windows}
    report = types.SimpleNamespace(zip_counts=collections.Counter({"1": 2, "2": 1}), malformed=1,
                                   events=[(1773612000000, "1"), (1773612000000, "1"), (1773612000000, "2")])
    assert raw_loop.check(result, report, "unused:9092", url) == []

    report.zip_counts["2"] = 5
    report.malformed = 0
    problems = raw_loop.check(result, report, "unused:9092", url)
    assert [p.split(":")[0] for p in problems] == ["parquet", "mariadb", "kafka", "dead letters"]
