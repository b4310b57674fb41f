"""A PROCESS worker killed mid-stream: Prism itself would keep the job RUNNING forever with nothing happening
(BEAM-FACTS), so `hitstream run` must see the worker end, cancel the job and fail within a bounded time with the
worker's last output (stack/worker_exits.py, pipelines/wait.py).

- the Java worker of `--kafka-io java` on Prism (Python in LOOPBACK);
- a Python SDK worker of `--runner prism-cluster`, then a restart of the job on the same Parquet path:
  every hit once in Parquet (the sink's commit log skips what the killed job committed) and zip_counts equal to
  the reference. prism-cluster refuses `--checkpoint-dir` (README, Known limits), so the restart counts from the
  earliest offset again rather than from saved totals.
"""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hitstream.generator import ProduceSpec, produce
from tests.reliability.faults import count_diff, latest_counts, parquet_coordinates, print_figures, record_diff

REPO = Path(__file__).resolve().parents[2]
FAIL_WITHIN_SECONDS = 30  # from the kill to the launcher's exit

pytestmark = pytest.mark.timeout(700)

CASES = {
    # runner arguments, the worker's process to kill (a pattern of its command line)
    "java": (["--runner", "prism", "--kafka-io=java"], "org.apache.beam.fn.harness.FnHarness"),
    "python": (["--runner", "prism-cluster"], "apache_beam.runners.worker.sdk_worker_main"),
}


def _pids(pattern: str) -> list:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


@pytest.mark.parametrize("worker", sorted(CASES))
def test_a_killed_worker_fails_the_job_with_its_cause(worker, kafka_bootstrap, topic_factory, tmp_path, capsys):
    runner_args, pattern = CASES[worker]
    assert not _pids(pattern), f"a {worker} worker of another job is running; this test would kill it"
    topic = topic_factory(partitions=2, prefix=f"dead-{worker}")
    out_topic = topic_factory(partitions=1, prefix=f"dead-{worker}-out")
    log = tmp_path / "job.log"
    spec = ProduceSpec(topic=topic, bootstrap_servers=kafka_bootstrap, count=15_000, rate=500, partitions=2,
                       zipcodes=5, seed=3)
    reports = []
    producing = threading.Thread(target=lambda: reports.append(produce(spec)), daemon=True)
    producing.start()
    job_args = [sys.executable, "-m", "pipelines.blog", *runner_args, f"--topic={topic}",
                f"--bootstrap-servers={kafka_bootstrap}", f"--group-id=g-{topic}", "--starting-offsets=earliest",
                "--sink=hits=parquet", f"--parquet-path={tmp_path / 'hits'}", "--sink=zip_counts=kafka:update",
                f"--output-topic={out_topic}"]
    with open(log, "wb") as out:
        job = subprocess.Popen([*job_args, "--trigger=processing-time=1s", "--run-seconds=600"], cwd=REPO,
                               stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not _pids(pattern):
            assert job.poll() is None, f"the job ended before its worker started:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no {worker} worker started:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        time.sleep(8)  # let it read and write for a while
        assert job.poll() is None, log.read_text()[-3000:]
        for pid in _pids(pattern):
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        try:
            code = job.wait(timeout=FAIL_WITHIN_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the job was still running {FAIL_WITHIN_SECONDS} s after its {worker} worker was killed:\n"
                        f"{log.read_text()[-3000:]}")
        took = time.monotonic() - killed
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
        producing.join(timeout=60)  # before the topic goes
    output = log.read_text()
    assert code == 1, output[-3000:]
    assert "hitstream run: the job failed: SDK worker" in output and "ended; its last output:" in output, \
        output[-3000:]
    if worker == "java":  # its available-now read is refused above 10,000 records (Kafka I/O)
        print(f"FAULT dead {worker} worker: the job failed {took:.1f} s after the kill, rc {code}")
        return
    assert reports, "the producer did not finish"
    # A new group: the killed job's committed offsets would start the recount where it stopped, and its counts died
    # with it. The Parquet commit log still skips what the killed job wrote.
    restart = subprocess.run([*job_args, "--trigger=available-now", f"--group-id=g-{topic}-restart"], cwd=REPO,
                             capture_output=True, text=True, timeout=300)
    assert restart.returncode == 0, restart.stdout[-3000:] + restart.stderr[-3000:]
    report = reports[0]
    hits_lost, hits_dup = record_diff(parquet_coordinates(str(tmp_path / "hits")),
                                      {(partition, offset) for *_, partition, offset in report.events})
    zip_lost, zip_dup = count_diff(latest_counts(kafka_bootstrap, out_topic), dict(report.zip_counts))
    print_figures(capsys, f"dead {worker} worker, then a restart", 2, spec.count, hits_lost + zip_lost,
                  hits_dup + zip_dup, failed_after=f"{took:.1f}s", first_exit=code, restart_exit=restart.returncode)
    assert (hits_lost, hits_dup, zip_lost, zip_dup) == (0, 0, 0, 0)
