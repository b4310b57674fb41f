"""A streaming `hitstream run` in a child process, watched from outside as an operator would: the RSS of its
processes by role, and the consumer group's lag, sampled on a schedule. For the soak and slow-sink tests."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

from confluent_kafka import Consumer, TopicPartition

from bench.procfs import process_roles, rss_bytes

REPO = Path(__file__).resolve().parents[2]


class JobProcess:
    """`hitstream run ARGS` in a child process, its output in `log`; `stop()` asks it to stop (SIGINT, as Ctrl-C)."""

    def __init__(self, args: List[str], log: Path, env: Optional[Dict[str, str]] = None) -> None:
        self.log = log
        self._out = open(log, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hitstream.cli", "run", "--runner", "prism", *args], cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), "HITSTREAM_PROGRESS": "0", **(env or {})},
            stdout=self._out, stderr=subprocess.STDOUT)

    def stop(self, timeout: float = 90.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(30)
        finally:
            self._out.close()

    def tail(self, characters: int = 3000) -> str:
        return self.log.read_bytes()[-characters:].decode(errors="replace")


def group_lag(bootstrap: str, group: str, topic: str) -> int:
    """Records in `topic` past what `group` has committed (from the log start where it has committed nothing)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        lag = 0
        for tp in committed:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            lag += high - (tp.offset if tp.offset >= 0 else low)
        return lag
    finally:
        consumer.close()


@dataclasses.dataclass
class Sample:
    seconds: float  # since the sampler started
    rss_mb: Dict[str, float]  # role -> MB, summed over the processes of that role
    lag: int


class Sampler:
    """Samples a job's RSS by role and its group's lag every `interval` seconds, in a thread, until stopped."""

    def __init__(self, job: JobProcess, bootstrap: str, group: str, topic: str, interval: float) -> None:
        self._job, self._bootstrap, self._group, self._topic = job, bootstrap, group, topic
        self._interval = interval
        self.samples: List[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def __enter__(self) -> "Sampler":
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            rss: Dict[str, float] = {}
            for pid, role in process_roles(self._job.process.pid).items():
                rss[role] = rss.get(role, 0.0) + rss_bytes(pid) / 2 ** 20
            try:
                lag = group_lag(self._bootstrap, self._group, self._topic)
            except Exception:  # the broker is slow to answer once: the next sample will say
                lag = -1
            self.samples.append(Sample(time.monotonic() - self._started, rss, lag))

    def peak_mb(self) -> float:
        """The highest sum of every process's RSS seen."""
        return max((sum(sample.rss_mb.values()) for sample in self.samples), default=0.0)


def slope_per_minute(points: List[tuple]) -> float:
    """The least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    return 60.0 * sum((t - mean_t) * (v - mean_v) for t, v in points) / spread if spread else 0.0
