"""Each runner preset's options are ones Beam's own option parsers know, and the job-server jars are the artifacts
Beam itself would fetch. Flink and Spark cannot run here (their job servers are not served), so this is how far
their presets can be checked."""
import re

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils.subprocess_server import JavaJarServer

import runners
from stack import beam_jars
from stack.versions import BEAM_VERSION, FLINK_VERSION


def _preset_args(runner: str, monkeypatch, **kwargs) -> list:
    if runner in ("flink", "spark"):  # the jar is missing here; its path does not matter to the parser
        monkeypatch.setattr(f"runners.{runner}.java_jar", lambda name: f"/jars/{name}.jar")
    return runners.pipeline_args(runner, job_name="presets", **kwargs)


@pytest.mark.parametrize("runner", ["prism", "prism-cluster", "direct", "flink", "spark", "dataflow"])
@pytest.mark.parametrize("streaming", [False, True])
def test_every_option_of_a_preset_is_known_to_beams_parsers(runner, streaming, monkeypatch, tmp_path):
    if runner == "direct" and streaming:
        pytest.skip("the direct preset refuses to stream")
    checkpoint_dir = str(tmp_path) if runner == "flink" else ""
    args = _preset_args(runner, monkeypatch, streaming=streaming, checkpoint_dir=checkpoint_dir)
    # Without retain_unknown_options, Beam keeps only the options some PipelineOptions class declares: what a
    # FlinkRunner without --flink_submit_uber_jar, or Prism's workers, would get.
    known = PipelineOptions(args).get_all_options(drop_default=False, retain_unknown_options=False)
    for arg in args:
        name = re.match(r"--([a-z_]+)", arg).group(1)
        assert name in known, f"{runner}: Beam does not know {arg}, and would drop it"


def test_flink_state_options_reach_the_job(monkeypatch, tmp_path):
    args = _preset_args("flink", monkeypatch, streaming=True, checkpoint_dir=str(tmp_path))
    options = PipelineOptions(args).get_all_options(drop_default=True, retain_unknown_options=False)
    assert options["checkpointing_interval"] == 10000
    assert options["state_backend"] == "filesystem"
    assert options["state_backend_storage_path"] == f"file://{tmp_path}/flink"


@pytest.mark.parametrize("name,gradle_target", [
    ("flink-job-server", f":runners:flink:{FLINK_VERSION}:job-server:shadowJar"),
    ("spark-job-server", ":runners:spark:3:job-server:shadowJar"),
    ("io-expansion-service", ":sdks:java:io:expansion-service:shadowJar"),
])
def test_the_stack_fetches_the_jar_beam_itself_would(name, gradle_target):
    url = JavaJarServer.path_to_beam_jar(gradle_target)
    assert url.startswith(JavaJarServer.MAVEN_CENTRAL_REPOSITORY)
    assert url.endswith(f"/{beam_jars.JARS[name]}/{BEAM_VERSION}/{beam_jars.JARS[name]}-{BEAM_VERSION}.jar"), url
