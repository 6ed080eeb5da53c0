"""Job functions the SLURM and submitit tests submit (never the suite itself).

submitit pickles a job's function *by reference* (module + name), so these live in an importable module:
a function defined in a pytest test module cannot be unpickled inside the job. A SLURM job imports this
checkout (``bench.harness.slurm.make_executor`` puts the repository on the job's ``PYTHONPATH``), so
``tests.jobs`` resolves there as it does here.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import submitit

from bench.atomic import atomic_write_bytes
from bench.harness.jobs import CellJob


class EnvironmentOfCellJob(CellJob):
    """A ``CellJob`` that sets its ``environment`` as a cell's job does, then returns the environment variables
    ``names`` as the job sees them (absent ones left out) instead of training."""

    def __init__(self, environment: dict, names: tuple[str, ...]) -> None:  # no cell to train
        self.environment, self.names = dict(environment), names

    def __call__(self) -> dict:
        self.set_environment()
        return {n: os.environ[n] for n in self.names if n in os.environ}


def echo_job(x: Any) -> dict:
    """Return ``x`` with where it ran (a smoke test for submission, arrays and results)."""
    env = submitit.JobEnvironment()
    return {"x": x, "job_id": env.job_id, "host": socket.gethostname(), "pid": os.getpid()}


def fail_job(message: str) -> None:
    """Raise ``RuntimeError(message)`` inside the job (``job.result()`` raises ``FailedJobError``)."""
    raise RuntimeError(message)


def sleep_job(seconds: float) -> float:
    """Sleep, then return the time the job finished (for dependency ordering)."""
    time.sleep(seconds)
    return time.time()


def started_at_job(tag: str) -> dict:
    """Return ``tag`` and the time the job started."""
    return {"tag": tag, "started": time.time()}


class CheckpointableJob:
    """Count to ``n_steps`` (``step_s`` seconds each), keeping progress in ``state_path``.

    The pattern for long jobs (``bench.harness.jobs.CellJob`` follows it): ``__call__`` resumes from the state
    file, writes it after every step, and ``checkpoint()`` returns a ``DelayedSubmission`` of the same callable.
    Returns the final state: ``{"step": n_steps, "attempts": how many times the job started, "resumed_from":
    [start step of each attempt]}``.
    """

    def __init__(self, state_path: str | Path, n_steps: int = 10, step_s: float = 0.5) -> None:
        self.state_path = Path(state_path)
        self.n_steps = n_steps
        self.step_s = step_s

    def read_state(self) -> dict:
        if self.state_path.exists():
            return json.loads(self.state_path.read_text())
        return {"step": 0, "attempts": 0, "resumed_from": []}

    def _write(self, state: dict) -> None:
        atomic_write_bytes(self.state_path, json.dumps(state).encode())

    def __call__(self) -> dict:
        state = self.read_state()
        state["attempts"] += 1
        state["resumed_from"].append(state["step"])
        self._write(state)
        while state["step"] < self.n_steps:
            time.sleep(self.step_s)
            state["step"] += 1
            self._write(state)
        return state

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on preemption/time-out: requeue this same callable (progress is on disk)."""
        return submitit.helpers.DelayedSubmission(self)
