"""Prism with its Python SDK workers in processes of their own, shaped as a Flink or Dataflow cluster runs them.

Beam's Python boot program starts each worker (a PROCESS environment, `stack.python_worker`): it makes the worker a
fresh venv and pip-installs the staged `setup.py` into it, so the workers import hitstream from what was staged and
share no memory with the process that launched the job. Prism starts one worker process per environment: it
ignores `--sdk_worker_parallelism` and passes the boot program no sibling workers.
"""
import json
import pathlib

from runners import RunnerUnavailable
from stack.prism import ensure_prism
from stack.python_worker import worker_command

SETUP_PY = pathlib.Path(__file__).resolve().parent.parent / "setup.py"


def pipeline_args(streaming: bool, job_name: str, checkpoint_dir: str) -> list:
    if checkpoint_dir:
        raise RunnerUnavailable(
            "--checkpoint-dir cannot be used with --runner prism-cluster: the aggregate checkpoint hands the counts "
            "from the Kafka read to the counter through the memory of the process that runs both, and here they run "
            "in worker processes that share nothing with each other or with this one. Prism keeps no state of its "
            "own across a restart either (on Flink, its checkpoints do). Drop --checkpoint-dir (a restart then "
            "counts afresh from --starting-offsets), or use --runner prism")
    return ["--runner=PrismRunner", f"--prism_location={ensure_prism()}", "--environment_type=PROCESS",
            f"--environment_config={json.dumps({'command': worker_command()})}", f"--setup_file={SETUP_PY}",
            f"--job_name={job_name}"]
