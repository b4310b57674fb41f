"""Shared by the Flink and Spark presets: find Beam's job-server jar or say exactly why it is missing."""
from runners import RunnerUnavailable
from stack import beam_jars


def job_server_jar(name: str) -> str:
    path = beam_jars.jar_path(name)
    if path:
        return path
    record = beam_jars.load_status().get(name) or {}
    artifact = record.get("artifact", beam_jars.JARS[name])
    error = record.get("error", "not fetched yet: run `hitstream up`")
    raise RunnerUnavailable(f"Beam's {name} jar ({artifact}) is not available on this machine: {error}")
