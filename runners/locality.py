"""Where a job's workers run: whether in this process (LOOPBACK on Prism, direct, a local Flink or Spark), which the
memory sink needs because its tables live in the process that runs the workers."""
from __future__ import annotations

from apache_beam.options.pipeline_options import PortableOptions, StandardOptions

_RUNNER_NAMES_LOCAL = {"prismrunner", "directrunner", "switchingdirectrunner", "bundlebaseddirectrunner",
                       "fnapirunner", "interactiverunner", "testdirectrunner"}


class RemoteRunnerError(ValueError):
    """The memory sink was chosen for a job whose workers do not run in this process."""


def check_local_runner(options) -> None:
    """Refuse the memory sink unless the job's workers run in this process. Call before submitting.

    `options` is a PipelineOptions. Allowed: Prism and the DirectRunner, and Flink/Spark with a local master, all
    with the LOOPBACK environment (or the in-process default).
    """
    runner = options.view_as(StandardOptions).runner
    runner_name = (runner if isinstance(runner, str) else type(runner).__name__ if runner else "DirectRunner")
    name = runner_name.lower().rsplit(".", 1)[-1]
    name = name if name.endswith("runner") else name + "runner"
    environment = (options.view_as(PortableOptions).environment_type or "").upper()
    fix = ("The memory sink keeps its table in the worker's memory, which must be this process: use "
           "--runner prism (or direct), or pick another sink (jdbc, parquet, kafka) for a cluster.")
    if name == "dataflowrunner":
        raise RemoteRunnerError(f"the memory sink cannot run on Dataflow: its workers are remote machines. {fix}")
    all_options = options.get_all_options(drop_default=False, retain_unknown_options=True)
    if name == "flinkrunner":
        master = str(all_options.get("flink_master") or "[auto]")
        if master not in ("[local]", "[auto]"):
            raise RemoteRunnerError(
                f"the memory sink cannot run on the Flink cluster at {master}: only --flink_master=[local] runs "
                f"the workers in this process. {fix}")
    elif name == "sparkrunner":
        master = str(all_options.get("spark_master_url") or "local[4]")
        if not master.startswith("local"):
            raise RemoteRunnerError(
                f"the memory sink cannot run on the Spark cluster at {master}: only a local[N] master runs the "
                f"workers in this process. {fix}")
    elif name not in _RUNNER_NAMES_LOCAL and name != "portablerunner":
        raise RemoteRunnerError(f"the memory sink is not supported on {runner_name}. {fix}")
    if environment and environment != "LOOPBACK":
        raise RemoteRunnerError(
            f"the memory sink needs --environment_type=LOOPBACK (workers in this process), got {environment}. "
            f"{fix}")
