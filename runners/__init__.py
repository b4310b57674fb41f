"""Runner presets: one module per runner, each turning hitstream's few runner-level settings into Beam options.

They hold no pipeline logic: `pipelines/` builds the same graph whatever the runner.
"""
from __future__ import annotations

import importlib
from typing import Sequence

from stack.worker_exits import WorkerExits

__all__ = ["RUNNERS", "RunnerUnavailable", "WorkerExits", "pipeline_args"]  # WorkerExits: for pipelines/

RUNNERS = ("prism", "prism-cluster", "direct", "flink", "spark", "dataflow")


class RunnerUnavailable(RuntimeError):
    """The runner cannot be had on this machine; the message says why and what to do."""


PRISM_RUNNERS = ("prism", "prism-cluster")


def pipeline_args(runner: str, *, streaming: bool, job_name: str = "hitstream", checkpoint_dir: str = "",
                  user_args: Sequence[str] = ()) -> list:
    """Beam command-line options for `runner` (one of RUNNERS); `user_args` are the job's own Beam options. The
    Prism presets also start (or reuse) this process's Prism and point the job at it (runners.prism_service)."""
    if runner not in RUNNERS:
        raise ValueError(f"unknown runner {runner!r}; choose one of {', '.join(RUNNERS)}")
    preset = importlib.import_module(f"runners.{runner.replace('-', '_')}")
    args = preset.pipeline_args(streaming=streaming, job_name=job_name, checkpoint_dir=checkpoint_dir)
    if runner in PRISM_RUNNERS:
        from runners.prism_service import job_endpoint_args
        args += job_endpoint_args([*args, *user_args])  # the user's --prism_location wins over the preset's
    return args + (["--streaming"] if streaming else [])

