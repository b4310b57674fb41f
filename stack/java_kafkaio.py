"""Beam's Java KafkaIO for `--kafka-io java`, without Docker: the unshaded jars from Maven Central, Beam's Java boot
program, and an expansion service that hands Prism a PROCESS environment for the Java worker.

- The classpath: `java-kafkaio-pom.xml` resolved with `mvn dependency:copy-dependencies` (about 140 MB, a minute
  cold), at JAVA_BEAM_VERSION, the newest Beam Java whose expansion service and harness Maven Central serves.
- The boot program: `go install github.com/apache/beam/sdks/v2/java/container@v<BEAM_VERSION>`. Prism runs it as
  `<command> --id='<id>' ...` without a shell, so `worker_command()` is a script that strips the quotes, gives the
  worker its own folder, tells the launcher when it ends (`stack.worker_exits`) and caps its heap (the boot program's own -Xmx is 70% of the machine's memory; the
  JVM takes `_JAVA_OPTIONS` after the command line).
- `ExpansionService`: started by `JavaExpansionService` for the expansion of a job's Java read, stopped after it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import grpc

from stack import paths, worker_exits
from stack.build_tools import go_install, mvn_copy_dependencies
from stack.versions import BEAM_VERSION

_LOGGER = logging.getLogger(__name__)

JAVA_BEAM_VERSION = "2.73.0"
JAVA_WORKER_HEAP = "768m"  # the Java worker's -Xmx
BOOT_MODULE = f"github.com/apache/beam/sdks/v2/java/container@v{BEAM_VERSION}"

_SCRIPT = """#!/bin/sh
# hitstream: start Beam's Java boot program for Prism's PROCESS environment (see stack/java_kafkaio.py).
id=$(printf '%s' "$1" | sed -e 's/^--id=//' -e "s/'//g")
shift
dir=$(mktemp -d "{workers}/java-worker-$id.XXXXXX")
cd "$dir" || exit 1  # the boot program writes pathing.jar and pipeline_options.json into its working directory
{exits}( while kill -0 $$ 2>/dev/null; do sleep 2; done; rm -rf "$dir"; {on_end} ) >/dev/null 2>&1 </dev/null &
export _JAVA_OPTIONS="-Xmx{heap}"
exec "{boot}" --id="$id" --semi_persist_dir="$dir" "$@"
"""


def _tools() -> Path:
    return paths.tool_dir("java-kafkaio", JAVA_BEAM_VERSION)


def classpath_dir() -> Path:
    return _tools() / "lib"


def boot_path() -> str:
    return str(_tools() / "container")


def ensure_classpath() -> Path:
    """The Java KafkaIO classpath, resolved with mvn once per version."""
    libs = classpath_dir()
    if not (libs / ".complete").exists():
        _LOGGER.info("fetching Beam Java %s KafkaIO jars with mvn into %s", JAVA_BEAM_VERSION, libs)
    return mvn_copy_dependencies("java-kafkaio-pom.xml", {"beam.version": JAVA_BEAM_VERSION}, libs,
                                 f"fetching Beam Java {JAVA_BEAM_VERSION} KafkaIO with mvn")


def ensure_boot() -> str:
    """Beam's Java boot program, built from the Go module proxy on first use."""
    return go_install(BOOT_MODULE, _tools(), "container", "building Beam's Java boot program")


def worker_command() -> str:
    """The Java worker's PROCESS command: a script that starts the boot program (see the module's docstring)."""
    workers = paths.cache_root() / "workers"
    workers.mkdir(parents=True, exist_ok=True)
    script = _SCRIPT.format(workers=workers, heap=JAVA_WORKER_HEAP, boot=ensure_boot(),
                            exits=worker_exits.SCRIPT_SNIPPET, on_end=worker_exits.SCRIPT_ON_END)
    path = _tools() / "worker"
    if not path.exists() or path.read_text() != script:
        path.write_text(script)
        path.chmod(0o755)
    return str(path)


BOOT_JARS_DIR = Path("/opt/apache/beam/jars")  # where Beam's Java boot program looks for these (fixed in boot.go)
_BOOT_JARS = {"beam-sdks-java-harness.jar": "beam-sdks-java-harness-", "jamm.jar": "jamm-",
              "slf4j-api.jar": "slf4j-api-", "slf4j-jdk14.jar": "slf4j-jdk14-"}


def _link_boot_jars(libs: Path) -> None:
    """The jars a Beam Java container image holds in BOOT_JARS_DIR, as links into the classpath."""
    BOOT_JARS_DIR.mkdir(parents=True, exist_ok=True)
    for name, prefix in _BOOT_JARS.items():
        (jar,) = [path for path in libs.glob(f"{prefix}*.jar") if path.name[len(prefix)].isdigit()]
        link = BOOT_JARS_DIR / name
        if not link.exists() or link.resolve() != jar.resolve():
            link.unlink(missing_ok=True)
            link.symlink_to(jar)


def ensure() -> None:
    """Everything the Java path needs, fetched or built once (`hitstream up` does not; the first Java job does)."""
    _link_boot_jars(ensure_classpath())
    worker_command()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class JavaExpansionService:
    """Beam's Java expansion service as Beam's ExternalTransform takes one: entered for an expansion (which also
    fetches the Java step's artifacts), it starts the JVM and yields a stub; on exit it stops it. Fails within
    `timeout` seconds, with the service's own output, when the service does not come up."""

    def __init__(self, timeout: float = 60.0) -> None:
        self._timeout = timeout
        self._service = self._channel = self._log = None

    def __enter__(self):
        # Deferred: `hitstream status` imports the stack and should not pay for Beam's import.
        from apache_beam.transforms.external import ExpansionAndArtifactRetrievalStub
        ensure()
        port = _free_port()
        command = ["java", "-Xmx512m", "-cp", f"{classpath_dir()}/*",
                   "org.apache.beam.sdk.expansion.service.ExpansionService", str(port),
                   "--defaultEnvironmentType=PROCESS", f'--defaultEnvironmentConfig={{"command": "{worker_command()}"}}']
        self._log = tempfile.TemporaryFile()
        self._service = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self._timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if self._service.poll() is not None or time.monotonic() > deadline:
                self._log.seek(0)
                output = self._log.read().decode(errors="replace")[-2000:]
                self.__exit__()
                raise RuntimeError(f"Beam's Java expansion service did not start within {self._timeout:.0f} s: "
                                   f"{output}")
            time.sleep(0.25)
        self._channel = grpc.insecure_channel(f"localhost:{port}", options=[("grpc.max_receive_message_length", -1)])
        return ExpansionAndArtifactRetrievalStub(self._channel)

    def __exit__(self, *exc) -> None:
        if self._channel is not None:
            self._channel.close()
        if self._service is not None and self._service.poll() is None:
            self._service.terminate()
            try:
                self._service.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._service.kill()
        if self._log is not None:
            self._log.close()
        self._service = self._channel = self._log = None


def status() -> dict:
    return {"java_beam_version": JAVA_BEAM_VERSION, "classpath": str(classpath_dir()),
            "fetched": (classpath_dir() / ".complete").exists(), "boot": boot_path(),
            "built": os.access(boot_path(), os.X_OK), "worker_heap": JAVA_WORKER_HEAP}
