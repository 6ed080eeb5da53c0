"""Job functions run by submitit on SLURM (or locally).

submitit pickles a job's function *by reference* (module + name), so everything a job runs must live
in an importable package module like this one: a function defined in a test module or notebook cannot
be unpickled inside the job.

Requeue contract (preemption, time-out, ``scontrol requeue``): a job may be killed at any moment and
started again with the same arguments. Jobs that run long therefore keep their progress in files and
resume from them; ``checkpoint()`` (called by submitit on preemption/time-out) just resubmits the same
callable, because the state on disk already says where to continue.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import submitit

from bench.harness.store import run_cell_in_store


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


def _write_json_atomically(path: Path, payload: dict) -> None:
    from bench.atomic import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(payload).encode())


class CheckpointableJob:
    """Count to ``n_steps`` (``step_s`` seconds each), keeping progress in ``state_path``.

    The pattern for long jobs: ``__call__`` resumes from the state file, writes it after every step, and
    ``checkpoint()`` returns a ``DelayedSubmission`` of the same callable. Returns the final state:
    ``{"step": n_steps, "attempts": how many times the job started, "resumed_from": [start step of
    each attempt]}``.
    """

    def __init__(self, state_path: str | Path, n_steps: int = 10, step_s: float = 0.5) -> None:
        self.state_path = Path(state_path)
        self.n_steps = n_steps
        self.step_s = step_s

    def read_state(self) -> dict:
        if self.state_path.exists():
            return json.loads(self.state_path.read_text())
        return {"step": 0, "attempts": 0, "resumed_from": []}

    def __call__(self) -> dict:
        state = self.read_state()
        state["attempts"] += 1
        state["resumed_from"].append(state["step"])
        _write_json_atomically(self.state_path, state)
        while state["step"] < self.n_steps:
            time.sleep(self.step_s)
            state["step"] += 1
            _write_json_atomically(self.state_path, state)
        return state

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on preemption/time-out: requeue this same callable (progress is on disk)."""
        return submitit.helpers.DelayedSubmission(self)


class CellJob:
    """Train and evaluate one benchmark cell in the result store (resumable; see module docstring).

    ``__call__`` runs ``bench.harness.store.run_cell_in_store(cell, root)``, which skips a cell that is
    already done and resumes training from the cell's last checkpoint. ``checkpoint()`` requeues the same
    call, so a preempted or timed-out cell continues where its checkpoint left it.
    """

    def __init__(self, cell: Any, root: str | Path, **options: Any) -> None:
        self.cell = cell
        self.root = str(root)
        # The sweep's own choices, as the inline executor passes them: force (with force_before, the
        # sweep's start, so a requeued job does not train a cell its first attempt finished again),
        # wait_lock, allow_code_change.
        self.options = options

    def __call__(self) -> Any:
        # which trains with the cell's threads (bench.train.cell_threads)
        return run_cell_in_store(self.cell, self.root, **getattr(self, "options", {}))

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(self)

    def __repr__(self) -> str:
        return f"CellJob(cell={self.cell!r}, root={self.root!r})"
