"""Run the pending cells of a suite: in this process, or as submitit jobs (local processes or SLURM).

The executor boundary: every executor receives cells in dependency stages (baselines first, then
the OAS cells that fine-tune from them) and runs :class:`bench.harness.jobs.CellJob` for each —
``run_cell_in_store``, which skips done cells and resumes from a cell's last checkpoint. The store
is the source of truth for states; SLURM adds queued/running for submitted cells.

- ``inline``: one cell after another in this process (progress bar over the sweep).
- ``local``: submitit's LocalExecutor (subprocesses on this machine), one stage after the other, as
  many cells at once as this machine's CPUs hold: a cell takes its ``resources.cpus`` (torch trains it
  with that many threads, ``bench.train.cell_threads``) and the next one starts when enough CPUs are free, so
  parallel cells never oversubscribe the cores (two 2-thread processes on 2 cores ran 6x slower). Each job
  gets its cell's ``resources.time_min`` and the GPUs this process sees (:func:`bench.harness.slurm.local_job_parameters`,
  :func:`~bench.harness.slurm.local_job_environment`).
- ``slurm``: one job array per stage and resource shape (:func:`plan_arrays`: the cells' ``resources``
  after the cluster profile's caps; a cell the profile cannot hold is named before anything is
  submitted), all submitted at once; OAS cells wait on their baselines' jobs with ``afterok`` across
  arrays (cancelled by SLURM if a baseline fails). :func:`bench.harness.dryrun.dry_run` prints what would be
  submitted. A ``submitted.json`` in a cell's folder
  records its job, so submitting again never duplicates a cell that is queued or running; a cell
  whose job is gone but left its ``running`` marker (scancel, node failure) is interrupted (its lock is
  free) and runs again, resuming from its checkpoint.

Concurrent sweeps on one store share the work: each cell is trained under its lock
(:class:`bench.harness.store.CellLock`), a locked cell is skipped (``wait_lock``: waited for) and
the next one taken; ``force`` replaces only results finished before the sweep started, so two forced
sweeps at once train each cell once. A plain sweep runs ``pending``, ``interrupted`` (SIGTERM, Ctrl-C,
or a ``running`` marker whose process is gone), ``stale`` (done for other data), ``corrupt`` and
``mixed-code`` cells (done by other training code than the rest of the suite: retrained with this code).
A SIGTERM / Ctrl-C stops an inline sweep after saving the running cell's checkpoint, or after the cell
finishing its final evaluation (its result kept), or between two cells; no further cell starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from bench.harness.cells import describe, expand, topological_order
from bench.harness.config import Suite
from bench.harness.store import (
    DEFAULT_ROOT,
    PLAIN_RUN,
    RunOptions,
    failure_message,
    link_out_of_root,
    locate_run,
    mark_mixed_code,
    run_cell_in_store,
    run_status,
    write_atomic,
)
from bench.spec import Cell

if TYPE_CHECKING:
    from bench.harness.slurm import JobRequest

#: States a plain sweep runs (``failed`` needs ``--retry-failed``, which also takes over interrupted ones).
RUNNABLE = ("pending", "interrupted", "stale", "corrupt", "mixed-code")

SUBMITTED_FILE = "submitted.json"
JOBS_DIR = ".jobs"  # <root>/.jobs: the executors' logs and pickles (a dot name: never a suite's folder)


class SweepError(ValueError):
    """A sweep that cannot start as asked (the message names the option and the fix)."""

ACTIVE_SLURM_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
                       "REQUEUE_HOLD", "REQUEUE_FED"}


def submitted_job(run_dir: Path) -> dict | None:
    path = Path(run_dir) / SUBMITTED_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def anchor_ids(cells: list[Cell]) -> tuple[str, ...]:
    """The ids of the cells that other cells of ``cells`` start from (OAS baselines, whose ``best.pt`` they read)."""
    return tuple(sorted({d for c in cells for d in c.depends_on or []}))


def cell_states(cells: list[Cell], root: Path, query_slurm: bool = True) -> dict[str, dict]:
    """Per cell id: {"state": pending|queued|running|interrupted|done|stale|corrupt|failed, "run_dir",
    "job_id"?, "error"?, "log"?, "data_fingerprint"? and "result_fingerprint"? (stale)}. A cell others start from
    whose ``best.pt`` is missing or damaged is ``corrupt`` (:func:`bench.harness.store.run_status`, ``anchor``)."""
    out, slurm_ids, fps = {}, {}, {}
    anchors = set(anchor_ids(cells))
    for cell in cells:
        run_dir = locate_run(cell, root, fingerprints=fps)
        info = run_status(cell, run_dir, fps, anchor=cell.id in anchors)
        state = info["state"]
        info["log"] = str(run_dir / "log.txt")
        job = submitted_job(run_dir)
        if job and state not in ("done",):
            info["job_id"] = job["job_id"]
            info["job_log"] = job.get("stderr")
            if job.get("executor") == "slurm":
                slurm_ids[cell.id] = job["job_id"]
        if state == "failed":  # the error line and where to read more (shown by `python -m bench status`)
            message = failure_message(run_dir) or ""
            first = message.splitlines()[0] if message else "failed"
            info["error"] = f"{first} (log: {info.get('job_log') or info['log']})"
        out[cell.id] = info
    mark_mixed_code(out)  # done cells made by other training code than the rest: retrained, not pooled
    if slurm_ids and query_slurm:
        from bench.harness.slurm import slurm_states

        try:
            states = slurm_states(list(slurm_ids.values()))
        except Exception:  # noqa: BLE001 - SLURM unreachable: report the store's view
            states = {}
        for cid, jid in slurm_ids.items():
            s = states.get(jid, "UNKNOWN")
            out[cid]["slurm_state"] = s
            if out[cid]["state"] in ("pending", "running", "interrupted") and s in ACTIVE_SLURM_STATES:
                out[cid]["state"] = "queued" if s in ("PENDING", "REQUEUED", "REQUEUE_HOLD", "CONFIGURING") \
                    else "running"
            elif out[cid]["state"] == "running" and s not in ACTIVE_SLURM_STATES:
                # The job was killed (scancel, node failure) without removing its `running` marker: the
                # cell is not running anywhere, so it is pending again (it resumes from its checkpoint).
                out[cid]["state"] = "pending"
                out[cid]["interrupted"] = True
    return out


def select_cells(cells: list[Cell], states: dict, force: bool = False, retry_failed: bool = False) -> list[Cell]:
    """Cells to run now: the ``RUNNABLE`` ones (not queued/running elsewhere); with ``retry_failed`` the
    failed and interrupted ones and the runnable cells they start from; with ``force`` every cell."""
    if force:
        return list(cells)
    if retry_failed:  # with the cells they start from that are not done (e.g. a baseline whose best.pt broke)
        retry = {c.id for c in cells if states[c.id]["state"] in ("failed", "interrupted")}
        needed = {d for c in cells if c.id in retry for d in c.depends_on or []
                  if d in states and states[d]["state"] in RUNNABLE}
        return [c for c in cells if c.id in retry | needed]
    return [c for c in cells if states[c.id]["state"] in RUNNABLE]


def stages(cells: list[Cell]) -> list[list[Cell]]:
    """Cells grouped so every cell comes after the cells it depends on among ``cells`` (0: no dependency); a
    dependency outside them (a baseline already done) holds nothing up."""
    level: dict[str, int] = {}
    ids = {c.id for c in cells}
    by_id = {c.id: c for c in cells}
    inside = [c.replace(depends_on=[d for d in c.depends_on or [] if d in ids]) for c in cells]
    order = [by_id[c.id] for c in topological_order(inside)]
    for c in order:
        level[c.id] = 1 + max((level[d] for d in c.depends_on or [] if d in ids), default=-1)
    out: list[list[Cell]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for c in order:
        out[level[c.id]].append(c)
    return out


def sweep(suite: Suite, executor: str = "inline", root: str | Path = DEFAULT_ROOT, cluster: str | None = None,
          options: RunOptions = PLAIN_RUN, retry_failed: bool = False, wait: bool = True, progress: bool = True,
          tracker_factory="default", jobs_folder: str | Path | None = None, rates_path: str | Path | None = None) -> dict:
    """Run the selected cells of ``suite``; returns {"cells": n, "selected": [ids], "states": {...},
    "jobs": {cell id: job id}, "lost": [job ids that ended without a result, e.g. cancelled]} and, inline,
    "outcomes" {cell id: state after this sweep's attempt, "… (skipped)" when it trained nothing}, "errors"
    {cell id: message}, "signal" (the SIGTERM / SIGINT that stopped the sweep, if any). ``options``: how each
    cell runs (``force`` replaces only results finished before this sweep started; cells made by other
    training code than the rest of their table are retrained)."""
    root = Path(root)
    _check_executor(executor, cluster, wait)
    cells = topological_order(expand(suite))
    if not cells:
        raise SweepError(f"suite {suite.name} ({suite.path}) expands to 0 cells: nothing to run; list at least one "
                         "dataset, matcher, strategy and seed")
    options = replace(options, force_before=time.time() if options.force else None, retrain_other_code=True,
                      anchors=anchor_ids(cells))
    states = cell_states(cells, root)
    todo = select_cells(cells, states, force=options.force, retry_failed=retry_failed)
    report = {"suite": suite.name, "cells": len(cells), "selected": [c.id for c in todo], "jobs": {}}
    if executor == "inline":
        report.update(_run_inline(todo, root, options, progress, tracker_factory))
    else:
        # Parents queued/running from an earlier sweep: their dependents wait for that job.
        active = {cid: s["job_id"] for cid, s in states.items()
                  if s["state"] in ("queued", "running") and "job_id" in s and "slurm_state" in s}
        report["jobs"], report["lost"], stopped_by = _submit(todo, root, executor, cluster, wait, jobs_folder,
                                                             active, options, rates_path)
        if stopped_by:
            report["signal"] = stopped_by
    report["states"] = cell_states(cells, root)
    return report


def _check_executor(executor: str, cluster: str | None, wait: bool) -> None:
    if executor not in ("inline", "local", "slurm"):
        raise SweepError(f"executor must be inline, local or slurm, got {executor!r}")
    if executor == "slurm" and cluster is None:
        raise SweepError("--executor slurm needs --cluster PROFILE (slurm/profiles/<name>.yaml or a path): it says where "
                         "jobs go and what the cluster allows; without one a sweep would ask a default partition for "
                         "full-scale cells")
    if executor != "slurm" and cluster is not None:
        raise SweepError(f"--cluster {cluster} applies to --executor slurm only, not {executor}: drop --cluster or "
                         "use --executor slurm")
    if executor != "slurm" and not wait:
        raise SweepError(f"--no-wait applies to --executor slurm only ({executor} cells run while the sweep waits): "
                         "drop --no-wait or use --executor slurm")


def _run_inline(cells: list[Cell], root: Path, options: RunOptions, progress: bool, tracker_factory) -> dict:
    from tqdm import tqdm

    kwargs = {} if tracker_factory == "default" else {"tracker_factory": tracker_factory}
    on_terminal = progress and sys.stderr.isatty()  # the bar on a terminal, a line per cell elsewhere
    bar = tqdm(cells, desc="sweep", unit="cell", disable=not on_terminal)
    started = time.monotonic()
    outcomes, errors = {}, {}
    stopped: list[int] = []

    def stop(signum, frame):  # noqa: ARG001 - between cells (a cell's trainer installs its own handler)
        if stopped and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stopped.append(signum)

    in_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)} if in_main else {}
    try:
        for cell in bar:
            if stopped:
                break
            bar.set_postfix_str(f"{cell.matcher_label} / {cell.strategy.label} / seed {cell.seed}")
            out = run_cell_in_store(cell, root, options, raise_errors=False, **kwargs)
            outcomes[cell.id] = out["state"] + (" (skipped)" if out.get("skipped") else "")
            if progress and not on_terminal:
                print(f"[{len(outcomes)}/{len(cells)}] {cell.id}  {describe(cell)}: {outcomes[cell.id]} "
                      f"({time.monotonic() - started:.0f} s since the start)", file=sys.stderr, flush=True)
            if out.get("error"):
                errors[cell.id] = out["error"]
            if out.get("signal"):  # SIGTERM / Ctrl-C in a cell (saved its checkpoint, or finished): stop here
                stopped.append(signal.Signals[out["signal"]])
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stopped:
        return {"outcomes": outcomes, "errors": errors, "signal": signal.Signals(stopped[0]).name}
    return {"outcomes": outcomes, "errors": errors}


@dataclass
class ArrayPlan:
    """One SLURM job array of a sweep: the cells of one dependency stage that ask for the same job
    (:class:`bench.harness.slurm.JobRequest`, the cells' resources after the profile's caps) and wait for the same
    parent cells (an OAS student waits for its own baseline only)."""

    stage: int
    request: JobRequest
    cells: list[Cell] = field(default_factory=list)
    caps: list[str] = field(default_factory=list)  # every cap the profile applied to one of the cells
    parents: tuple[str, ...] = ()  # ids of the cells (of earlier stages) whose jobs this array waits for
    parallelism: int | None = None  # tasks at once: the profile's array_parallelism, or this array's GPU share

    @property
    def gpus(self) -> int:
        return int(self.request.resources.gpus or 0)

    def job_name(self) -> str:
        """``<suite>:<stage>:<shape>``, what ``squeue`` and ``scontrol show job`` show."""
        r = self.request.resources
        shape = "-".join(x for x in (f"{r.gpus or 0}gpu", f"{r.cpus}cpu" if r.cpus else None,
                                     f"{r.mem_gb:g}G" if r.mem_gb else None, f"{r.time_min}m" if r.time_min else None,
                                     r.partition) if x)
        return f"{self.cells[0].suite or 'cells'}:{self.stage}:{shape}"


def plan_arrays(cells: list[Cell], profile: dict, estimates: dict[str, float | None] | None = None) -> list[ArrayPlan]:
    """The job arrays a SLURM sweep of ``cells`` submits: one per dependency stage, resource shape and set of
    parent cells (so a failed baseline cancels its own students only), in submission order. With ``estimates``
    ({cell id: GPU-hours}) a cell asks for the time :func:`bench.harness.estimate.time_request` derives from its
    estimate (× the safety factor, at most its ``resources.time_min``), the profile capping it. Every cell's
    request is checked first: a cell asking for more than ``profile`` allows (where no cap applies, e.g. more GPUs
    than a node has) raises ``ResourceError`` naming every such cell, before anything is submitted. The
    profile's ``max_concurrent_gpus`` is split among the arrays (:func:`share_gpus`)."""
    from bench.harness.estimate import time_request
    from bench.harness.slurm import ResourceError, job_request

    requests, errors = {}, []
    for cell in cells:
        res = cell.resources
        if estimates is not None and res is not None:
            res = replace(res, time_min=time_request(cell, estimates.get(cell.id))[0])
        try:
            requests[cell.id] = job_request(res, profile)
        except ResourceError as e:
            errors.append(f"cell {cell.id} ({describe(cell)}) {e}")
    if errors:
        raise ResourceError("\n".join(errors))
    ids = {c.id for c in cells}
    plans: list[ArrayPlan] = []
    for number, stage in enumerate(stages(cells)):
        shapes: dict = {}
        for cell in stage:
            request, parents = requests[cell.id], tuple(sorted(d for d in cell.depends_on or [] if d in ids))
            plan = shapes.setdefault((request.resources, parents), ArrayPlan(number, request, parents=parents))
            plan.cells.append(cell)
            plan.caps += [cap for cap in request.caps if cap not in plan.caps]
        plans += shapes.values()
    share_gpus(plans, profile)
    return plans


def share_gpus(plans: list[ArrayPlan], profile: dict) -> None:
    """Each array's ``parallelism``: the profile's ``array_parallelism``; with ``max_concurrent_gpus`` the GPU
    arrays share that cap, so the whole sweep never holds more GPUs at once (every array one task, then one more
    task at a time to the array of the earliest stage with the most cells per running task). An array's share is
    not lent to another while it waits (``scontrol update JobId=<array> ArrayTaskThrottle=N`` changes it). A cap
    below one task of every GPU array raises ``ResourceError``."""
    from bench.harness.slurm import ResourceError

    per_array = profile.get("array_parallelism")
    for plan in plans:
        plan.parallelism = per_array
    cap = profile.get("max_concurrent_gpus")
    gpu_plans = [p for p in plans if p.gpus > 0]
    if cap is None or not gpu_plans:
        return
    need = sum(p.gpus for p in gpu_plans)
    if need > cap:
        raise ResourceError(f"max_concurrent_gpus {cap} of cluster profile {profile.get('name')} is below the {need} "
                            f"GPU(s) of one task of each of the sweep's {len(gpu_plans)} GPU job arrays: raise it, or "
                            "sweep part of the suite (only.datasets=…, only.strategies=…)")
    tasks, left = {id(p): 1 for p in gpu_plans}, cap - need
    while True:
        room = [p for p in gpu_plans if tasks[id(p)] < min(len(p.cells), per_array or len(p.cells)) and p.gpus <= left]
        if not room:
            break
        best = min(room, key=lambda p: (p.stage, -len(p.cells) / tasks[id(p)]))
        tasks[id(best)] += 1
        left -= best.gpus
    for p in gpu_plans:
        p.parallelism = tasks[id(p)]


def _submit(cells: list[Cell], root: Path, kind: str, cluster, wait: bool, jobs_folder, active_jobs: dict,
            options: RunOptions, rates_path=None) -> tuple[dict, list, str | None]:
    """Submit ``cells`` stage by stage; SLURM: one array per stage and resource shape (:func:`plan_arrays`),
    every stage at once, dependents held by ``afterok`` on their parents' jobs (submitted now or still
    active from an earlier sweep, ``active_jobs``), then wait for all (``wait``). Returns ({cell id: job
    id}, [job ids lost without a result, e.g. cancelled], the signal that stopped local cells or None)."""
    from bench.harness.jobs import CellJob
    from bench.harness.slurm import load_profile, make_executor, submit_array, wait_for_jobs

    folder = Path(jobs_folder or root / JOBS_DIR)  # job logs stay inside --root
    if folder.exists() and not folder.is_dir():
        raise SweepError(f"{folder} is a file where the sweep keeps its job logs: move it away")
    if jobs_folder is None and (link := link_out_of_root(folder, root)):
        raise SweepError(link)
    submitted: dict[str, str] = dict(active_jobs or {}) if kind == "slurm" else {}
    all_jobs, lost, stopped_by = [], [], None

    def record(cell, job):
        submitted[cell.id] = job.job_id
        run_dir = locate_run(cell, root)
        if link_out_of_root(run_dir, root):  # the job refuses the cell (blocked); nothing is written there
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(run_dir / SUBMITTED_FILE, json.dumps(  # a concurrent `status` never reads half of it
            {"job_id": job.job_id, "executor": kind, "stderr": str(job.paths.stderr),
             "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))

    if kind == "slurm":
        from bench.harness.estimate import cell_estimates, hours_of

        profile = load_profile(cluster)
        # every cell's request checked before anything is submitted; times from the estimates
        plans = plan_arrays(cells, profile, hours_of(cell_estimates(cells, root, rates_path)))
        check = True
        for plan in plans:
            executor = make_executor(kind, folder, profile, check=check, resources=plan.request,
                                     job_name=plan.job_name(), array_parallelism=plan.parallelism)
            check = False
            deps = sorted({submitted[d] for c in plan.cells for d in c.depends_on or [] if d in submitted})
            jobs = submit_array(executor, None, [CellJob(c, root, options) for c in plan.cells],
                                dependency_job_ids=deps or None)
            for cell, job in zip(plan.cells, jobs):
                record(cell, job)
            all_jobs += jobs
            print(f"array {jobs[0].job_id.split('_')[0]} ({plan.job_name()}): {len(jobs)} cell(s), "
                  f"{plan.request.resources.describe()}" + (f", after job(s) {' '.join(deps)}" if deps else "")
                  + "".join(f"; cap: {cap}" for cap in plan.caps), file=sys.stderr, flush=True)
        if wait:
            lost += wait_for_jobs(all_jobs, raise_lost=False)
    else:  # no dependencies without SLURM: finish each stage first
        executor = make_executor(kind, folder)
        for stage in stages(cells):
            jobs, stage_lost, stopped_by = run_local_window(executor, stage, root, on_submit=record, options=options)
            all_jobs += jobs
            lost += stage_lost
            if stopped_by:  # the running cells saved their checkpoints; the later stages wait for a resume
                break
    ids = {c.id for c in cells}
    return {cid: jid for cid, jid in submitted.items() if cid in ids}, lost, stopped_by


def cell_cpus(cell: Cell, available: int) -> int:
    """CPUs a cell takes on this machine: its ``resources.cpus``, at most ``available`` (default 1)."""
    return max(1, min(int((cell.resources.cpus if cell.resources else None) or 1), available))


def run_local_window(executor, cells: list[Cell], root: Path, on_submit=None, poll_s: float = 0.5,
                     available: int | None = None, log=None, options: RunOptions = PLAIN_RUN
                     ) -> tuple[list, list, str | None]:
    """Run ``cells`` as local jobs, as many at once as ``available`` CPUs (default: this process's)
    hold: a cell is started when its ``resources.cpus`` are free (or nothing else runs), so the cells
    side by side never ask for more threads than there are cores. Prints one line per finished cell
    (``log``, default stderr). A SIGTERM or Ctrl-C here interrupts the running cells (each saves its
    checkpoint and is ``interrupted``; a plain sweep resumes it) and starts no more. ``options`` go to
    each ``CellJob``. Returns (the jobs started, the ids of jobs that ended without a result, the
    name of the signal that stopped the cells or None)."""
    from bench.harness.jobs import CellJob
    from bench.harness.slurm import local_job_environment, local_job_parameters

    available = available or len(os.sched_getaffinity(0))
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    queue, running, jobs, lost = list(cells), [], [], []
    stopped: list[int] = []
    finished = 0

    def stop(signum, frame):  # noqa: ARG001 - signal handler signature
        stopped.append(signum)

    in_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)} if in_main else {}
    started = time.monotonic()
    try:
        while (queue or running) and not stopped:
            busy = sum(cpus for _, _, cpus, _ in running)
            while queue and (not running or busy + cell_cpus(queue[0], available) <= available):
                cell = queue.pop(0)
                cpus = cell_cpus(cell, available)
                if in_main:  # the job starts with Ctrl-C ignored: see below
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
                try:
                    executor.update_parameters(**local_job_parameters(cell.resources))
                    job = executor.submit(CellJob(cell, root, options, environment=local_job_environment()))
                finally:
                    if in_main:
                        signal.signal(signal.SIGINT, stop)
                if on_submit:
                    on_submit(cell, job)
                running.append((cell, job, cpus, time.monotonic()))
                jobs.append(job)
                busy += cpus
            time.sleep(poll_s)
            for entry in [e for e in running if e[1].done()]:
                cell, job, _, t0 = entry
                running.remove(entry)
                state = run_status(cell, locate_run(cell, root))["state"]
                if not job.paths.result_pickle.exists() and state != "done":
                    lost.append(job.job_id)
                finished += 1
                log(f"[{finished}/{len(cells)}] "
                    f"{cell.id}  {cell.matcher_label} / {cell.strategy.label} / seed "
                    f"{cell.seed}: {state} ({time.monotonic() - t0:.0f} s; {time.monotonic() - started:.0f} s "
                    "since the start)")
        if stopped:  # pass the stop on to the running cells (each saves its checkpoint), then wait
            for _, job, _, _ in running:
                # A local job's id is its controller's pid; the controller forwards SIGTERM to the cell.
                # (Its own Ctrl-C handling would send SIGINT, then SIGKILL a second later: a cell mid-step
                # would die without its checkpoint. A job is therefore started with SIGINT ignored, which
                # the controller keeps; the trainer installs its own handler, so a terminal's Ctrl-C
                # still reaches the cell once, and SIGTERM from here is the second, harmless, notice.)
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(job.job_id), signal.SIGTERM)
            for _, job, _, _ in running:
                while not job.done():
                    time.sleep(poll_s)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return jobs, lost, (signal.Signals(stopped[0]).name if stopped else None)
