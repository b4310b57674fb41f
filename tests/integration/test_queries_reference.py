"""The blog's queries on the real broker, on Prism, against an independent DuckDB computation.

50k hits over 3 hours of event time, with out-of-order hits (some later than the watermark delay) and malformed
messages. The reference applies the documented lateness rule to the generator's own record of what Kafka
acknowledged: per partition, in offset order, a hit is late when its hittime is older than the partition's highest
hittime so far minus the watermark delay.
"""
import uuid

import apache_beam as beam
import duckdb
from apache_beam.options.pipeline_options import PipelineOptions

import runners
from hitstream.generator import ProduceSpec, produce
from pipelines.blog import build_pipeline
from tests.collect import CollectFn, collected
from tests.reliability.faults import late_flags

DELAY_S = 600
START_MS = 1795478400000  # 2026-11-23T19:20:00Z


def test_queries_equal_duckdb_reference(kafka_bootstrap, topic_factory):
    topic = topic_factory(partitions=4, prefix="queries-ref")
    report = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=50_000, partitions=4,
                                 zipcodes=20, late_share=0.03, late_by_seconds=1500, malformed_share=0.02,
                                 event_time_start_ms=START_MS, event_time_span_seconds=3 * 3600, seed=11))
    late = late_flags(report.events, DELAY_S)
    assert 0 < sum(late) < len(late)  # the input really has late hits, and mostly on-time ones

    db = duckdb.connect()
    db.execute("CREATE TABLE events (hittime_ms BIGINT, zipcode VARCHAR, isp VARCHAR, late BOOLEAN)")
    db.executemany("INSERT INTO events VALUES (?, ?, ?, ?)",
                   [(e[0], e[1], e[2], flag) for e, flag in zip(report.events, late)])
    zip_ref = dict(db.execute("SELECT zipcode, count(*) FROM events GROUP BY zipcode").fetchall())
    isp_ref = dict(db.execute("SELECT isp, count(*) FROM events GROUP BY isp").fetchall())
    # Windows [start, start + 10 min) with start = k * 5 min + 2 min: each hit is in the window starting at its
    # bucket and in the one before.
    window_ref = {(start, zipcode): n for start, zipcode, n in db.execute("""
        WITH buckets AS (
            SELECT zipcode, (hittime_ms - 120000) // 300000 * 300000 + 120000 AS bucket
            FROM events WHERE NOT late)
        SELECT start, zipcode, count(*) FROM (
            SELECT zipcode, bucket AS start FROM buckets
            UNION ALL SELECT zipcode, bucket - 300000 FROM buckets)
        GROUP BY start, zipcode""").fetchall()}

    name = uuid.uuid4().hex
    args = [f"--topic={topic}", f"--bootstrap-servers={kafka_bootstrap}", "--trigger=available-now",
            f"--group-id=g-{topic}", f"--watermark-delay={DELAY_S}", "--sink=zip_counts=console:update",
            "--sink=isp_counts=console:update", "--sink=zip_window_counts=console:append"]
    options = PipelineOptions(args + runners.pipeline_args("prism", streaming=False))
    pipeline = beam.Pipeline(options=options)
    outputs = build_pipeline(pipeline, options)
    for query in ("zip_counts:update", "isp_counts:update", "zip_window_counts:append", "dead_letter"):
        outputs[query] | f"Collect{query}" >> beam.ParDo(CollectFn(f"{name}-{query}"))
    result = pipeline.run()
    result.wait_until_finish()

    def rows(query):
        return [row for _, row in collected(f"{name}-{query}")]

    zip_rows, isp_rows, window_rows = rows("zip_counts:update"), rows("isp_counts:update"), \
        rows("zip_window_counts:append")
    # available-now: one final row per key, so the rows equal the reference row for row.
    assert len(zip_rows) == len(zip_ref) and {r.zipcode: r.count for r in zip_rows} == zip_ref
    assert len(isp_rows) == len(isp_ref) and {r.isp: r.count for r in isp_rows} == isp_ref
    got_windows = {(int(r.window_start.timestamp() * 1000), r.zipcode): r.count for r in window_rows}
    assert len(window_rows) == len(got_windows) == len(window_ref)
    assert got_windows == window_ref
    assert all((r.window_end - r.window_start).total_seconds() == 600 for r in window_rows)
    assert len(rows("dead_letter")) == report.malformed
    late_metric = result.metrics().query(beam.metrics.MetricsFilter().with_name("late_records"))["counters"]
    assert sum(c.committed for c in late_metric) == sum(late)
