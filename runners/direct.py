"""Beam's DirectRunner, for TestStream tests and bounded runs.

Beam's `DirectRunner` tries Prism first and then falls back to its in-process runners; hitstream hands it the locally
built Prism so that the first choice works offline. Streaming Kafka reads are not supported by the fallback runners
(BEAM-FACTS: the streaming BundleBasedDirectRunner fails on splittable DoFns), so use `prism` for streaming.
"""
from runners import RunnerUnavailable
from stack.prism import ensure_prism


def pipeline_args(streaming: bool, job_name: str, checkpoint_dir: str) -> list:
    if streaming:
        raise RunnerUnavailable("the DirectRunner cannot run hitstream's streaming Kafka read (Beam's streaming "
                                "DirectRunner does not support splittable DoFns); use --runner=prism, or "
                                "--trigger=available-now for a bounded run")
    return ["--runner=DirectRunner", f"--prism_location={ensure_prism()}", "--direct_num_workers=1",
            f"--job_name={job_name}"]
