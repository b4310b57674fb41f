"""prism-cluster against prism (LOOPBACK) on the same topic: throughput, start-up and memory per process.

    python -m bench.cluster                     # 1M events, 3 runs each, alternating
    python -m bench.cluster --count 20000 --repeats 1

Both runners run the same bounded (available-now) job with sinks every runner takes (Parquet hits, zip_counts to
MariaDB complete and to Kafka update, zip_window_counts to Kafka update). Each first runs once on an empty topic:
its wall time is the start-up (for prism-cluster: the worker's venv, the staged package installed into it).
events/s = events / (wall time - that start-up). Peak RSS is sampled every 0.2 s per process: the driver (the
`hitstream run` process) and each Python SDK worker (`sdk_worker_main`; in LOOPBACK the driver is the
worker).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench.procfs import process_roles, rss_bytes
from bench.blog import produce_topic
from bench.spark_blog import child_env
from stack import kafka, mariadb

RUNNERS = ("prism", "prism-cluster")


class PeakPerProcess:
    """The peak RSS of each process of a tree, by role, sampled in a thread."""

    def __init__(self, root: int) -> None:
        self.root, self.peaks, self.roles = root, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid, role in process_roles(self.root).items():
                self.roles[pid] = role
                self.peaks[pid] = max(self.peaks.get(pid, 0), rss_bytes(pid))
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def by_role(self, role: str) -> list:
        return sorted(round(self.peaks[pid] / 2 ** 20) for pid, r in self.roles.items() if r == role)


def run_job(runner: str, topic: str, workdir: Path) -> dict:
    run_id = uuid.uuid4().hex[:8]
    command = [sys.executable, "-m", "hitstream.cli", "run", "--runner", runner, f"--topic={topic}",
               f"--bootstrap-servers={kafka.BOOTSTRAP}", "--trigger=available-now", f"--group-id=bench-{run_id}",
               "--sink=hits=parquet", f"--parquet-path={workdir / run_id / 'hits'}",
               "--sink=zip_counts=jdbc:complete", f"--jdbc-url={mariadb.url()}",
               f"--jdbc-table=zip_test_cluster_{run_id}", "--sink=zip_counts=kafka:update",
               "--sink=zip_window_counts=kafka:update", f"--output-topic={topic}-out-{run_id}"]
    started = time.monotonic()
    child = subprocess.Popen(command, env=dict(child_env(), HITSTREAM_PROGRESS="0"), cwd=workdir,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with PeakPerProcess(child.pid) as peaks:
        _, stderr = child.communicate(timeout=1800)
    wall = time.monotonic() - started
    if child.returncode != 0:
        raise RuntimeError(f"{runner} failed ({child.returncode}):\n{stderr[-3000:]}")
    return {"wall": wall, "driver_mb": peaks.by_role("driver"), "worker_mb": peaks.by_role("worker"),
            "workers": len(peaks.by_role("worker"))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    kafka.start()
    mariadb.start()
    workdir = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    topic, _ = produce_topic(kafka.BOOTSTRAP, args.count)
    empty, _ = produce_topic(kafka.BOOTSTRAP, 0)
    startup = {runner: run_job(runner, empty, workdir)["wall"] for runner in RUNNERS}
    runs = {runner: [] for runner in RUNNERS}
    for _ in range(args.repeats):
        for runner in RUNNERS:
            runs[runner].append(run_job(runner, topic, workdir))
    print(f"\n{args.count:,} events, {args.repeats} runs each, alternating (medians)\n")
    print("| runner | events/s | wall s | start-up s (empty topic) | worker processes | peak RSS MB: driver "
          "| each worker |")
    print("|---|---|---|---|---|---|---|")
    rates = {}
    for runner in RUNNERS:
        walls = [run["wall"] for run in runs[runner]]
        rates[runner] = statistics.median(args.count / max(0.1, wall - startup[runner]) for wall in walls)
        last = runs[runner][-1]
        workers = last["worker_mb"] or ["(the driver)"]
        print(f"| {runner} | {rates[runner]:,.0f} | {statistics.median(walls):.1f} | {startup[runner]:.1f} "
              f"| {max(run['workers'] for run in runs[runner])} | {max(max(run['driver_mb']) for run in runs[runner])} "
              f"| {', '.join(map(str, workers))} |")
    print(f"\nprism-cluster / prism events/s: {rates['prism-cluster'] / rates['prism']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
