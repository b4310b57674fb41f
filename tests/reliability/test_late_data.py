"""Late data on Prism against the real broker and MariaDB: hits later than the watermark delay are counted in
`late_records` (the Beam metric and the progress JSON the dashboard reads), and kept out of the windows, whose counts
equal a DuckDB reference without them; the running totals (zip_counts) still count them, as Spark's do.

The reference applies the documented rule to the generator's record of what Kafka acknowledged: per partition, in
offset order, a hit is late when its hittime is older than the partition's highest hittime so far minus the delay.
"""
from __future__ import annotations

import random
import socket
import time
import urllib.request
import uuid

import apache_beam as beam
import orjson
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

import runners
from hitstream import server
from hitstream.job import start_for_job
from hitstream.generator import ProduceSpec, produce
from pipelines.blog import build_pipeline
from pipelines.options import HitstreamOptions
from tests.collect import CollectFn, collected
from tests.reliability import fuzz
from tests.reliability.faults import (UTC, count_diff, late_flags, print_figures, scratch_database, table_rows,
                                      wait_until, window_reference)
from tests.reliability.scale import scale

pytestmark = pytest.mark.timeout(scale(300, 900))

DELAY_S = 600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        body = response.read()
    return orjson.loads(body) if path.startswith("/progress") else body.decode()


def _late_metric(result) -> int:
    counters = result.metrics().query(beam.metrics.MetricsFilter().with_name("late_records"))["counters"]
    return sum(c.committed or 0 for c in counters)


def test_late_hits_are_counted_shown_on_the_dashboard_and_kept_out_of_the_windows(
        kafka_bootstrap, topic_factory, mysql_url, capsys):
    topic = topic_factory(partitions=4, prefix="late")
    # Three hours of event time ending an hour ago, all produced before the job starts: each partition is read in
    # offset order, and by the time a caught-up partition's watermark follows the others' event time, every hit of
    # it has been read.
    start_ms = (int(time.time()) // 3600 - 4) * 3600 * 1000
    report = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=scale(20_000, 100_000),
                                 partitions=4, zipcodes=20, late_share=0.05, late_by_seconds=1800,
                                 malformed_share=0.01, event_time_start_ms=start_ms,
                                 event_time_span_seconds=3 * 3600, seed=41))
    late = late_flags(report.events, DELAY_S)
    expected_late = sum(late)
    assert 0 < expected_late < len(late) // 10  # the input has late hits (the generator's late_share is 5%)
    windows_ref = window_reference([e for e, flag in zip(report.events, late) if not flag])
    zip_ref = dict(report.zip_counts)  # running totals keep late hits
    port = _free_port()

    with scratch_database(mysql_url) as db_url:
        args = [f"--topic={topic}", f"--bootstrap-servers={kafka_bootstrap}", "--trigger=processing-time=1s",
                f"--group-id=g-{topic}", "--starting-offsets=earliest", f"--watermark-delay={DELAY_S}",
                "--sink=zip_counts=jdbc:complete", "--sink=zip_window_counts=jdbc:update", f"--jdbc-url={db_url}",
                "--dashboard", f"--dashboard-port={port}"]
        options = PipelineOptions(args + runners.pipeline_args("prism", streaming=True))
        query = start_for_job(options.view_as(HitstreamOptions), "prism")  # as `hitstream run` does
        pipeline = beam.Pipeline(options=options)
        build_pipeline(pipeline, options)
        result = pipeline.run()
        query.bind(result)
        seen = {}
        try:
            def settled():
                seen["progress"] = _get(port, "/progress") or {}
                seen["windows"] = {(start, zipcode): n for start, _, zipcode, n in
                                   table_rows(db_url, "zip_window_counts")}
                seen["zip_test"] = dict(table_rows(db_url, "zip_test"))
                return (seen["progress"].get("totalLateRows") == expected_late and seen["windows"] == windows_ref
                        and seen["zip_test"] == zip_ref)

            wait_until(settled, 120, interval=2.0)
            time.sleep(3)  # a few more triggers: the late count must not grow past the reference
            settled()
            metric = _late_metric(result)
            app_js = _get(port, "/app.js")
        finally:
            result.cancel()
            query.close()
            server.stop(port)

    win_lost, win_extra = count_diff(seen["windows"], windows_ref)
    zip_lost, zip_extra = count_diff(seen["zip_test"], zip_ref)
    print_figures(capsys, "late data", 1, report.produced, win_lost + zip_lost, win_extra + zip_extra,
                  late_reference=expected_late, late_metric=metric,
                  late_dashboard=seen["progress"].get("totalLateRows"), dead_letters=report.malformed)
    assert seen["progress"]["totalLateRows"] == expected_late, "the dashboard's progress JSON counts the late hits"
    assert metric == expected_late, "the late_records metric counts the late hits"
    assert seen["windows"] == windows_ref, "windows equal the reference without the late hits"
    assert seen["zip_test"] == zip_ref, "running totals keep the late hits"
    assert "p.totalLateRows" in app_js and "tile-late" in app_js  # the page shows that field in its late tile


def test_a_dead_letter_does_not_move_the_watermark(kafka_bootstrap, topic_factory, capsys):
    topic = topic_factory(partitions=1, prefix="late-dead")
    t0 = 1795478400000  # 2026-11-23T19:20:00Z
    rng = random.Random(5)

    def hit(ms: int) -> fuzz.Message:
        key, value, (hittime_ms, zipcode) = fuzz.valid(rng, ms)
        return fuzz.Message("valid", key, value, 0, (hittime_ms, zipcode))

    # 100 hits over 10 minutes, a bad message (zipcode is a number) whose hittime is a day ahead, 100 more hits over
    # the next 10 minutes. The hits are in time order: none is late.
    batch = [hit(t0 + i * 6000) for i in range(100)]
    batch.append(fuzz.Message("wrong_types", None, orjson.dumps({"hittime": t0 + 86_400_000, "zipcode": 5}), 0))
    batch += [hit(t0 + 600_000 + i * 6000) for i in range(100)]
    fuzz.produce(kafka_bootstrap, topic, batch, max_message_bytes=1024 * 1024)
    windows_ref = window_reference([m.hit for m in batch if m.valid])
    name = uuid.uuid4().hex
    args = [f"--topic={topic}", f"--bootstrap-servers={kafka_bootstrap}", "--trigger=available-now",
            f"--group-id=g-{topic}", f"--watermark-delay={DELAY_S}", "--sink=zip_window_counts=console:append",
            "--console-num-rows=1"]
    options = PipelineOptions(args + runners.pipeline_args("prism", streaming=False))
    pipeline = beam.Pipeline(options=options)
    outputs = build_pipeline(pipeline, options)
    outputs["zip_window_counts:append"] | "Collect" >> beam.ParDo(CollectFn(name))
    result = pipeline.run()
    result.wait_until_finish()
    got = {(row.window_start.astimezone(UTC).replace(tzinfo=None), row.zipcode): row.count
           for _, row in collected(name)}
    lost, extra = count_diff(got, windows_ref)
    print_figures(capsys, "dead letter with a far-future hittime", 1, len(batch), lost, extra,
                  late_metric=_late_metric(result))
    assert _late_metric(result) == 0
    assert got == windows_ref
