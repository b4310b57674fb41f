"""Spark through Beam's Spark 3 job server jar (fetched by `mvn` in the local stack), local master."""
from runners.jars import java_jar


def pipeline_args(streaming: bool, job_name: str, checkpoint_dir: str) -> list:
    return ["--runner=SparkRunner", f"--spark_job_server_jar={java_jar('spark-job-server')}",
            "--spark_master_url=local[2]", "--environment_type=LOOPBACK", f"--job_name={job_name}"]
