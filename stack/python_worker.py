"""Python SDK workers outside the launching process, as a Flink or Dataflow worker runs them: Beam's own Python boot
program, started by Prism for a PROCESS environment.

The boot program (`go install github.com/apache/beam/sdks/v2/python/container@v<BEAM_VERSION>`) asks the runner for
the job's staged artifacts, makes a fresh venv for the worker, pip-installs what was staged (hitstream's `setup.py`
sdist, `workflow.tar.gz`) into it and starts `python -m apache_beam.runners.worker.sdk_worker_main`. What the image
of a Dataflow or Flink worker would hold, Beam and hitstream's pinned dependencies, comes from `deps_dir()`: a view
of this stack's venv without hitstream itself, on the worker's PYTHONPATH. So the worker imports hitstream only from
what was staged.

Prism runs the environment's command as `<command> --id='<id>' --provision_endpoint=<url>`, without a shell, so the
quotes reach the program and provisioning fails (BEAM-FACTS). `worker_command()` is a small script that strips them,
gives each worker its own directory (the boot program's default, /tmp, is shared by every job) and starts the boot
program there, so nothing of the launcher's working directory is importable. Prism kills the worker when the job
ends; a watcher removes the worker's directory and venv once the worker is gone, and tells the launcher that it
ended (`stack.worker_exits`).
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import sysconfig
from pathlib import Path

from stack import paths
from stack import worker_exits
from stack.build_tools import go_install
from stack.versions import BEAM_VERSION

_LOGGER = logging.getLogger(__name__)

MODULE = f"github.com/apache/beam/sdks/v2/python/container@v{BEAM_VERSION}"
VENV_ROOT = "/opt/apache/beam-venv"  # where the boot program makes each worker's venv (hard-coded in boot.go)
_OWN = ("hitstream", "__editable__", "_hitstream")  # the stack venv's entries that are hitstream itself

_SCRIPT = """#!/bin/sh
# hitstream: start Beam's Python boot program for Prism's PROCESS environment (see stack/python_worker.py).
id=$(printf '%s' "$1" | sed -e 's/^--id=//' -e "s/'//g")
shift
dir=$(mktemp -d "{workers}/worker-$id.XXXXXX")
cd "$dir" || exit 1
{exits}( while kill -0 $$ 2>/dev/null; do sleep 2; done; rm -rf "$dir" "{venv_root}/beam-venv-worker-$id"; {on_end} ) \\
    >/dev/null 2>&1 </dev/null &
export PATH="{bin}:$PATH" PYTHONPATH="{deps}" PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
exec "{boot}" --id="$id" --semi_persist_dir="$dir" "$@"
"""


def _tools() -> Path:
    return paths.tool_dir("python-worker", BEAM_VERSION)


def boot_path() -> str:
    return str(_tools() / "container")


def ensure_boot() -> str:
    """Beam's Python boot program, built from the Go module proxy on first use (about 40 s cold)."""
    return go_install(MODULE, _tools(), "container", "building Beam's Python boot program")


def deps_dir() -> str:
    """A directory of links to every entry of this venv's site-packages but hitstream's own: the worker's image.

    Rebuilt when the venv's contents change (its entries are compared by name)."""
    site = Path(sysconfig.get_paths()["purelib"])
    view = _tools() / "deps"
    wanted = {entry.name for entry in site.iterdir() if not entry.name.startswith(_OWN)}
    have = {entry.name for entry in view.iterdir()} if view.is_dir() else set()
    if wanted != have or any(not (view / name).exists() for name in wanted):
        shutil.rmtree(view, ignore_errors=True)
        view.mkdir(parents=True)
        for name in wanted:
            (view / name).symlink_to(site / name)
    return str(view)


def worker_command() -> str:
    """The PROCESS environment's command: a script that starts the boot program for one worker."""
    workers = paths.cache_root() / "workers"
    workers.mkdir(parents=True, exist_ok=True)
    Path(VENV_ROOT).mkdir(parents=True, exist_ok=True)
    script = _SCRIPT.format(workers=workers, venv_root=VENV_ROOT, bin=Path(sys.executable).parent, deps=deps_dir(),
                            boot=ensure_boot(), exits=worker_exits.SCRIPT_SNIPPET, on_end=worker_exits.SCRIPT_ON_END)
    path = _tools() / "worker"
    if not path.exists() or path.read_text() != script:
        path.write_text(script)
        path.chmod(0o755)
    return str(path)


def status() -> dict:
    return {"boot": boot_path(), "built": os.access(boot_path(), os.X_OK), "venv_root": VENV_ROOT,
            "workers": str(paths.cache_root() / "workers")}

