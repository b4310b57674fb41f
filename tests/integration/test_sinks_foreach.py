"""The foreach sink on Prism with the real broker: the fan-out example sends one query to two systems (a Kafka topic
and a SQLite table), and both equal the generator's reference; foreachBatch sees every row."""
from __future__ import annotations

import json
import uuid

import apache_beam as beam
import pytest
import sqlalchemy as sa
from apache_beam.options.pipeline_options import PipelineOptions

import runners
from hitstream.generator import ProduceSpec, produce
from pipelines.blog import build_pipeline
from tests.integration.test_sinks_kafka import consume_all
from transforms.sinks.foreach import foreach_batch

pytestmark = pytest.mark.timeout(600)


class _AppendBatches:
    """fn(rows, batch_id) for foreach_batch: one JSON line per batch (picklable, runs in the worker)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, rows, batch_id) -> None:
        with open(self.path, "a") as out:
            out.write(json.dumps({"batch_id": batch_id, "rows": [list(r) for r in rows]}) + "\n")


def test_fan_out_to_kafka_and_sqlite_and_foreach_batch(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(partitions=3, prefix="sink-foreach")
    out_topic = topic_factory(partitions=1, prefix="sink-foreach-out")
    report = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=6000, partitions=3,
                                 zipcodes=20, malformed_share=0.01, seed=23, keep_events=False))
    sqlite_url = f"sqlite:///{tmp_path}/fanout.db"
    args = [f"--topic={topic}", f"--bootstrap-servers={kafka_bootstrap}", "--trigger=available-now",
            f"--group-id=g-{uuid.uuid4().hex}", "--sink=zip_counts=foreach:update", "--sink=isp_counts=console:update",
            f"--output-topic={out_topic}", f"--jdbc-url={sqlite_url}"]
    options = PipelineOptions(args + runners.pipeline_args("prism", streaming=False))
    pipeline = beam.Pipeline(options=options)
    outputs = build_pipeline(pipeline, options)
    batches = tmp_path / "batches.jsonl"
    outputs["isp_counts:update"] | "IspBatches" >> foreach_batch(_AppendBatches(str(batches)), name="isp")
    pipeline.run().wait_until_finish()

    kafka = {}
    for key, value in consume_all(kafka_bootstrap, out_topic):
        zipcode, count = value.decode().rsplit(":", 1)
        assert key == zipcode.encode()
        kafka[zipcode] = max(kafka.get(zipcode, 0), int(count))
    with sa.create_engine(sqlite_url).connect() as conn:
        sqlite = dict(conn.execute(sa.text("SELECT zip, count FROM zip_test")).all())
    assert kafka == dict(report.zip_counts) and sqlite == dict(report.zip_counts)

    isp = {}
    for line in batches.read_text().splitlines():
        for name, count in json.loads(line)["rows"]:
            isp[name] = max(isp.get(name, 0), count)
    assert isp == dict(report.isp_counts)
