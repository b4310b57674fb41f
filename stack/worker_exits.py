"""SDK workers that end while their job runs. Prism logs "process failed while running" for a PROCESS worker that
dies and leaves the job RUNNING forever with nothing happening (BEAM-FACTS), so the launcher watches for itself.

The worker scripts (`stack.python_worker`, `stack.java_kafkaio`) take part when the launcher sets ENV, which Prism
passes on to them: each copies its output into `<dir>/<worker id>.log` (and on to Prism's output, as before), and a
watcher touches `<dir>/<worker id>.ended` once the worker's process is gone. `WorkerExits` makes the directory,
sets ENV for the job's lifetime and reports the workers that ended, with the last lines each wrote.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import List

from stack import paths

ENV = "HITSTREAM_WORKER_EXITS"

# Sourced by the worker scripts after they set $id and $dir (the worker's own folder). Before `exec` of the boot
# program, so the boot program keeps the script's pid: Prism kills that pid at the end of the job.
SCRIPT_SNIPPET = """\
ended=""
if [ -n "${HITSTREAM_WORKER_EXITS:-}" ] && [ -d "$HITSTREAM_WORKER_EXITS" ]; then
    mkfifo "$dir/output"
    tee -a "$HITSTREAM_WORKER_EXITS/$id.log" <"$dir/output" >&2 &
    exec >"$dir/output" 2>&1
    ended="$HITSTREAM_WORKER_EXITS/$id.ended"
fi
"""
# The watcher's last step, after the worker's process is gone.
SCRIPT_ON_END = '[ -n "$ended" ] && touch "$ended"'

TAIL_LINES = 20


@dataclasses.dataclass(frozen=True)
class EndedWorker:
    worker_id: str
    last_output: str  # its last TAIL_LINES lines

    def describe(self) -> str:
        return f"SDK worker {self.worker_id} ended; its last output:\n{self.last_output or '(none)'}"


def exits_dir() -> Path:
    """The folder the PROCESS workers of this launching process's jobs report to."""
    return paths.cache_root() / "workers" / f"exits-{os.getpid()}"


class WorkerExits:
    """Entered around a job: the PROCESS workers it starts report here when they end (see the module's docstring)."""

    def __init__(self) -> None:
        self._dir = None

    def __enter__(self) -> "WorkerExits":
        # One folder per launching process, emptied for each job: one Prism serves every job of the process, with
        # the ENV it took at its start (runners.prism_service gives it `exits_dir()`).
        self._dir = exits_dir()
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir.mkdir(parents=True)
        os.environ[ENV] = str(self._dir)
        return self

    def ended(self) -> List[EndedWorker]:
        if self._dir is None:
            return []
        return [EndedWorker(marker.stem, _tail(marker.with_suffix(".log")))
                for marker in sorted(self._dir.glob("*.ended"))]

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    return "\n".join(lines[-TAIL_LINES:])
