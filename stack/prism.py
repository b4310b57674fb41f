"""The Prism runner binary, built from the Go module proxy.

Beam's PrismRunner downloads Prism from GitHub releases, which this network cannot reach.
The same binary builds from source with `go install ...@v<BEAM_VERSION>`; pipelines then
pass `--prism_location=<ensure_prism()>`.
"""
import logging
import os
import shutil
import subprocess

from stack import paths
from stack.versions import BEAM_VERSION

_LOGGER = logging.getLogger(__name__)

PACKAGE = "github.com/apache/beam/sdks/v2/go/cmd/prism"


def _go() -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"  # the image's Go is not always on PATH
    if not os.access(go, os.X_OK):
        raise RuntimeError("Go is needed to build Prism and was not found (looked on PATH and in /usr/local/go)")
    return go


def prism_path() -> str:
    return str(paths.tool_dir("prism", BEAM_VERSION) / "prism")


def ensure_prism() -> str:
    """Path of a Prism binary matching the installed Beam SDK, built on first use."""
    binary = prism_path()
    if os.access(binary, os.X_OK):
        return binary
    _LOGGER.info("building Prism %s with go install (1-2 minutes the first time)", BEAM_VERSION)
    env = dict(os.environ, GOBIN=os.path.dirname(binary))
    result = subprocess.run([_go(), "install", f"{PACKAGE}@v{BEAM_VERSION}"], env=env, capture_output=True, text=True)
    if result.returncode != 0 or not os.access(binary, os.X_OK):
        raise RuntimeError(f"go install {PACKAGE}@v{BEAM_VERSION} failed:\n{result.stdout}{result.stderr}")
    return binary
