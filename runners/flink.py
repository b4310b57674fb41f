"""Flink through Beam's Flink job server jar (fetched by `mvn` in the local stack), embedded `[local]` master."""
from runners.jars import java_jar
from stack.versions import FLINK_VERSION


def pipeline_args(streaming: bool, job_name: str, checkpoint_dir: str) -> list:
    args = ["--runner=FlinkRunner", f"--flink_job_server_jar={java_jar('flink-job-server')}",
            f"--flink_version={FLINK_VERSION}", "--flink_master=[local]", "--environment_type=LOOPBACK",
            f"--job_name={job_name}"]
    if streaming:
        args += ["--checkpointing_interval=10000"]
    if checkpoint_dir:
        args += ["--state_backend=filesystem", f"--state_backend_storage_path=file://{checkpoint_dir}/flink"]
    return args
