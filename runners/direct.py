"""Beam's direct runner, for TestStream tests and bounded runs.

On Beam 2.77 `--runner=DirectRunner` is a switch: it hands any pipeline Prism can run to Prism, and only otherwise
uses its own in-process engine. hitstream's graph is one Prism runs, so asking for DirectRunner would just be Prism
again. This preset therefore pins the DirectRunner's own batch engine, the in-process FnApiRunner, so a bounded run
really exercises a second engine. Unit tests with TestStream use the streaming BundleBasedDirectRunner directly.

Streaming Kafka reads are not possible here: FnApiRunner emits nothing until an unbounded source ends, and the
streaming BundleBasedDirectRunner fails on splittable DoFns (BEAM-FACTS). Use prism for streaming.
"""
from runners import RunnerUnavailable

IN_PROCESS_ENGINE = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"


def pipeline_args(streaming: bool, job_name: str, checkpoint_dir: str) -> list:
    if streaming:
        raise RunnerUnavailable("the direct runner cannot stream hitstream's Kafka read (its in-process engines "
                                "emit nothing from an unbounded source, or reject splittable DoFns when "
                                "streaming); use --runner=prism, or --trigger=available-now for a bounded run")
    return [f"--runner={IN_PROCESS_ENGINE}", "--direct_num_workers=1", f"--job_name={job_name}"]
