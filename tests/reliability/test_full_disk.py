"""A full disk under the Parquet path, and under the checkpoint dir (issue 19, part 2), on Prism against the real
broker. The checkpoint dir holds the Parquet sink's commit log and the aggregate checkpoint: each is tried.

The Parquet path (or the checkpoint dir, which holds the Parquet sink's commit log) is a size-limited tmpfs that
fills mid-run. The job must fail loudly, naming the path and the
error; readers must see no partial file; and once space is freed (the tmpfs grown), a restart on the same
checkpoint dir must leave every hit in the files exactly once, against the generator's record of what it wrote.
"""
from __future__ import annotations

import errno
import subprocess
import time

import pyarrow.parquet as pq
import pytest
from apache_beam.runners.runner import PipelineState

from hitstream.generator import ProduceSpec, produce
from pipelines.blog import run
from tests.reliability.faults import (count_diff, parquet_coordinates, print_figures, record_diff, start_on_prism,
                                      table_rows, window_reference, window_rows)
from tests.reliability.scale import scale

pytestmark = pytest.mark.timeout(scale(300, 900))

HITS = 300_000
# Sizes that fill mid-run: 300,000 hits over 200 zipcodes take about 6x 6 MiB of Parquet, and their commit log about
# 3 times 48 KiB. (With 150,000 the log filled at 100,000-126,000 hits in three runs: too near the end once the
# sink took bigger batches.)
DISK = {"parquet": "6m", "checkpoint": "48k"}
FREED = "512m"


@pytest.fixture(params=sorted(DISK))
def small_disk(request, tmp_path):
    """(what, mount): a tmpfs of DISK[what] at tmp_path/disk (unmounted afterwards) for the Parquet path or the
    checkpoint dir; skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK[request.param]}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield request.param, mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _run(topic: str, bootstrap: str, parquet: str, checkpoint: str):
    return start_on_prism([f"--topic={topic}", f"--bootstrap-servers={bootstrap}", "--trigger=available-now",
                           f"--group-id=g-{topic}", "--sink=hits=parquet", f"--parquet-path={parquet}",
                           f"--checkpoint-dir={checkpoint}"])


def _visible_files(path):
    """Every Parquet file a reader sees (pyarrow, DuckDB and Spark skip `_` folders and `.tmp` names)."""
    return [f for f in path.rglob("*.parquet") if not any(part.startswith("_") for part in f.relative_to(path).parts)]


def test_a_full_parquet_disk_fails_loudly_and_a_restart_writes_each_hit_once(kafka_bootstrap, topic_factory,
                                                                            small_disk, tmp_path, capsys):
    topic = topic_factory(partitions=3, prefix="full-disk")
    report = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=HITS, partitions=3,
                                 zipcodes=200, seed=19))
    what, disk = small_disk
    parquet = (disk if what == "parquet" else tmp_path) / "hits"
    checkpoint = (disk if what == "checkpoint" else tmp_path) / "checkpoint"

    started = time.monotonic()
    result = _run(topic, kafka_bootstrap, str(parquet), str(checkpoint))
    with pytest.raises(Exception) as failure:
        result.wait_until_finish()
    failed_after = time.monotonic() - started
    message = str(failure.value)
    files_when_full = _visible_files(parquet)
    for file in files_when_full:  # whole files only: each reads to its footer
        pq.read_table(file)
    rows_when_full = len(parquet_coordinates(str(parquet)))

    subprocess.run(["mount", "-o", f"remount,size={FREED}", str(disk)], check=True)
    assert _run(topic, kafka_bootstrap, str(parquet), str(checkpoint)).wait_until_finish() == PipelineState.DONE
    got = parquet_coordinates(str(parquet))
    expected = {(partition, offset) for *_, partition, offset in report.events}
    lost, duplicated = record_diff(got, expected)
    print_figures(capsys, f"full disk under the {what} dir", 2, HITS, lost, duplicated,
                  failed_after=f"{failed_after:.1f}s", files_when_full=len(files_when_full),
                  rows_when_full=rows_when_full, disk=DISK[what])
    assert result.state == PipelineState.FAILED
    full = parquet if what == "parquet" else checkpoint
    assert str(full) in message and f"[Errno {errno.ENOSPC}]" in message, message[-2000:]
    assert 0 < rows_when_full < len(expected), "the disk filled mid-run"
    assert (lost, duplicated) == (0, 0)


def test_a_full_disk_under_the_aggregate_checkpoint_fails_the_run_and_a_restart_counts_each_hit_once(
        kafka_bootstrap, topic_factory, tmp_path, capsys):
    """The aggregate checkpoint's saves run when the runner finalizes a bundle, and the runner only logs a failed
    finalization: the read must fail the job at its next call, and `hitstream run` at the job's end."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        topic = topic_factory(partitions=3, prefix="full-disk-agg")
        report = produce(ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=HITS, partitions=3,
                                     zipcodes=200, seed=20))
        url = f"sqlite:///{tmp_path / 'counts.db'}"
        args = ["--runner", "prism", f"--topic={topic}", f"--bootstrap-servers={kafka_bootstrap}",
                "--trigger=available-now", f"--group-id=g-{topic}", f"--checkpoint-dir={mount / 'checkpoint'}",
                "--sink=zip_counts=jdbc:update", "--sink=zip_window_counts=jdbc:update", f"--jdbc-url={url}"]
        capsys.readouterr()
        first = run(args)
        err = capsys.readouterr().err
        subprocess.run(["mount", "-o", f"remount,size={FREED}", str(mount)], check=True)
        second = run(args)
        zip_got = dict(table_rows(url, "zip_test"))
        windows_got = window_rows(url)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
    windows_ref = window_reference(report.events)
    zip_lost, zip_dup = count_diff(zip_got, dict(report.zip_counts))
    win_lost, win_dup = count_diff(windows_got, windows_ref)
    print_figures(capsys, "full disk under the aggregate checkpoint", 2, HITS, zip_lost + win_lost,
                  zip_dup + win_dup, first_exit=first, second_exit=second, disk="16k")
    assert first == 1 and str(mount / "checkpoint") in err and "No space left on device" in err, err[-2000:]
    assert second == 0
    assert zip_got == dict(report.zip_counts) and windows_got == windows_ref
