"""Flink through Beam's Flink job server jar (fetched by `mvn` in the local stack), embedded `[local]` master."""
from apache_beam.options.pipeline_options import PipelineOptions

from runners.jars import java_jar
from stack.versions import FLINK_VERSION


class FlinkStateOptions(PipelineOptions):
    """Options of Beam's Java FlinkPipelineOptions (checkpointingInterval, stateBackend, stateBackendStoragePath)
    that Beam's Python FlinkRunnerOptions does not declare. Beam's FlinkRunner forwards undeclared options to the
    job server only with --flink_submit_uber_jar, and otherwise drops them without a word; declared here, they
    travel in the job's options as every declared one does, and the job server reads them by name."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--checkpointing_interval", type=int, default=None,
                            help="Flink: milliseconds between checkpoints (Java checkpointingInterval)")
        parser.add_argument("--state_backend", default=None,
                            help="Flink: 'rocksdb' or 'filesystem' (Java stateBackend)")
        parser.add_argument("--state_backend_storage_path", default=None,
                            help="Flink: where the state backend keeps its data (Java stateBackendStoragePath)")


def pipeline_args(streaming: bool, job_name: str, checkpoint_dir: str) -> list:
    args = ["--runner=FlinkRunner", f"--flink_job_server_jar={java_jar('flink-job-server')}",
            f"--flink_version={FLINK_VERSION}", "--flink_master=[local]", "--environment_type=LOOPBACK",
            f"--job_name={job_name}"]
    if streaming:
        args += ["--checkpointing_interval=10000"]
    if checkpoint_dir:
        args += ["--state_backend=filesystem", f"--state_backend_storage_path=file://{checkpoint_dir}/flink"]
    return args
