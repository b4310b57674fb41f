"""The memory sink on a running streaming job (Prism, LOOPBACK): SQL sees the counts grow while hits are produced,
in-process (`memory_sql`) and through `hitstream sql`'s HTTP endpoint, and ends equal to the generator's
reference. The remote-runner refusal happens before anything is submitted."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

import runners
from hitstream import server
from hitstream.generator import ProduceSpec, produce
from pipelines.blog import build_pipeline
from hitstream.sql_client import query_remote
from runners.locality import RemoteRunnerError
from transforms.sinks.memory_store import STORE, SqlError, memory_sql

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sql_sees_counts_grow_while_the_job_runs(kafka_bootstrap, topic_factory):
    topic = topic_factory(partitions=3, prefix="sink-memory")
    port = _free_port()
    STORE.drop("zip_counts")
    args = [f"--topic={topic}", f"--bootstrap-servers={kafka_bootstrap}", "--trigger=processing-time=1s",
            f"--group-id=g-{topic}", "--sink=zip_counts=memory:update", f"--dashboard-port={port}"]
    options = PipelineOptions(args + runners.pipeline_args("prism", streaming=True))
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, options)
    server.ensure_started(port)  # the SQL server `hitstream run` starts beside a job with a memory sink
    result = pipeline.run()
    reports = []
    spec = ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=3000, rate=300, partitions=3,
                       zipcodes=6, skew=0.0, keep_events=False)
    producer = threading.Thread(target=lambda: reports.append(produce(spec)))
    totals, remote_totals = [], []
    try:
        producer.start()
        while producer.is_alive():
            try:
                totals.append(memory_sql("SELECT coalesce(sum(count), 0) FROM zip_counts")[0][0])
                remote_totals.append(query_remote("SELECT sum(count) AS hits FROM zip_counts", port=port).rows[0][0])
            except (SqlError, SystemExit):  # the table appears with the first trigger
                pass
            time.sleep(0.5)
        producer.join()
        report = reports[0]
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                final = dict(memory_sql("SELECT zipcode, count FROM zip_counts"))
            except SqlError:
                final = {}
            if final == dict(report.zip_counts):
                break
            time.sleep(0.5)
        remote = dict(query_remote("SELECT zipcode, count FROM zip_counts", port=port).rows)
        cli = subprocess.run([sys.executable, "-m", "hitstream.cli", "sql", "--port", str(port),
                              "SELECT count(*) AS zipcodes FROM zip_counts"],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
    finally:
        result.cancel()
        server.stop(port)
    assert final == dict(report.zip_counts) and remote == final
    # The counts grew while the producer was still writing, seen both in-process and over HTTP.
    growing = [t for t in totals if t]
    assert len(set(growing)) >= 3 and growing == sorted(growing) and growing[-1] < report.well_formed
    assert len({t for t in remote_totals if t}) >= 3
    assert cli.returncode == 0 and "zipcodes" in cli.stdout and "6" in cli.stdout, cli.stderr


def test_a_remote_runner_refuses_the_memory_sink_before_submitting(kafka_bootstrap):
    args = [f"--bootstrap-servers={kafka_bootstrap}", "--trigger=available-now",
            "--sink=zip_window_counts=memory:complete"]
    options = PipelineOptions(args + runners.pipeline_args("dataflow", streaming=False))
    with pytest.raises(RemoteRunnerError, match="Dataflow"):
        build_pipeline(beam.Pipeline(options=options), options)
    options = PipelineOptions(args + ["--runner=FlinkRunner", "--flink_master=flink-cluster:8081"])
    with pytest.raises(RemoteRunnerError, match="Flink cluster"):
        build_pipeline(beam.Pipeline(options=options), options)
