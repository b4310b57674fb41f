"""The Prism job service of this process, started by hitstream instead of by Beam, so a job starts and ends sooner.

Beam's PrismRunner starts Prism as it submits the job, then connects a gRPC channel that usually finds the port not
yet open and waits gRPC's reconnect back-off (about 0.9 s; Prism itself listens within 0.1 s), and at the end it
sends SIGINT and sleeps a whole second before looking whether Prism has gone (`subprocess_server`): about 2 s of
every `hitstream run`. Here Prism is started once per process and per setting, the port is awaited before Beam
connects (`--job_endpoint`), and the stop waits only as long as Prism takes to exit.

Prism's output is relayed into Python's logging as Beam relays it: through the `PrismJobServer` logger with
Beam's own `PrismRunnerLogFilter`, which gives each line Prism's level and calls its source "PrismRunner". Prism stops
when this process exits (atexit), as Beam's does.
"""
from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from typing import Dict, Sequence, Tuple

from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions, PrismRunnerOptions

from stack import worker_exits
from stack.prism import ensure_prism

LOGGER_NAME = "PrismJobServer"  # the name Beam relays Prism's lines under (pipelines.wait filters it)
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 5.0

_services: Dict[Tuple[str, str], "_PrismService"] = {}
_lock = threading.Lock()


class _PrismService:
    """One Prism process serving the job API on a local port."""

    def __init__(self, binary: str, log_level: str):
        from apache_beam.runners.portability.prism_runner import PrismRunnerLogFilter
        with socket.socket() as probe:  # a free port; Prism binds it a moment later
            probe.bind(("localhost", 0))
            self.port = probe.getsockname()[1]
        self.endpoint = f"localhost:{self.port}"
        self._logger = logging.getLogger(LOGGER_NAME)
        if not any(isinstance(f, PrismRunnerLogFilter) for f in self._logger.filters):
            self._logger.addFilter(PrismRunnerLogFilter())
            self._logger.setLevel(logging.INFO)  # the filter raises a line's level after the INFO check
        self.process = subprocess.Popen(
            [binary, "--job_port", str(self.port), "--log_level", log_level, "--log_kind", "json",
             "--serve_http=false"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            # Prism hands its environment to the PROCESS workers it starts: where they report their end.
            env={**os.environ, worker_exits.ENV: str(worker_exits.exits_dir())})
        self._relay = threading.Thread(target=self.log_stdout, name="prism-log", daemon=True)
        self._relay.start()
        self._await_port()

    def log_stdout(self) -> None:
        # The name matters: PrismRunnerLogFilter parses only records logged from a function called log_stdout.
        for line in iter(self.process.stdout.readline, b""):
            self._logger.info(line.decode(errors="backslashreplace").rstrip())  # no args: the filter rewrites msg

    def _await_port(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Prism exited with {self.process.returncode} before serving on {self.endpoint}; "
                                   f"its output is in the log above")
            try:
                socket.create_connection(("localhost", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"Prism did not serve on {self.endpoint} within {START_TIMEOUT_SECONDS:.0f} s")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # Prism's last lines are logged before logging itself shuts down at exit (a line logged to a closed stream
        # prints a traceback).
        self._relay.join(STOP_TIMEOUT_SECONDS)


def job_endpoint_args(user_args: Sequence[str]) -> list:
    """`--job_endpoint=...` of a running Prism for a job with these Beam arguments (its --prism_location and
    --prism_log_level are honoured); [] when the user gave a --job_endpoint of their own."""
    options = PipelineOptions(list(user_args))
    if options.view_as(PortableOptions).job_endpoint:
        return []
    prism = options.view_as(PrismRunnerOptions)
    key = (prism.prism_location or ensure_prism(), prism.prism_log_level or "info")
    with _lock:
        service = _services.get(key)
        if service is None or not service.alive():
            service = _services[key] = _PrismService(*key)
    return [f"--job_endpoint={service.endpoint}"]


@atexit.register
def _stop_all() -> None:
    for service in list(_services.values()):
        service.stop()
