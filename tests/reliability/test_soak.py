"""Soak (issue 19, part 1): a streaming `hitstream run` with the blog's sinks and the dashboard, fed at 5,000 hits/s,
30 minutes in the full form (`bash scripts/faults`) and 2 in CI, on Prism against the real broker and MariaDB.

Every SAMPLE_SECONDS the test reads, from outside, the RSS of the job's processes by role (the driver, which holds
the LOOPBACK workers, and Prism) and the consumer group's lag. At the end every sink must equal the reference: the
Parquet hits the generator's records by (partition, offset), zip_test in MariaDB its totals, and the Kafka
windows (the last update per window and zipcode) DuckDB's windows. The full form's bar: RSS slopes under 1 MB/min
after the first 5 minutes, and lag that does not grow.
"""
from __future__ import annotations

import datetime
import threading
import uuid

import orjson
import pytest

from hitstream.generator import ProduceSpec, produce
from tests.reliability.faults import (consume_all, count_diff, parquet_coordinates, print_figures, record_diff,
                                      scratch_database, table_rows, wait_until, window_reference)
from tests.reliability.scale import scale
from tests.reliability.streaming_job import JobProcess, Sampler, slope_per_minute
from tests.security.net import free_port

RATE = 5_000
SECONDS = scale(120, 1800)
SAMPLE_SECONDS = scale(10, 60)
WARM_UP_SECONDS = scale(30, 300)  # left out of the slopes: the first batches, the dashboard's first page
pytestmark = pytest.mark.timeout(SECONDS + 600)


def _kafka_windows(bootstrap: str, topic: str) -> dict:
    """(window_start as naive UTC, zipcode) -> the highest count the Kafka sink sent for it (counts only grow)."""
    windows = {}
    for _, _, _, value in consume_all(bootstrap, topic):
        row = orjson.loads(value)
        start = datetime.datetime.fromisoformat(row["window_start"].replace("Z", "+00:00")).replace(tzinfo=None)
        key = (start, row["zipcode"])
        windows[key] = max(windows.get(key, 0), row["count"])
    return windows


def test_a_soak_keeps_memory_and_lag_flat_and_every_sink_exact(kafka_bootstrap, topic_factory, mysql_url, tmp_path,
                                                               capsys):
    topic = topic_factory(partitions=4, prefix="soak")
    windows_topic = topic_factory(partitions=1, prefix="soak-windows")
    group = f"g-{uuid.uuid4().hex}"
    reports = []
    spec = ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=RATE * SECONDS, rate=RATE,
                       partitions=4, zipcodes=200, malformed_share=0.005, seed=30)
    producer = threading.Thread(target=lambda: reports.append(produce(spec)), name="producer")
    with scratch_database(mysql_url) as db_url:
        job = JobProcess([f"--topic={topic}", f"--bootstrap-servers={kafka_bootstrap}", f"--group-id={group}",
                          "--trigger=processing-time=1s", "--starting-offsets=earliest",
                          "--sink=hits=parquet", f"--parquet-path={tmp_path / 'hits'}",
                          f"--dead-letter-path={tmp_path / 'dead'}",
                          "--sink=zip_counts=jdbc:complete", f"--jdbc-url={db_url}",
                          "--sink=zip_window_counts=kafka:update", f"--output-topic={windows_topic}",
                          "--dashboard", f"--dashboard-port={free_port()}"], tmp_path / "job.log")
        try:
            with Sampler(job, kafka_bootstrap, group, topic, SAMPLE_SECONDS) as sampler:
                producer.start()
                producer.join(SECONDS + 300)
                assert reports, "the producer did not finish"
                report = reports[0]
                expected_hits = {(partition, offset) for *_, partition, offset in report.events}
                windows_ref = window_reference(report.events)

                def exact() -> bool:
                    return (dict(table_rows(db_url, "zip_test")) == dict(report.zip_counts) and
                            len(parquet_coordinates(str(tmp_path / "hits"))) >= len(expected_hits) and
                            _kafka_windows(kafka_bootstrap, windows_topic) == windows_ref)
                wait_until(exact, 240, interval=5)
            zip_got = dict(table_rows(db_url, "zip_test"))
        finally:
            exit_code = job.stop()
    hits_lost, hits_dup = record_diff(parquet_coordinates(str(tmp_path / "hits")), expected_hits)
    zip_lost, zip_dup = count_diff(zip_got, dict(report.zip_counts))
    win_lost, win_dup = count_diff(_kafka_windows(kafka_bootstrap, windows_topic), windows_ref)

    samples = [s for s in sampler.samples if s.lag >= 0]
    steady = [s for s in samples if s.seconds >= WARM_UP_SECONDS and s.seconds <= SECONDS]
    slopes = {role: slope_per_minute([(s.seconds, s.rss_mb.get(role, 0.0)) for s in steady])
              for role in ("driver", "prism")}
    lag_slope = slope_per_minute([(s.seconds, s.lag) for s in steady])
    with capsys.disabled():
        print("\nSOAK | s | driver MB | prism MB | lag")
        for s in samples:
            print(f"SOAK | {s.seconds:.0f} | {s.rss_mb.get('driver', 0):.0f} | {s.rss_mb.get('prism', 0):.0f} | "
                  f"{s.lag}")
    print_figures(capsys, "soak", 1, RATE * SECONDS, hits_lost + zip_lost + win_lost, hits_dup + zip_dup + win_dup,
                  seconds=SECONDS, rate=RATE, samples=len(samples),
                  driver_slope_mb_min=f"{slopes['driver']:.2f}", prism_slope_mb_min=f"{slopes['prism']:.2f}",
                  lag_max=max(s.lag for s in steady), lag_slope_per_min=f"{lag_slope:.0f}",
                  peak_mb=f"{sampler.peak_mb():.0f}", exit_code=exit_code)
    assert (hits_lost, hits_dup, zip_lost, zip_dup, win_lost, win_dup) == (0, 0, 0, 0, 0, 0), job.tail()
    assert exit_code == 0, job.tail()
    assert max(s.lag for s in steady) < RATE * 10, "the lag stayed within 10 s of input"
    if SECONDS >= 1800:  # the full form's bar; 2 minutes are too short to read a slope from
        assert slopes["driver"] < 1.0 and slopes["prism"] < 1.0, slopes
        assert lag_slope < RATE * 0.1, "lag does not grow"
