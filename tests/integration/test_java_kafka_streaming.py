"""Beam's Java ReadFromKafka and WriteToKafka streaming on Prism (`--kafka-io java --kafka-sink-io java`), beside the
native read and sink, on the same topic while a producer writes to it: each job runs until the producer has ended
and its sinks hold what was produced, then stops as asked. Every sink then equals the reference, and the two
reads' sinks equal each other (the available-now case is in test_runner_conformance.py).

Sinks: hits -> Parquet, zip_counts -> SQLite (complete) and Kafka (update), zip_window_counts -> SQLite (update, on
the Kafka timestamps, which the producer sets to the hittimes: the Java read's watermark follows them), dead
letters -> Kafka. The native read windows on hittime, its default.
"""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hitstream.generator import ProduceSpec, produce
from tests.reliability.faults import (dead_letter_coordinates, latest_counts, parquet_coordinates, table_rows,
                                      window_reference, window_rows)

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(900)


def _job(kafka_io: str, topic: str, bootstrap: str, work: Path, out_topic: str, dead_topic: str) -> subprocess.Popen:
    timestamps = ["--timestamp-policy=create-time"] if kafka_io == "java" else []
    args = [f"--kafka-io={kafka_io}", f"--kafka-sink-io={kafka_io}", *timestamps, f"--topic={topic}",
            f"--bootstrap-servers={bootstrap}", "--trigger=processing-time=1s", f"--group-id=g-{kafka_io}-{topic}",
            "--starting-offsets=earliest", "--watermark-delay=1 day", "--sink=hits=parquet",
            f"--parquet-path={work / 'hits'}", "--sink=zip_counts=jdbc:complete", "--sink=zip_window_counts=jdbc:update",
            f"--jdbc-url=sqlite:///{work / 'sink.db'}", "--sink=zip_counts=kafka:update",
            f"--output-topic={out_topic}", f"--dead-letter-topic={dead_topic}", "--run-seconds=600"]
    with open(work / "job.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "pipelines.blog", "--runner", "prism", *args], cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _contents(work: Path, bootstrap: str, out_topic: str, dead_topic: str) -> dict:
    return {"parquet_hits": sorted(parquet_coordinates(str(work / "hits"))),
            "jdbc_zip_test": sorted(table_rows(f"sqlite:///{work / 'sink.db'}", "zip_test")),
            "jdbc_windows": window_rows(f"sqlite:///{work / 'sink.db'}"),
            "kafka_latest": latest_counts(bootstrap, out_topic),
            "dead_letters": sorted(dead_letter_coordinates(bootstrap, dead_topic))}


def _offset_ranges(coordinates: set) -> str:
    """(partition, offset) pairs as runs per partition, "p2 4801-4838": whether a read skipped a stretch of one
    partition, or records went missing further on, here and there."""
    runs = []
    for partition, offset in sorted(coordinates):
        if runs and runs[-1][0] == partition and runs[-1][2] == offset - 1:
            runs[-1][2] = offset
        else:
            runs.append([partition, offset, offset])
    return ", ".join(f"p{p} {a}" if a == b else f"p{p} {a}-{b}" for p, a, b in runs) or "none"


def test_java_streaming_read_and_sink_equal_the_native_ones(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(partitions=3, prefix="java-stream")
    spec = ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=6000, rate=300, partitions=3,
                       zipcodes=8, malformed_share=0.02, event_time_start_ms=1795478400000,
                       event_time_span_seconds=3600, seed=9, kafka_timestamp_is_hittime=True)
    jobs, reports = {}, []
    producer = threading.Thread(target=lambda: reports.append(produce(spec)), name="java-stream-producer")
    sinks = {kafka_io: (tmp_path / kafka_io, topic_factory(partitions=1, prefix=f"java-stream-{kafka_io}-out"),
                        topic_factory(partitions=1, prefix=f"java-stream-{kafka_io}-dlq"))
             for kafka_io in ("native", "java")}
    try:
        for kafka_io, (work, out_topic, dead_topic) in sinks.items():
            work.mkdir()
            jobs[kafka_io] = _job(kafka_io, topic, kafka_bootstrap, work, out_topic, dead_topic)
        producer.start()
        producer.join(timeout=120)
        (report,) = reports
        assert len(report.events) == report.well_formed
        # The Java read's first output has come as late as 230 s after launch (README, Measured results).
        deadline = time.monotonic() + 300
        for kafka_io, (work, out_topic, dead_topic) in sinks.items():
            log = work / "job.log"
            while True:
                counts = latest_counts(kafka_bootstrap, out_topic)
                written = parquet_coordinates(str(work / "hits"))
                hits = len(written)
                if counts == dict(report.zip_counts) and hits >= report.well_formed:
                    break
                assert jobs[kafka_io].poll() is None, f"{kafka_io} ended:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, (
                    f"{kafka_io} did not catch up: Kafka sink counts {sum(counts.values())} of "
                    f"{sum(report.zip_counts.values())}, Parquet hits {hits} of {report.well_formed}; not written: "
                    f"{_offset_ranges(set((e[3], e[4]) for e in report.events) - set(written))}\n"
                    f"{log.read_text()[-3000:]}")
                time.sleep(1)
        time.sleep(3)  # the windows' last panes, one trigger later
        for kafka_io, job in jobs.items():
            job.send_signal(signal.SIGTERM)  # a clean stop
            assert job.wait(timeout=60) == 0, (sinks[kafka_io][0] / "job.log").read_text()[-3000:]
    finally:
        for job in jobs.values():
            if job.poll() is None:
                os.killpg(job.pid, signal.SIGKILL)
                job.wait()
    results = {kafka_io: _contents(work, kafka_bootstrap, out_topic, dead_topic)
               for kafka_io, (work, out_topic, dead_topic) in sinks.items()}
    windows = window_reference(report.events)
    for kafka_io, got in results.items():
        assert got["parquet_hits"] == sorted((e[3], e[4]) for e in report.events), kafka_io
        assert dict(got["jdbc_zip_test"]) == dict(report.zip_counts) == got["kafka_latest"], kafka_io
        assert set(got["dead_letters"]) == set(report.malformed_at) and \
            len(got["dead_letters"]) == report.malformed, kafka_io
        assert got["jdbc_windows"] == windows, kafka_io
    assert results["java"] == results["native"]
