"""`hitstream run` as a user meets it: the source's CLI flags reach the read, and a stop asked for is clean.

Against the real broker, on Prism; references come from what each test produced.
"""
import collections
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest

from hitstream.generator import ProduceSpec, produce
from pipelines.blog import run
from tests.reliability.faults import table_rows

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("flag", ["--starting-timestamp", "--starting-offsets-by-timestamp"])
def test_hitstream_run_starts_each_partition_at_a_timestamp(kafka_bootstrap, topic_factory, tmp_path, flag):
    """The CLI's starting-timestamp flags reach the source: zip_counts equal a count from each partition's first
    record at or after the time (the records' Kafka timestamps are their hittimes)."""
    topic = topic_factory(partitions=3, prefix="src-cli-time")
    start_ms = 1_773_612_000_000  # 2026-03-15 22:00 UTC
    report = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=3_000, partitions=3,
                                 zipcodes=20, event_time_start_ms=start_ms, event_time_span_seconds=3_600,
                                 kafka_timestamp_is_hittime=True))
    boundary = start_ms + 1_800_000
    first = {}
    for hittime, _, _, partition, offset in report.events:
        if hittime >= boundary:
            first[partition] = min(first.get(partition, offset), offset)
    expected = collections.Counter(zipcode for _, zipcode, _, partition, offset in report.events
                                   if partition in first and offset >= first[partition])
    assert 0 < sum(expected.values()) < report.well_formed
    value = (str(boundary) if flag == "--starting-timestamp"
             else orjson.dumps({topic: {str(p): boundary for p in range(3)}}).decode())
    url = f"sqlite:///{tmp_path / 'counts.db'}"
    assert run(["--runner", "prism", f"--bootstrap-servers={kafka_bootstrap}", f"--topic={topic}",
                "--trigger=available-now", f"--group-id=g-{uuid.uuid4().hex}", f"{flag}={value}",
                "--sink=zip_counts=jdbc:complete", f"--jdbc-url={url}", "--jdbc-table=zip_counts"]) == 0
    assert dict(table_rows(url, "zip_counts")) == dict(expected)


@pytest.mark.timeout(180)
def test_a_stop_asked_for_prints_no_error(kafka_bootstrap, topic_factory):
    """--run-seconds ends a streaming job with bundles in flight: exit 0, and no ERROR line (Prism logs each
    bundle the cancel interrupts as "Bundle Failed", which hitstream lowers to INFO)."""
    topic = topic_factory(partitions=2, prefix="cli-stop")
    produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=20_000, partitions=2))
    done = subprocess.run([sys.executable, "-m", "hitstream.cli", "run", "--runner", "prism", f"--topic={topic}",
                           f"--bootstrap-servers={kafka_bootstrap}", f"--group-id=g-{uuid.uuid4().hex}",
                           "--trigger=processing-time=1s", "--max-offsets-per-trigger=2000",
                           "--sink=zip_counts=console:update", "--run-seconds=12"],
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "HITSTREAM_PROGRESS": "0"},
                          capture_output=True, text=True, timeout=150)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "Batch:" in done.stdout  # it ran and wrote before the stop
    lines = output.splitlines()
    errors = [i for i, line in enumerate(lines) if re.search(r"\bERROR\b|Traceback", line)]
    assert not errors, "\n".join(lines[errors[0]:errors[0] + 40]) if errors else ""


def test_a_broken_checkpoint_file_is_refused_before_the_job_starts(kafka_bootstrap, topic_factory, tmp_path,
                                                                    capsys):
    """A truncated aggregate checkpoint (issue 19): exit 2 with the file and the fix, no traceback, no job, and the
    file left as it was (never reset to zero counts)."""
    topic = topic_factory(partitions=1, prefix="cli-broken-ckpt")
    broken = tmp_path / "ckpt" / "aggregates" / topic / "0.json"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b'{"offset": 40, "watermark": [0, 0], "queries": [["zip_co')
    code = run(["--runner", "prism", f"--topic={topic}", f"--bootstrap-servers={kafka_bootstrap}",
                "--trigger=available-now", f"--checkpoint-dir={tmp_path / 'ckpt'}", "--sink=hits=console"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(broken) in err and "not whole JSON" in err and "new checkpoint dir" in err, err
    assert "Traceback" not in err
    assert broken.read_bytes().endswith(b'["zip_co')


@pytest.mark.parametrize("damage, says", [
    (lambda log: log + b'{"txn": "1", "files": [["_temporary/a"\n', "is not JSON"),
    (lambda log: b'{"txn": "1", "offsets": "all of them"}\n' + log, "lacks the files, offsets and keys"),
])
def test_a_broken_parquet_commit_log_is_refused_before_the_job_starts(kafka_bootstrap, topic_factory, tmp_path,
                                                                     capsys, damage, says):
    """A commit log with a whole line that is not a commit (issue 19): exit 2 with the file and the fix, no job, and
    the log left as it was (an empty log in its place would write every record again)."""
    topic = topic_factory(partitions=1, prefix="cli-broken-log")
    produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=200, partitions=1))
    args = ["--runner", "prism", f"--topic={topic}", f"--bootstrap-servers={kafka_bootstrap}",
            "--trigger=available-now", f"--checkpoint-dir={tmp_path / 'ckpt'}", "--sink=hits=parquet",
            f"--parquet-path={tmp_path / 'hits'}", f"--group-id=g-{uuid.uuid4().hex}"]
    assert run(args) == 0
    (log,) = (tmp_path / "ckpt" / "sinks").glob("*/commits.log")
    damaged = damage(log.read_bytes())
    log.write_bytes(damaged)
    capsys.readouterr()
    code = run(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(log) in err and says in err and "new checkpoint dir" in err, err
    assert "Traceback" not in err
    assert log.read_bytes() == damaged
