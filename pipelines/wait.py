"""Waiting for a submitted job: until it ends, until the caller's stop (--run-seconds, Ctrl-C, SIGTERM) for a
streaming job, or until one of its PROCESS workers dies, which Prism would never report (`stack.worker_exits`)."""
from __future__ import annotations

import logging
import signal
import time
from typing import Optional

import grpc
from apache_beam.runners.runner import PipelineState

_LOGGER = logging.getLogger(__name__)

TERMINAL = (PipelineState.DONE, PipelineState.FAILED, PipelineState.CANCELLED)
POLL_SECONDS = 0.1  # a GetState call; a bounded job is seen to end within this
# A job that ends normally has its workers killed: give its final state this long to show before calling a worker's
# end a failure.
ENDED_WORKER_GRACE_SECONDS = 5.0
WORKER_REPORT_SECONDS = 3.0  # the worker scripts' watchers look every 2 s
PRISM_LOGGER = "PrismJobServer"  # where Beam relays Prism's own log lines


class _CancelIsNoError(logging.Filter):
    """Prism logs every bundle that a cancel interrupts as ERROR "Bundle Failed. (error='pipeline canceled')";
    a stop that hitstream asked for is not an error, so those lines become INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and "pipeline canceled" in record.getMessage():
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_CANCEL_IS_NO_ERROR = _CancelIsNoError()


class WorkerDied(RuntimeError):
    """A worker of the job ended while the job ran; the job was cancelled. The message holds the worker's last
    output."""


def wait_for_job(result, exits, streaming: bool, run_seconds: float = 0) -> Optional[str]:
    """The job's final state, or None when a streaming job was stopped as asked (and cancelled: a clean stop).

    A bounded job runs until it ends. A streaming one until it ends, `run_seconds` pass (0: no limit), or Ctrl-C or
    SIGTERM. `exits` is the job's `WorkerExits`: when a worker ended while the job still runs, the job is cancelled
    and WorkerDied raised, as it is when the job failed after a worker ended (Prism then says only "SDK worker
    disconnected"): the worker's own last output says why."""
    stop = {"now": False}
    # After Beam's own filter, which gives the relayed lines Prism's levels (it was added when the job server started).
    logging.getLogger(PRISM_LOGGER).addFilter(_CANCEL_IS_NO_ERROR)
    if streaming:  # a stop asked for: cancel between two polls (a KeyboardInterrupt inside one breaks the channel)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda signum, frame: stop.update(now=True))
    deadline = time.monotonic() + run_seconds if streaming and run_seconds else None
    try:
        # Poll the state: a portable result's wait_until_finish(duration) cannot be called twice (gRPC error 8).
        while not stop["now"] and (deadline is None or time.monotonic() < deadline):
            state, ended = result.state, exits.ended()
            if ended and state not in TERMINAL:
                state = _final_state_within(result, ENDED_WORKER_GRACE_SECONDS)
                if state is None:
                    _LOGGER.error("%s", "; ".join(worker.describe() for worker in ended))
                    _cancel(result)
                    raise WorkerDied(f"{ended[0].describe()}\nThe runner keeps a job whose worker died RUNNING "
                                     f"with nothing happening, so hitstream cancelled it.")
            if state in TERMINAL:
                if state == PipelineState.FAILED:
                    ended = ended or _ended_within(exits, WORKER_REPORT_SECONDS)
                    if ended:
                        raise WorkerDied(ended[0].describe())
                return state
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        if not streaming:
            _cancel(result)
            raise
    except grpc.RpcError:
        if not stop["now"]:
            raise
        # The signal that asked for the stop reached the runner's process too (kill of the process group).
    _cancel(result)
    return None


def _cancel(result) -> None:
    """Cancel the job; a Ctrl-C in a terminal reaches the runner's own process too, which may be gone already."""
    try:
        result.cancel()
    except grpc.RpcError as error:
        _LOGGER.info("the job service did not take the cancel (%s): it has stopped already", error.code())
    except ValueError as error:  # "Cannot invoke RPC on closed channel!": Beam closed it as the runner stopped
        _LOGGER.info("the job service did not take the cancel (%s): it has stopped already", error)


def _ended_within(exits, seconds: float) -> list:
    deadline = time.monotonic() + seconds
    while not exits.ended() and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    return exits.ended()


def _final_state_within(result, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = result.state
        if state in TERMINAL:
            return state
        time.sleep(POLL_SECONDS)
    return None
