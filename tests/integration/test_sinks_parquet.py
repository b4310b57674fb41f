"""The Parquet sink against the real broker and real files: contents equal the generator's reference, read back with
DuckDB; and each Kafka record lands exactly once after SIGKILL and restart, both of a real streaming job on Prism and
of a writer process killed again and again at random moments mid-write.

The reference is what the generator wrote and Kafka acknowledged (`report.events`: partition and offset of every
well-formed hit), never the pipeline's own output.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import apache_beam as beam
import duckdb
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

import runners
from hitstream.generator import MALFORMED_VALUES, ProduceSpec, produce
from pipelines.blog import build_pipeline
from tests.unit.test_sinks_parquet import hit, writer_for
from transforms.sinks.parquet import (DEFAULT_COMMIT_DIR, TEMP_DIR, WriteDeadLettersToParquet, dataset, duckdb_source,
                                      spark_schema)

pytestmark = pytest.mark.timeout(900)

REPO = Path(__file__).resolve().parents[2]
START_MS = 1795478400000  # 2026-11-23T19:20:00Z


def _coordinates(path) -> list:
    return duckdb.sql(f'SELECT topic, partition, "offset" FROM {duckdb_source(str(path))}').fetchall()


def test_hits_and_dead_letters_equal_the_reference(kafka_bootstrap, topic_factory, tmp_path, prism_location):
    topic = topic_factory(partitions=4, prefix="sink-parquet")
    report = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=20_000, partitions=4,
                                 zipcodes=25, malformed_share=0.02, event_time_start_ms=START_MS,
                                 event_time_span_seconds=30 * 3600, seed=5))
    args = [f"--topic={topic}", f"--bootstrap-servers={kafka_bootstrap}", "--trigger=available-now",
            f"--group-id=g-{topic}", "--sink=hits=parquet:append", "--sink=zip_window_counts=parquet:append",
            f"--parquet-path={tmp_path}/out/hits", f"--checkpoint-dir={tmp_path}/ck"]
    options = PipelineOptions(args + runners.pipeline_args("prism", streaming=False))
    pipeline = beam.Pipeline(options=options)
    outputs = build_pipeline(pipeline, options)
    outputs["dead_letter"] | "WriteDeadLetters" >> WriteDeadLettersToParquet(
        str(tmp_path / "out" / "dead"), checkpoint_dir=str(tmp_path / "ck"))
    pipeline.run().wait_until_finish()

    db = duckdb.connect()
    db.execute("CREATE TABLE ref (hittime_ms BIGINT, zipcode VARCHAR, isp VARCHAR, p INTEGER, o BIGINT)")
    db.executemany("INSERT INTO ref VALUES (?, ?, ?, ?, ?)", report.events)
    hits = f"{duckdb_source(str(tmp_path / 'out' / 'hits'))}"
    # Every hit once, in the right zipcode= and day= folders (day = UTC date of hittime).
    missing_or_extra = db.execute(f"""
        (SELECT p, o, zipcode, strftime(to_timestamp(hittime_ms / 1000) AT TIME ZONE 'UTC', '%Y-%m-%d') FROM ref
         EXCEPT ALL SELECT partition, "offset", zipcode, day FROM {hits})
        UNION ALL
        (SELECT partition, "offset", zipcode, day FROM {hits}
         EXCEPT ALL SELECT p, o, zipcode, strftime(to_timestamp(hittime_ms / 1000) AT TIME ZONE 'UTC', '%Y-%m-%d')
         FROM ref)""").fetchall()
    assert missing_or_extra == []
    assert db.execute(f"SELECT count(*), count(DISTINCT day) FROM {hits}").fetchone() == (len(report.events), 2)

    # zip_window_counts in append mode: one final row per window and zipcode (10 min every 5, from 2 past).
    window_ref = set(db.execute("""
        WITH b AS (SELECT zipcode, (hittime_ms - 120000) // 300000 * 300000 + 120000 AS bucket FROM ref)
        SELECT epoch_ms(start), zipcode, count(*) FROM (
            SELECT zipcode, bucket AS start FROM b UNION ALL SELECT zipcode, bucket - 300000 FROM b)
        GROUP BY ALL""").fetchall())
    windows = set(db.execute(f"""SELECT window_start AT TIME ZONE 'UTC', zipcode, count
                                 FROM {duckdb_source(str(tmp_path / 'out' / 'zip_window_counts'))}""").fetchall())
    assert {(w.replace(tzinfo=None), z, c) for w, z, c in windows} == window_ref

    dead = db.execute(f'SELECT value, step FROM {duckdb_source(str(tmp_path / "out" / "dead"))}').fetchall()
    assert len(dead) == report.malformed and {value for value, _ in dead} <= set(MALFORMED_VALUES)
    assert {step for _, step in dead} == {"parse"}


def _run_job(topic: str, bootstrap: str, out: Path, checkpoint: Path, group: str, trigger: str,
             run_seconds: float = 0) -> subprocess.Popen:
    argv = ["--runner", "prism", f"--topic={topic}", f"--bootstrap-servers={bootstrap}", f"--trigger={trigger}",
            f"--group-id={group}", "--starting-offsets=earliest", "--sink=hits=parquet:append",
            f"--parquet-path={out}", f"--checkpoint-dir={checkpoint}", f"--run-seconds={run_seconds}"]
    code = f"import sys; from pipelines import blog; sys.exit(blog.run({argv!r}))"
    # A session of its own, so SIGKILL reaches the job and the Prism process it started, as a crash would.
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _files(path: Path) -> list:
    return list(path.rglob("part-*.parquet")) if path.exists() else []


def test_sigkill_mid_stream_and_restart_writes_every_record_once(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(partitions=3, prefix="sink-parquet-kill")
    out, checkpoint = tmp_path / "hits", tmp_path / "ck"
    group = f"g-{topic}"
    reports = []
    spec = ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=12_000, rate=1000, partitions=3,
                       zipcodes=30, malformed_share=0.01, seed=9)
    producer = threading.Thread(target=lambda: reports.append(produce(spec)))
    job = _run_job(topic, kafka_bootstrap, out, checkpoint, group, "processing-time=1s")
    producer.start()
    try:
        deadline = time.time() + 120
        while len(_files(out)) < 20 and time.time() < deadline and job.poll() is None:
            time.sleep(0.2)
        assert job.poll() is None, "the streaming job ended before it could be killed"
        assert _files(out), "the job wrote nothing in 120 s"
        os.killpg(job.pid, signal.SIGKILL)  # mid-stream: the producer is still writing
        job.wait(30)
        killed_at = time.time()
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    producer.join(60)
    report = reports[0]
    assert killed_at < time.time()
    written_before_restart = len(_coordinates(out))
    assert 0 < written_before_restart < len(report.events)

    # Restart on the same checkpoint and consumer group: it resumes from the committed offsets and replays the
    # uncommitted tail, which the sink must skip where it was already written.
    restart = _run_job(topic, kafka_bootstrap, out, checkpoint, group, "available-now")
    assert restart.wait(600) == 0
    reference = sorted((topic, e[3], e[4]) for e in report.events)
    assert sorted(_coordinates(out)) == reference

    # A full replay from the earliest offset (a new consumer group) adds nothing.
    replay = _run_job(topic, kafka_bootstrap, out, checkpoint, f"{group}-replay", "available-now")
    assert replay.wait(600) == 0
    assert sorted(_coordinates(out)) == reference
    assert not list((out / TEMP_DIR).iterdir())


WRITER_LOOP = textwrap.dedent("""
    # A writer fed by a deterministic "source": 3 partitions x N offsets, every 37th offset a dead letter (a gap).
    # A killed run starts from a random position per partition; the final run (seed 99) replays every partition
    # from offset 0, as a source resuming from an old committed offset would. Batches are random-sized, with a real
    # commit log, durably, until killed or done.
    import datetime, random, sys
    from transforms.rows import Hit
    from transforms.sinks.parquet import WriteToParquet
    base, checkpoint, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    t0 = datetime.datetime(2026, 11, 23, 23, 0, tzinfo=datetime.timezone.utc)
    def hit(p, o):
        at = t0 + datetime.timedelta(seconds=o)
        return Hit(at, f"{o % 40:05d}", "Cox", None, None, None, None, None, None, at.strftime("%Y-%m-%d"),
                   "hits", p, o, 0)
    writer = WriteToParquet(base, checkpoint_dir=checkpoint, rows_per_commit=500).make_writer()  # held, then committed
    writer.setup()
    writer.start_bundle()
    position = {p: 0 if seed == 99 else rng.randrange(0, n) if rng.random() < 0.7 else 0 for p in range(3)}
    batch = 0
    while any(position[p] < n for p in position):
        rows = []
        for p in range(3):
            size = rng.randrange(1, 400)
            rows += [hit(p, o) for o in range(position[p], min(n, position[p] + size)) if o % 37]
            position[p] = min(n, position[p] + size)
        writer.write_rows(rows, batch)
        batch += 1
    writer.finish_bundle()
    print("skipped", writer.skipped, flush=True)
""")


def test_writer_killed_again_and_again_mid_write_leaves_every_record_once(tmp_path):
    n = 6000
    base, checkpoint = tmp_path / "hits", tmp_path / "ck"
    script = tmp_path / "writer_loop.py"
    script.write_text(WRITER_LOOP)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rng = random.Random(1)
    temp_files_at_kill = torn_logs = 0
    for run in range(12):
        child = subprocess.Popen([sys.executable, str(script), str(base), str(checkpoint), str(n), str(run)],
                                 cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(1.0 + rng.random() * 1.5)  # imports take about a second; then it is somewhere mid-write
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        if (base / TEMP_DIR).exists() and any((base / TEMP_DIR).iterdir()):
            temp_files_at_kill += 1
        logs = list(checkpoint.rglob("commits.log"))
        if logs and not logs[0].read_bytes().endswith(b"\n") and logs[0].stat().st_size:
            torn_logs += 1
        # What a reader sees between crashes is always readable: whole files only.
        if _files(base):
            coordinates = _coordinates(base)
            assert len(coordinates) == len(set(coordinates))
    final = subprocess.run([sys.executable, str(script), str(base), str(checkpoint), str(n), "99"], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-2000:]
    assert int(final.stdout.split()[-1]) > 0  # the final full replay met records written before the kills
    expected = sorted(("hits", p, o) for p in range(3) for o in range(n) if o % 37)
    assert sorted(_coordinates(base)) == expected
    assert not list((base / TEMP_DIR).iterdir())
    assert not (base / DEFAULT_COMMIT_DIR).exists()  # the log is in the checkpoint dir
    print(f"kills that left temp files: {temp_files_at_kill}/12, torn log lines: {torn_logs}/12")


@pytest.mark.timeout(180)
def test_zipcodes_keep_their_leading_zeros_in_pyarrow_duckdb_and_spark(tmp_path):
    """Digit-only partition values read as integers by default in all three (00501 -> 501); the sink's reader
    settings keep them strings."""
    base = tmp_path / "hits"
    writer_for(base).write_rows([hit(0, 0, "00501"), hit(0, 1, "02134"), hit(0, 2, "94107")], 0)
    expected = ["00501", "02134", "94107"]
    assert sorted(dataset(str(base)).to_table().column("zipcode").to_pylist()) == expected
    assert [z for (z,) in duckdb.sql(f"SELECT zipcode FROM {duckdb_source(str(base))} ORDER BY 1").fetchall()] \
        == expected
    from bench.spark_blog import spark_session
    spark = spark_session(app="hitstream-parquet-zipcodes", master="local[1]")
    try:
        plain = spark.read.parquet(str(base))
        assert dict(plain.dtypes)["zipcode"] == "int"  # Spark's inference, what the schema is for
        frame = spark.read.schema(spark_schema()).parquet(str(base))
        assert dict(frame.dtypes)["zipcode"] == "string"
        assert sorted(row.zipcode for row in frame.select("zipcode").collect()) == expected
        assert frame.count() == 3 and frame.select("day").distinct().count() == 1
    finally:
        spark.stop()
