"""Background service processes that outlive the Python process that started them.

Each service has a pid file under paths.run_dir(); that is how `down()` and `status()`
in a later process find it again.
"""
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, List, Optional

from stack import paths

_LOGGER = logging.getLogger(__name__)


def pid_file(name: str) -> Path:
    return paths.run_dir() / f"{name}.pid"


def log_file(name: str) -> Path:
    return paths.log_dir() / f"{name}.log"


def running_pid(name: str) -> Optional[int]:
    """The pid from the service's pid file if that process is alive and is ours.

    "Ours" means its command line names this cache's run dir (every service is started
    with a config file from there), which rules out a pid reused after a reboot and an
    exited child that is still a zombie (its command line is empty).
    """
    try:
        pid = int(pid_file(name).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return pid if str(paths.run_dir()) in cmdline else None


def _alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until_ready(name: str, pid: Optional[int], ready: Callable[[], bool], timeout: float) -> None:
    """Return once ready() holds; raise with the log tail if the process dies or time runs out.

    Liveness is judged by the pid itself, not by running_pid()'s command-line match: a
    fresh machine once reported a just-spawned MariaDB as gone while it was starting.
    """
    pid = pid if pid is not None else running_pid(name)
    deadline = time.monotonic() + timeout
    while not ready():
        if pid is None or not _alive(pid):
            raise RuntimeError(f"{name} (pid {pid}) exited while starting; log tail:\n{log_tail(name)}")
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{name} was not ready after {timeout:.0f}s; log tail:\n{log_tail(name)}")
        time.sleep(0.5)


def spawn(name: str, argv: List[str]) -> int:
    """Start argv detached (own session, stdin closed), output appended to the log."""
    log = log_file(name)
    with open(log, "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the caller and its Ctrl-C
        )
    pid_file(name).write_text(str(proc.pid))
    _LOGGER.info("started %s (pid %d), log %s", name, proc.pid, log)
    return proc.pid


def stop(name: str, timeout: float = 60.0) -> None:
    """SIGTERM (a clean shutdown for both Kafka and MariaDB), SIGKILL after timeout."""
    pid = running_pid(name)
    if pid is not None:
        _LOGGER.info("stopping %s (pid %d)", name, pid)
        os.kill(pid, signal.SIGTERM)
        if not wait_for(lambda: running_pid(name) is None, timeout):
            _LOGGER.warning("%s did not stop in %.0fs; killing it", name, timeout)
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: running_pid(name) is None, 10)
    pid_file(name).unlink(missing_ok=True)


def wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def log_tail(name: str, lines: int = 30) -> str:
    try:
        return "\n".join(log_file(name).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0
