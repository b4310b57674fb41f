"""The windowed query under load (issue 13): the blog's full sink wiring on 200k hits with bounded disorder and hits
on window boundaries, run again and again, every window compared with an independent DuckDB reference.

Input, produced once per session: 200,000 valid hits and about 6,000 malformed messages on 4 partitions, five hours
of event time in one night of March 2026, in order per partition apart from up to 30 s of disorder, and ~1% of hits
moved back onto a window boundary (at most 2.5 minutes). Every hit is within the 10-minute watermark delay, so none
is late (the reference applies the lateness rule and checks that).

Each run is `available-now` with hits -> Parquet, zip_counts and zip_window_counts -> MariaDB complete,
zip_window_counts -> Parquet append, isp_counts -> Kafka update, dead letters -> Parquet and a topic, and a
checkpoint dir. A run passes when every sink equals the reference and the window accounting metrics balance.

Runs: `scale(1, 10)` on Prism (HITSTREAM_STRESS_RUNS overrides), `scale(1, 5)` on the direct runner, and
`scale(1, 2)` on Prism with a deliberately slow foreach sink (50 ms per batch) to shake the timing.
"""
from __future__ import annotations

import collections
import datetime
import os
import time
import uuid

import apache_beam as beam
import duckdb
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

import runners
from hitstream.generator import ProduceSpec, produce
from pipelines.blog import build_pipeline
from tests.reliability import faults
from tests.reliability.scale import scale
from transforms.queries import window_accounting

pytestmark = pytest.mark.timeout(900)

COUNT = 206_000  # ~200,000 valid and ~6,000 malformed
DELAY_S = 600
NIGHT_MS = 1773612000000  # 2026-03-15T22:00:00Z
PRISM_RUNS = int(os.environ.get("HITSTREAM_STRESS_RUNS", scale(1, 10)))


def slow_batch(rows, batch_id) -> None:
    """A foreach sink (`--foreach-writer`) that takes 50 ms per batch: fused with the read, it stretches every read
    call, and so the bundles' timing."""
    time.sleep(0.05)


@pytest.fixture(scope="module")
def stress_input(kafka_bootstrap, topic_factory):
    topic = topic_factory(partitions=4, prefix="stress")
    report = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=COUNT, partitions=4,
                                 zipcodes=300, malformed_share=0.03, event_time_start_ms=NIGHT_MS,
                                 event_time_span_seconds=5 * 3600, disorder_seconds=30, boundary_share=0.02,
                                 seed=13))
    assert not any(faults.late_flags(report.events, DELAY_S)), "the input is meant to hold no late hit"
    on_boundary = sum(1 for e in report.events if (e[0] - 120_000) % 300_000 == 0)
    assert on_boundary >= len(report.events) // 200, on_boundary  # ~1% sit exactly on a boundary
    return topic, report


def _args(topic: str, work, db_url: str, out_topic: str, dead_topic: str, slow: bool) -> list:
    args = [f"--topic={topic}", "--bootstrap-servers=127.0.0.1:9092", f"--group-id=g-{uuid.uuid4().hex}",
            "--starting-offsets=earliest", "--trigger=available-now", f"--watermark-delay={DELAY_S}",
            "--sink=hits=parquet:append", f"--parquet-path={work / 'hits'}",
            "--sink=zip_counts=jdbc:complete", "--sink=zip_window_counts=jdbc:complete", f"--jdbc-url={db_url}",
            "--sink=zip_window_counts=parquet:append",
            "--sink=isp_counts=kafka:update", f"--output-topic={out_topic}",
            f"--dead-letter-path={work / 'dead'}", f"--dead-letter-topic={dead_topic}",
            f"--checkpoint-dir={work / 'checkpoint'}"]
    if slow:
        args += ["--sink=hits=foreach", f"--foreach-writer={__name__}:slow_batch"]
    return args


def _parquet_windows(path) -> dict:
    """(window_start, zipcode) -> count from the Parquet append output (naive UTC, as the reference)."""
    db = duckdb.connect()
    db.execute("SET TimeZone = 'UTC'")
    rows = db.execute(f"SELECT window_start, zipcode, count FROM read_parquet('{path}/**/*.parquet', "
                      "hive_partitioning=true, hive_types_autocast=false)").fetchall()
    got = collections.Counter()
    for start, zipcode, n in rows:  # an append row is final: a window appearing twice would be a duplicate
        got[(start.astimezone(datetime.timezone.utc).replace(tzinfo=None) if start.tzinfo else start, zipcode)] += n
    return dict(got)


def _run_and_check(runner: str, stress_input, tmp_path, mysql_url, topic_factory, capsys, slow: bool = False):
    topic, report = stress_input
    out_topic, dead_topic = topic_factory(partitions=1, prefix="isp"), topic_factory(partitions=1, prefix="dlq")
    windows_ref = faults.window_reference(report.events)
    with faults.scratch_database(mysql_url) as db_url:
        options = PipelineOptions(_args(topic, tmp_path, db_url, out_topic, dead_topic, slow) + runners.pipeline_args(
            runner, streaming=False, checkpoint_dir=str(tmp_path / "checkpoint")))
        pipeline = beam.Pipeline(options=options)
        build_pipeline(pipeline, options)
        started = time.monotonic()
        result = pipeline.run()
        assert result.wait_until_finish() == beam.runners.runner.PipelineState.DONE
        seconds = time.monotonic() - started
        jdbc_windows = {(start, zipcode): n for start, _, zipcode, n in faults.table_rows(db_url, "zip_window_counts")}
        zip_test = dict(faults.table_rows(db_url, "zip_test"))
    accounting = window_accounting(result.metrics())
    malformed = set(report.malformed_at)
    figures = {
        "jdbc windows": faults.count_diff(jdbc_windows, windows_ref),
        "parquet windows": faults.count_diff(_parquet_windows(tmp_path / "zip_window_counts"), windows_ref),
        "jdbc zip_counts": faults.count_diff(zip_test, dict(report.zip_counts)),
        "kafka isp_counts": faults.count_diff(faults.latest_counts("127.0.0.1:9092", out_topic),
                                              dict(report.isp_counts)),
        "parquet hits": faults.record_diff(faults.parquet_coordinates(str(tmp_path / "hits")),
                                           {(e[3], e[4]) for e in report.events}),
        "parquet dead letters": faults.record_diff(faults.parquet_coordinates(str(tmp_path / "dead")), malformed),
        "dead letter topic": faults.record_diff(faults.dead_letter_coordinates("127.0.0.1:9092", dead_topic),
                                                malformed),
    }
    low_windows = {start for (start, zipcode), n in windows_ref.items() if jdbc_windows.get((start, zipcode), 0) < n}
    faults.print_figures(
        capsys, f"window stress ({runner}{', slow sink' if slow else ''})", 1, report.produced,
        sum(lost for lost, _ in figures.values()), sum(dup for _, dup in figures.values()),
        seconds=round(seconds, 1), windows=len(windows_ref), windows_low=len(low_windows),
        hits_in=accounting.hits_in, late=accounting.late, in_final_windows=accounting.hits_in_final_windows,
        per_sink=",".join(f"{name.replace(' ', '_')}:{lost}/{dup}" for name, (lost, dup) in figures.items()))
    assert all(figure == (0, 0) for figure in figures.values()), figures
    # The accounting: every valid hit went into its windows or was counted late, and each query's final windows
    # hold all of those that went in (two windows per hit; two windowed queries here, jdbc and parquet).
    assert accounting.hits_in == 2 * report.well_formed, accounting
    assert accounting.late == 0, accounting
    assert accounting.balanced, accounting


@pytest.mark.parametrize("run", range(PRISM_RUNS))
def test_every_window_on_prism(run, stress_input, tmp_path, mysql_url, topic_factory, capsys):
    _run_and_check("prism", stress_input, tmp_path, mysql_url, topic_factory, capsys)


@pytest.mark.parametrize("run", range(scale(1, 2)))
def test_every_window_on_prism_with_a_slow_sink(run, stress_input, tmp_path, mysql_url, topic_factory, capsys):
    _run_and_check("prism", stress_input, tmp_path, mysql_url, topic_factory, capsys, slow=True)


@pytest.mark.parametrize("run", range(scale(1, 5)))
def test_every_window_on_direct(run, stress_input, tmp_path, mysql_url, topic_factory, capsys):
    _run_and_check("direct", stress_input, tmp_path, mysql_url, topic_factory, capsys)
