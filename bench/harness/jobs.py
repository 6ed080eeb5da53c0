"""The job submitit runs for a cell, on SLURM or as a local process: :class:`CellJob`.

submitit pickles a job *by reference* (module + name), so a job lives in an importable package module like
this one. The pickle is a file edge: it holds the cell's and the options' plain forms (``Cell.to_dict``,
``RunOptions.to_dict``), read back when the job starts, so a job submitted before a code change still reads.

Requeue contract (preemption, time-out, ``scontrol requeue``): a job may be killed at any moment and
started again with the same arguments. A cell keeps its progress in its run folder and resumes from it;
``checkpoint()`` (called by submitit on preemption/time-out) just resubmits the same callable, because the
state on disk already says where to continue. (The test jobs of the SLURM tests are in ``tests/jobs.py``.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import submitit

from bench.harness.store import PLAIN_RUN, RunOptions, run_cell_in_store
from bench.spec import Cell


class CellJob:
    """Train and evaluate one benchmark cell in the result store (resumable; see module docstring).

    ``__call__`` runs ``bench.harness.store.run_cell_in_store(cell, root, options)``, which skips a cell that is
    already done and resumes training from the cell's last checkpoint (with the cell's threads,
    ``bench.train.cell_threads``). ``options`` are the sweep's (``force`` with ``force_before``, the sweep's
    start, so a requeued job does not train a cell its first attempt finished again).
    """

    def __init__(self, cell: Cell, root: str | Path, options: RunOptions = PLAIN_RUN,
                 environment: dict[str, str | None] | None = None) -> None:
        self.cell = cell.to_dict()
        self.root = str(root)
        self.options = options.to_dict()
        self.environment = dict(environment or {})  # set in the job before it trains (None: unset)

    def __call__(self) -> Any:
        self.set_environment()
        return run_cell_in_store(Cell.from_dict(self.cell), self.root, RunOptions(**self.options))

    def set_environment(self) -> None:
        """Set (or, for None, unset) the job's ``environment`` in this process, before anything trains."""
        for name, value in getattr(self, "environment", {}).items():  # a job pickled before it had one: none
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(self)

    def __repr__(self) -> str:
        return f"CellJob(cell={self.cell.get('id')!r}, root={self.root!r})"
