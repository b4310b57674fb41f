"""The Prism runner binary, built from the Go module proxy's source, with hitstream's patches.

Beam's PrismRunner downloads Prism from GitHub releases, which this network cannot reach. The same source comes
from the Go module proxy (`go mod download github.com/apache/beam/sdks/v2@v<BEAM_VERSION>`); pipelines then pass
`--prism_location=<ensure_prism()>`.

- `prism-residual-watermarks.patch` fixes how Prism 2.77 derives a splittable DoFn stage's output watermark: it took
  the estimate of the latest bundle's residuals alone, so with one Kafka partition per restriction, the partition
  furthest ahead in event time set the watermark while the others still had records behind it to emit, and the
  windows' GroupByKey dropped those as late without a word (issue 13). Patched, the stage's output follows the
  least estimate over every restriction still outstanding.
- `prism-metrics-short-ids.patch`: Prism holds a bundle's metric payloads whose short IDs it does not know yet
  until it has asked the worker for their metadata, in a map from short ID to one payload, so a second bundle that
  reports the same new counter meanwhile replaced the first one's value, and that bundle's counts were lost. The
  window accounting of a bounded run (transforms/queries.py) then saw one bundle's hits missing (a CI run: 102 hits
  read, none counted in, all in the final windows). Patched, every payload waits and counts.
- `prism-finalize-when-asked.patch`: Prism asked the worker to finalize every bundle of a stage with a bundle
  finalizer, also bundles that registered no callback; the Python SDK has released those and logs an ERROR with a
  traceback ("Bundle is not in a finalizable state") that a user took for a failure. Patched, Prism finalizes a
  bundle only when the worker's response says it requires finalization.
- `prism-split-keeps-keys.patch`: when Prism split a slow bundle of a stateful stage, it released every key of the
  residual elements, also a key the primary was still processing, so that key's residuals ran in a second bundle
  beside the primary; both read the key's state as it was before either, and the one that committed last overwrote
  the other's changes (a running total lost whole bundles). Patched, a key the primary still holds stays in progress
  until the primary ends (tests/integration/test_runner_stateful_split.py).

The binary's folder is named after the version and the patches' hash, so a changed patch builds a new binary.
"""
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from stack import paths
from stack.build_tools import go_binary, run_tool
from stack.versions import BEAM_VERSION

_LOGGER = logging.getLogger(__name__)

MODULE = "github.com/apache/beam/sdks/v2"
PATCHES = [Path(__file__).with_name(name) for name in ("prism-residual-watermarks.patch",
                                                       "prism-metrics-short-ids.patch",
                                                       "prism-finalize-when-asked.patch",
                                                       "prism-split-keeps-keys.patch")]


def prism_path() -> str:
    patch_hash = hashlib.sha256(b"".join(patch.read_bytes() for patch in PATCHES)).hexdigest()[:12]
    return str(paths.tool_dir("prism", f"{BEAM_VERSION}-{patch_hash}") / "prism")


def ensure_prism() -> str:
    """Path of a patched Prism binary matching the installed Beam SDK, built on first use."""
    binary = prism_path()
    if os.access(binary, os.X_OK):
        return binary
    _LOGGER.info("building Prism %s from the Go module proxy, with %s (1-2 minutes the first time)",
                 BEAM_VERSION, ", ".join(patch.name for patch in PATCHES))
    go = go_binary()
    source = json.loads(run_tool([go, "mod", "download", "-json", f"{MODULE}@v{BEAM_VERSION}"],
                             "downloading Prism's source"))["Dir"]
    with tempfile.TemporaryDirectory(dir=paths.tool_dir("prism")) as build:
        # The module cache is read-only; the copy must be writable for the patch (and for its own clean-up).
        shutil.copytree(os.path.join(source, "go"), os.path.join(build, "go"), copy_function=shutil.copyfile)
        for name in ("go.mod", "go.sum"):
            shutil.copyfile(os.path.join(source, name), os.path.join(build, name))
        for root, dirs, _ in os.walk(build):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
        for patch in PATCHES:
            run_tool(["git", "apply", "-p1", str(patch)], f"applying {patch.name}", cwd=build)
        env = dict(os.environ, GOWORK="off", GOFLAGS="-mod=mod")
        run_tool([go, "build", "-o", binary, "./go/cmd/prism"], "building Prism", cwd=build, env=env)
    return binary
