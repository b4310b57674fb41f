"""Dataflow. By default the job graph is built offline (`--dry_run --no_auth`): no network, no credentials.

For a real submission set HITSTREAM_DATAFLOW_SUBMIT=1 and the usual GOOGLE_* credentials, plus
HITSTREAM_DATAFLOW_PROJECT, HITSTREAM_DATAFLOW_REGION and HITSTREAM_DATAFLOW_TEMP (a gs:// path).
setup.py is staged so the workers install hitstream's packages.
"""
import os
import pathlib

SETUP_PY = pathlib.Path(__file__).resolve().parent.parent / "setup.py"


def pipeline_args(streaming: bool, job_name: str, checkpoint_dir: str) -> list:
    submit = os.environ.get("HITSTREAM_DATAFLOW_SUBMIT") == "1"
    args = ["--runner=DataflowRunner", f"--job_name={job_name}", f"--setup_file={SETUP_PY}",
            f"--project={os.environ.get('HITSTREAM_DATAFLOW_PROJECT', 'hitstream-dry-run')}",
            f"--region={os.environ.get('HITSTREAM_DATAFLOW_REGION', 'us-central1')}",
            f"--temp_location={os.environ.get('HITSTREAM_DATAFLOW_TEMP', 'gs://hitstream-dry-run/tmp')}"]
    if not submit:
        args += ["--dry_run=True", "--no_auth"]
    return args
