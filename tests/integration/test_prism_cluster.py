"""The prism-cluster preset: Python SDK workers in processes of their own, started by Beam's boot program, which
installs hitstream from the staged setup.py (runners/prism_cluster.py, stack/python_worker.py).

The runner conformance test covers its sink contents; these tests cover what only a cluster shows: the workers
import the staged package, not the checkout; a streaming job updates its Kafka sink while the producer runs and
stops cleanly; and what needs the workers in the launcher's process is refused before the job starts.
"""
import dataclasses
import json
import os
import threading
import time
import uuid
from pathlib import Path

import apache_beam as beam
import orjson
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState
from confluent_kafka import Consumer

import runners
from hitstream.generator import ProduceSpec, produce
from hitstream.job_metrics import JobMetrics
from hitstream.progress import StreamingQuery
from pipelines.blog import build_pipeline, run
from stack import paths
from stack.python_worker import VENV_ROOT
from transforms.telemetry import worker_identity

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(300)


def test_workers_import_the_staged_package(tmp_path):
    options = PipelineOptions(runners.pipeline_args("prism-cluster", streaming=False, job_name="staged"))
    with beam.Pipeline(options=options) as pipeline:
        (pipeline | beam.Create([0, 1, 2, 3]) | beam.Map(lambda _: json.dumps(worker_identity()))
         | beam.io.WriteToText(str(tmp_path / "identity")))
    identities = [json.loads(line) for path in tmp_path.glob("identity*") for line in path.read_text().splitlines()]
    assert len(identities) == 4
    for identity in identities:
        assert identity["pid"] != os.getpid(), "the worker ran in the launcher's process"
        where = Path(identity["transforms"])
        assert not where.is_relative_to(REPO), f"the worker imported the checkout: {where}"
        assert where.is_relative_to(VENV_ROOT) and "site-packages" in where.parts, where
    # The boot program removes each worker's venv when the worker ends; the watcher does it when Prism kills it.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (list(Path(VENV_ROOT).glob("beam-venv-worker-*")) or
                                           list((paths.cache_root() / "workers").glob("worker-*"))):
        time.sleep(1)
    assert not list((paths.cache_root() / "workers").glob("worker-*")), "a worker's directory was left behind"


def _tail(bootstrap: str, topic: str, stop: threading.Event, seen: list) -> None:
    """Every message of `topic` as (arrival time, key, count), until `stop`."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"tail-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    try:
        while not stop.is_set():
            for message in consumer.consume(num_messages=500, timeout=0.5):
                if message.error() is None:
                    seen.append((time.time(), message.key().decode(), orjson.loads(message.value())["count"]))
    finally:
        consumer.close()


def test_streaming_counts_change_while_producing_and_stop_cleanly(kafka_bootstrap, topic_factory):
    topic = topic_factory(partitions=3, prefix="cluster-live")
    out_topic = topic_factory(partitions=1, prefix="cluster-live-out")
    args = [f"--topic={topic}", f"--bootstrap-servers={kafka_bootstrap}", "--trigger=processing-time=1s",
            f"--group-id=g-{topic}", "--starting-offsets=earliest", "--sink=zip_counts=kafka:update",
            f"--output-topic={out_topic}"]
    options = PipelineOptions(args + runners.pipeline_args("prism-cluster", streaming=True, job_name="live"))
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, options)
    seen, stop = [], threading.Event()
    tail = threading.Thread(target=_tail, args=(kafka_bootstrap, out_topic, stop, seen), daemon=True)
    tail.start()
    query = StreamingQuery(name="cluster-live", interval=1.0, registry=JobMetrics()).start()
    result = pipeline.run()
    query.bind(result)
    try:
        # The workers take seconds to start (a venv, the staged package installed into it), more on a loaded
        # machine: a first few hits, and the measured stream once their counts are out.
        warm_up = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=30, partitions=3,
                                      zipcodes=5, skew=0.0, malformed_share=0.0, seed=1))
        deadline = time.monotonic() + 180
        while not seen and time.monotonic() < deadline:
            time.sleep(0.5)
        assert result.state == PipelineState.RUNNING and seen, f"no count within 180 s: {result.state}"
        spec = ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=6000, rate=200, partitions=3,
                           zipcodes=5, skew=0.0, malformed_share=0.02)
        producing_from = time.time()
        main = produce(spec)
        produced_at = time.time()
        report = dataclasses.replace(main, produced=main.produced + warm_up.produced,
                                     zip_counts=main.zip_counts + warm_up.zip_counts)
        latest = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            latest = {}
            for _, key, count in list(seen):
                latest[key] = max(latest.get(key, 0), count)
            progress = query.last_progress or {}
            if latest == dict(report.zip_counts) and progress.get("totalInputRows") == report.produced:
                break
            time.sleep(0.5)
        state_before_stop = result.state
        records = query.recent_progress
    finally:
        result.cancel()
        query.close()
        stop.set()
    stopped = time.monotonic()
    while not PipelineState.is_terminal(result.state) and time.monotonic() < stopped + 30:
        time.sleep(0.5)
    assert latest == dict(report.zip_counts), "the Kafka sink's last count per zipcode equals the reference"
    assert state_before_stop == PipelineState.RUNNING
    during = [(key, count) for at, key, count in seen if producing_from <= at < produced_at]
    # Counts arrived while the producer was writing, and one zipcode was updated three times or more.
    per_zip = {}
    for key, count in during:
        per_zip.setdefault(key, set()).add(count)
    assert len(during) >= 5 and max(len(counts) for counts in per_zip.values()) >= 3, during[:10]
    assert result.state == PipelineState.CANCELLED, f"the job did not stop cleanly: {result.state}"
    # The progress records, built from the job service's metrics alone (the workers share no memory with this
    # process): every record read and parsed once, the dead letters, no late rows, each partition caught up.
    last = records[-1]
    assert last["totalInputRows"] == report.produced and last["totalDeadLetterRows"] == report.malformed, last
    assert sum(r["numInputRows"] for r in records) == report.produced
    assert last["totalLateRows"] == 0 and last["eventTime"]["watermark"] is not None
    (source,) = last["sources"]
    assert set(source["lag"][topic]) == {"0", "1", "2"} and not any(source["lag"][topic].values()), source
    assert max(r["inputRowsPerSecond"] for r in records) > 0 and max(r["processedRowsPerSecond"] for r in records) > 0
    assert {s["description"] for s in last["sinks"]} == {f"kafka.zip_counts.{out_topic}"}


def test_refuses_what_needs_workers_in_the_launcher(tmp_path, capsys, kafka_bootstrap, topic_factory):
    common = ["--runner", "prism-cluster", f"--topic={topic_factory()}", f"--bootstrap-servers={kafka_bootstrap}",
              "--trigger=available-now"]
    assert run(common + ["--sink=zip_counts=memory:complete"]) == 2
    assert "memory sink needs --environment_type=LOOPBACK" in capsys.readouterr().err
    assert run(common + [f"--checkpoint-dir={tmp_path}", "--sink=zip_counts=console:complete"]) == 2
    assert "--checkpoint-dir" in capsys.readouterr().err
