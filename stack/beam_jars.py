"""Optional Beam Java jars: the Flink and Spark job servers and the expansion services.

Beam would download these itself over plain HTTP at pipeline build time; fetching them
here through `mvn` puts them in the cache ahead of time and records which ones Maven
Central serves. None of them is required by the default (Prism) path, so a missing jar
is recorded, with mvn's exact error, and never fails the set-up. A miss is retried only
after a day, so an offline artifact does not cost a Maven round trip on every run.
"""
import datetime
import json
import logging
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

from stack import paths
from stack.versions import BEAM_VERSION, FLINK_VERSION

_LOGGER = logging.getLogger(__name__)

JARS = {
    "flink-job-server": f"beam-runners-flink-{FLINK_VERSION}-job-server",
    "spark-job-server": "beam-runners-spark-3-job-server",
    "io-expansion-service": "beam-sdks-java-io-expansion-service",
    "schemaio-expansion-service": "beam-sdks-java-extensions-schemaio-expansion-service",
}
_RETRY_MISSING_AFTER = datetime.timedelta(days=1)
# An explicit plugin version: mvn 3.8's default (2.8) cannot `copy` outside a project.
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"


def _jar_dir() -> Path:
    return paths.tool_dir("beam-jars", BEAM_VERSION)


def _status_file() -> Path:
    return _jar_dir() / "status.json"


def load_status() -> dict:
    try:
        return json.loads(_status_file().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _mvn_error(output: str) -> str:
    """The first [ERROR] line of mvn's output, without colour codes."""
    for line in re.sub(r"\x1b\[[0-9;]*m", "", output).splitlines():
        if line.startswith("[ERROR]") and line.strip() != "[ERROR]":
            return line
    return output.strip()[-500:]


def _fetch(name: str, timeout: float) -> dict:
    artifact = f"org.apache.beam:{JARS[name]}:{BEAM_VERSION}:jar"
    record = {"artifact": artifact, "checked": _now().isoformat(timespec="seconds")}
    with tempfile.TemporaryDirectory(prefix="hitstream-mvn-") as work:
        try:
            result = subprocess.run(
                # -U: ask Central again instead of replaying a miss cached in ~/.m2.
                ["mvn", "-q", "-B", "-U", f"{_DEPENDENCY_PLUGIN}:copy", f"-Dartifact={artifact}",
                 f"-DoutputDirectory={_jar_dir()}"],
                cwd=work, capture_output=True, text=True, timeout=timeout,  # cwd: no stray pom.xml
            )
        except subprocess.TimeoutExpired:
            return dict(record, status="missing", error=f"mvn timed out after {timeout:.0f}s")
    path = _jar_dir() / f"{JARS[name]}-{BEAM_VERSION}.jar"
    if result.returncode == 0 and path.exists():
        return dict(record, status="found", path=str(path))
    return dict(record, status="missing", error=_mvn_error(result.stdout + result.stderr))


def _due(record: Optional[dict]) -> bool:
    if record is None:
        return True
    if record["status"] == "found":
        return not Path(record["path"]).exists()
    return _now() - datetime.datetime.fromisoformat(record["checked"]) > _RETRY_MISSING_AFTER


def fetch_all(timeout: float = 900.0) -> dict:
    """Try each jar that is neither cached nor a recent miss; return the status of all."""
    status = load_status()
    for name in JARS:
        if _due(status.get(name)):
            _LOGGER.info("fetching %s %s with mvn", JARS[name], BEAM_VERSION)
            status[name] = _fetch(name, timeout)
            _status_file().write_text(json.dumps(status, indent=2) + "\n")
            if status[name]["status"] == "missing":
                _LOGGER.warning("Beam jar %s is not available: %s", name, status[name]["error"])
    return status


def missing_reason(name: str) -> str:
    """Why a jar (a key of JARS) is not here: its artifact and mvn's error, for a message that says what to do."""
    record = load_status().get(name) or {}
    artifact = record.get("artifact", JARS[name])
    error = record.get("error", "not fetched yet: run `hitstream up`")
    return f"Beam's {name} jar ({artifact}) is not available on this machine: {error}"


def jar_path(name: str) -> Optional[str]:
    """Local path of a fetched jar (a key of JARS), or None if Maven Central lacks it."""
    record = load_status().get(name)
    if record and record["status"] == "found" and Path(record["path"]).exists():
        return record["path"]
    return None
