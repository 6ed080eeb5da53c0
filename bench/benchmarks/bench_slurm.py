"""SLURM submission latency and per-job scheduling overhead, on a real cluster.

    python -m bench.benchmarks.bench_slurm [--quick] [--up]

Submits :func:`echo_job` over 100 items (``quick``: 20) as one job array through
``bench.harness.slurm.submit_array`` (the path every sweep takes) and measures

- ``submit_s``: from calling ``submit_array`` until it returns (sbatch of the array + submitit pickles);
- ``all_queued_s``: until ``squeue`` knows every array task (queued, running or finished);
- ``all_done_s``: until every task wrote its result; ``overhead_per_job_s`` = ``all_done_s`` / n: the cost
  of one trivial job (scheduling, process start, unpickling, result file) at the node's parallelism.

Uses the cluster ``SLURM_CONF`` points at with profile ``local`` (array parallelism unlimited). With
``--up`` it starts the throwaway test cluster (``slurm/testcluster up``, state in a temporary folder
under /tmp; needs root) and takes it down afterwards. Without a reachable cluster: ``{"skipped": why}``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import submitit

from bench.harness.slurm import (
    REPO_ROOT,
    Resources,
    cluster_reachable,
    load_profile,
    make_executor,
    slurm_states,
    submit_array,
    wait_for_jobs,
)

TESTCLUSTER = REPO_ROOT / "slurm" / "testcluster"

ECHO_JOB = Resources(cpus=1, mem_gb=1, time_min=10)  # what one echo job asks for


def echo_job(x):
    """Return ``x`` with the job that ran it (pickled by reference: this module is importable in the job)."""
    return {"x": x, "job_id": submitit.JobEnvironment().job_id}


def _node_cpus() -> int | None:
    out = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True, timeout=20).stdout.split()
    return int(out[0]) if out and out[0].isdigit() else None


def measure(n_jobs: int, folder: Path, profile: str = "local", timeout_s: float = 900) -> dict:
    """Submit ``n_jobs`` echo jobs as one array and time queueing and completion (module docstring)."""
    settings = load_profile(profile)
    settings["array_parallelism"] = None  # let the node run as many as it has CPUs for
    executor = make_executor("slurm", folder / "jobs", settings, resources=ECHO_JOB)
    t0 = time.perf_counter()
    jobs = submit_array(executor, echo_job, range(n_jobs))
    submit_s = time.perf_counter() - t0
    ids = [job.job_id for job in jobs]
    while "UNKNOWN" in slurm_states(ids).values():
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError(f"not all {n_jobs} array tasks visible in squeue after {timeout_s:.0f}s")
        time.sleep(0.05)
    all_queued_s = time.perf_counter() - t0
    wait_for_jobs(jobs, timeout_s=timeout_s, poll_s=0.25)
    all_done_s = time.perf_counter() - t0
    results = [job.result() for job in jobs]
    if [r["x"] for r in results] != list(range(n_jobs)):
        raise RuntimeError("echo jobs returned wrong items")
    return {"jobs": n_jobs, "node_cpus": _node_cpus(), "cpus_per_job": ECHO_JOB.cpus,
            "submit_s": submit_s, "all_queued_s": all_queued_s, "all_done_s": all_done_s,
            "overhead_per_job_s": all_done_s / n_jobs, "jobs_per_s": n_jobs / all_done_s}


def run(quick: bool = False, up: bool = False) -> dict:
    """The measurements of :func:`measure`, or {"skipped": reason} without a cluster."""
    n_jobs = 20 if quick else 100
    with tempfile.TemporaryDirectory(prefix="bench-slurm-", dir="/tmp") as tmp:
        tmp = Path(tmp)
        if not up:
            ok, reason = cluster_reachable()
            if not ok:
                return {"skipped": reason}
            return measure(n_jobs, tmp)
        if os.geteuid() != 0:
            return {"skipped": "--up needs root (slurm/testcluster up)"}
        state = tmp / "cluster"
        previous = os.environ.get("SLURM_CONF")
        try:
            started = subprocess.run([str(TESTCLUSTER), "up", "--state", str(state)], capture_output=True,
                                     text=True, timeout=300)
            if started.returncode != 0:
                return {"skipped": f"slurm/testcluster up failed: {started.stderr.strip()[-500:]}"}
            os.environ["SLURM_CONF"] = str(state / "slurm.conf")
            ok, reason = cluster_reachable()
            return measure(n_jobs, tmp) if ok else {"skipped": reason}
        finally:
            subprocess.run([str(TESTCLUSTER), "down", "--state", str(state)], capture_output=True, timeout=120)
            if previous is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = previous


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 jobs instead of 100")
    parser.add_argument("--up", action="store_true", help="start the test cluster (tmp state) and stop it after")
    args = parser.parse_args()
    r = run(quick=args.quick, up=args.up)
    if "skipped" in r:
        print(f"SLURM benchmark skipped: {r['skipped']}")
        return
    print(f"SLURM benchmark: {r['jobs']} trivial jobs as one array, node with {r['node_cpus']} CPUs, "
          f"{r['cpus_per_job']} CPU per job")
    print(f"  submit_array returns     : {r['submit_s']:7.2f} s")
    print(f"  all tasks queued         : {r['all_queued_s']:7.2f} s")
    print(f"  all tasks done           : {r['all_done_s']:7.2f} s")
    print(f"  overhead per job         : {r['overhead_per_job_s']:7.3f} s  ({r['jobs_per_s']:.2f} jobs/s)")


if __name__ == "__main__":
    main()
