"""Restart semantics with --checkpoint-dir, on Prism against the real Kafka and MariaDB.

- Two available-now runs over a growing topic: the second goes on from the first's counts (the totals cover both
  parts of the topic, while the second run reads only the new part).
- kill -9 at random moments while a producer writes, then restart, `scale(3, 20)` times; a final available-now
  drain; every sink then equals a reference computed from what the producer reported: 0 lost, 0 duplicated.

Sinks: hits -> Parquet (per Kafka record), zip_counts -> MariaDB complete (per key) and Kafka update (per key, last
value), zip_window_counts -> MariaDB update (per window and key), dead letters -> Parquet.
"""
from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from hitstream.generator import ProduceSpec, produce
from tests.reliability import faults
from tests.reliability.scale import scale

pytestmark = pytest.mark.timeout(3600)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def scratch_db(mysql_url):
    with faults.scratch_database(mysql_url) as url:
        yield url


def job_args(topic: str, out_topic: str, db_url: str, work: Path, group: str) -> list:
    return [
        f"--topic={topic}", "--bootstrap-servers=127.0.0.1:9092", f"--group-id={group}",
        "--starting-offsets=earliest", "--watermark-delay=1 hour", "--console-num-rows=1",
        "--sink=hits=parquet", f"--parquet-path={work / 'hits'}",
        "--sink=zip_counts=jdbc:complete", "--sink=zip_counts=kafka:update", f"--output-topic={out_topic}",
        "--sink=zip_window_counts=jdbc:update", f"--jdbc-url={db_url}",
        f"--dead-letter-path={work / 'dead'}", f"--checkpoint-dir={work / 'checkpoint'}",
    ]


def start_job(args: list, trigger: str, log: Path, runner: str = "prism") -> subprocess.Popen:
    """`hitstream run` in its own process group, so one killpg takes the launcher, the worker and Prism."""
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "pipelines.blog", "--runner", runner, f"--trigger={trigger}",
                                 *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def drain(args: list, log: Path, runner: str = "prism") -> None:
    job = start_job(args, "available-now", log, runner)
    assert job.wait(timeout=900) == 0, f"the available-now drain failed; see {log}:\n{log.read_text()[-3000:]}"


def last_values(topic: str) -> dict:
    """The last count sent per zipcode on the (one-partition) Kafka output topic. The last, not the highest: a
    restart that counted from zero would send lower counts after higher ones."""
    return {key.decode(): orjson.loads(value)["count"] for _, _, key, value in
            faults.consume_all("127.0.0.1:9092", topic)}


def check_sinks(reports: list, db_url: str, out_topic: str, work: Path) -> dict:
    """Compare every sink with the producers' reports; returns (lost, duplicated) per sink."""
    events = [e for report in reports for e in report.events]
    zip_reference = dict(collections.Counter(e[1] for e in events))
    windows = {(start, zipcode): n for start, _, zipcode, n in faults.table_rows(db_url, "zip_window_counts")}
    figures = {
        "parquet hits": faults.record_diff(faults.parquet_coordinates(str(work / "hits")),
                                           {(e[3], e[4]) for e in events}),
        "parquet dead letters": faults.record_diff(faults.parquet_coordinates(str(work / "dead")),
                                                   {(p, o) for report in reports for p, o in report.malformed_at}),
        "jdbc zip_counts": faults.count_diff(dict(faults.table_rows(db_url, "zip_test")), zip_reference),
        "jdbc zip_window_counts": faults.count_diff(windows, faults.window_reference(events)),
        "kafka zip_counts": faults.count_diff(last_values(out_topic), zip_reference),
    }
    assert all(figure == (0, 0) for figure in figures.values()), figures
    return figures


def saved_offsets(work: Path) -> dict:
    root = work / "checkpoint" / "aggregates"
    return {int(f.stem): orjson.loads(f.read_bytes())["offset"] for f in root.glob("*/*.json")}


@pytest.mark.parametrize("runner", ["prism", "direct"])
def test_a_second_available_now_run_goes_on_from_the_first(runner, kafka_bootstrap, topic_factory, scratch_db,
                                                           tmp_path):
    topic, out_topic = topic_factory(partitions=4, prefix="restart"), topic_factory(partitions=1, prefix="out")
    start_ms = 1795478400000  # 2026-11-23T19:20:00Z
    args = job_args(topic, out_topic, scratch_db, tmp_path, f"g-{topic}")
    first = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=6000, partitions=4,
                                zipcodes=30, malformed_share=0.02, event_time_start_ms=start_ms,
                                event_time_span_seconds=3600, seed=1))
    drain(args, tmp_path / "run1.log", runner)
    after_first = saved_offsets(tmp_path)
    assert sum(after_first.values()) == first.produced, after_first  # the bounded end is saved

    second = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=4000, partitions=4,
                                 zipcodes=30, malformed_share=0.02, event_time_start_ms=start_ms + 1800_000,
                                 event_time_span_seconds=3600, seed=2))
    drain(args, tmp_path / "run2.log", runner)
    assert sum(saved_offsets(tmp_path).values()) == first.produced + second.produced
    # The second run read only the new records: its Kafka source started at the saved offsets.
    log = (tmp_path / "run2.log").read_text()
    for partition, offset in after_first.items():
        assert f"partition={partition}, start={offset}," in log, log[-3000:]
    check_sinks([first, second], scratch_db, out_topic, tmp_path)


def test_kill_9_and_restart_lose_and_duplicate_nothing(kafka_bootstrap, topic_factory, scratch_db, tmp_path,
                                                       capsys):
    cycles = scale(3, 20)
    topic, out_topic = topic_factory(partitions=4, prefix="crash"), topic_factory(partitions=1, prefix="out")
    args = job_args(topic, out_topic, scratch_db, tmp_path, f"g-{topic}")
    rng = random.Random(7)
    reports: list = []
    # A producer that writes all through the kills: ~150 hits/s, event times near now, 2% malformed.
    spec = ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=10**9, rate=150, partitions=4,
                       zipcodes=25, malformed_share=0.02, seed=3)
    producing = threading.Event()
    producing.set()

    def produce_while_killing():
        seed = 3
        while producing.is_set():
            reports.append(produce(ProduceSpec(**{**spec.__dict__, "count": 300, "seed": seed})))
            seed += 1

    producer = threading.Thread(target=produce_while_killing, daemon=True)
    producer.start()
    kills, saved = [], []
    try:
        for cycle in range(cycles):
            job = start_job(args, "processing-time=1s", tmp_path / "streaming.log")
            alive_for = rng.uniform(4, 14)
            time.sleep(alive_for)
            assert job.poll() is None, f"the job exited by itself (rc {job.returncode}); see streaming.log"
            os.killpg(job.pid, signal.SIGKILL)
            job.wait(timeout=30)
            kills.append(round(alive_for, 1))
            saved.append(saved_offsets(tmp_path))
    finally:
        producing.clear()
        producer.join(timeout=60)
    # The state really was carried: saved offsets only move forward, they moved during the kills, and the drain
    # started from them rather than from the beginning of the topic.
    for before, after in zip(saved, saved[1:]):
        assert all(after.get(p, 0) >= offset for p, offset in before.items()), saved
    assert sum(saved[-1].values()) > 0, saved
    drain(args, tmp_path / "drain.log")
    log = (tmp_path / "drain.log").read_text()
    for partition, offset in saved[-1].items():
        assert f"partition={partition}, start={offset}," in log, log[-3000:]
    figures = check_sinks(reports, scratch_db, out_topic, tmp_path)
    faults.print_figures(capsys, "kill -9 and restart", cycles, sum(r.produced for r in reports),
                         sum(lost for lost, _ in figures.values()), sum(dup for _, dup in figures.values()),
                         alive_s="/".join(map(str, kills)), resumed_at=sum(saved[-1].values()),
                         per_sink=",".join(f"{name.replace(' ', '_')}:{lost}/{dup}"
                                           for name, (lost, dup) in figures.items()))
    assert len(saved_offsets(tmp_path)) == 4
