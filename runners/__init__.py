"""Runner presets: one module per runner, each turning hitstream's few runner-level settings into Beam options.

They hold no pipeline logic: `pipelines/` builds the same graph whatever the runner.
"""
from __future__ import annotations

import importlib

from stack.worker_exits import WorkerExits

__all__ = ["RUNNERS", "RunnerUnavailable", "WorkerExits", "pipeline_args"]  # WorkerExits: for pipelines/

RUNNERS = ("prism", "prism-cluster", "direct", "flink", "spark", "dataflow")


class RunnerUnavailable(RuntimeError):
    """The runner cannot be had on this machine; the message says why and what to do."""


def pipeline_args(runner: str, *, streaming: bool, job_name: str = "hitstream", checkpoint_dir: str = "") -> list:
    """Beam command-line options for `runner` (one of RUNNERS)."""
    if runner not in RUNNERS:
        raise ValueError(f"unknown runner {runner!r}; choose one of {', '.join(RUNNERS)}")
    preset = importlib.import_module(f"runners.{runner.replace('-', '_')}")
    args = preset.pipeline_args(streaming=streaming, job_name=job_name, checkpoint_dir=checkpoint_dir)
    return args + (["--streaming"] if streaming else [])

