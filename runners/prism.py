"""Prism, Beam's Go portable runner: the embedded default. Streams for real, on one machine.

The binary is built from the Go module proxy by the local stack (`stack.prism`), because Beam's own download comes
from GitHub releases. LOOPBACK runs the Python workers in this process, so memory sinks and progress are visible here.
"""
from stack.prism import ensure_prism


def pipeline_args(streaming: bool, job_name: str, checkpoint_dir: str) -> list:
    return ["--runner=PrismRunner", f"--prism_location={ensure_prism()}", "--environment_type=LOOPBACK",
            f"--job_name={job_name}"]
