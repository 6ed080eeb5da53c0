"""The local executor (``make demo``, ``sweep --executor local``): as many cells at once as the CPUs
hold, never more; a SIGTERM interrupts the running cells and a plain sweep finishes them.

Real training on the tiny embedded data in real submitit local jobs (subprocesses); every cell sleeps
after each optimiser step (``ITM_BENCH_SLOW``) so that it runs long enough to see who overlaps whom.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from bench.harness.cells import expand, topological_order
from bench.harness.config import load_suite
from bench.harness.slurm import make_executor
from bench.harness.store import cell_state, run_dir_for
from bench.harness.sweep import cell_states, run_local_window, sweep
from bench.spec import Cell, Resources
from tests.test_store_integrity import REPO, comparable, env, write_suite


def _interval(run_dir: Path) -> tuple[float, float]:
    """When a cell trained: (start, end) from its provenance (end to the second, wall time exact)."""
    prov = json.loads((run_dir / "result.json").read_text())["provenance"]
    end = datetime.strptime(prov["finished_at"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
    return end - prov["wall_time_s"], end


def _most_at_once(intervals, slack=1.0) -> int:
    """The most intervals that overlap by more than ``slack`` s (``finished_at`` is to the second)."""
    best = 0
    for s, e in intervals:
        best = max(best, sum(1 for s2, e2 in intervals if s2 < e - slack and s < e2 - slack))
    return best


@pytest.mark.slow
@pytest.mark.parametrize("cpus, expected", [(1, 2), (2, 1)])
def test_local_cells_run_side_by_side_as_far_as_their_cpus_allow(tiny_data, tmp_path, monkeypatch, cpus,
                                                                 expected):
    """2 CPUs: three 1-CPU cells run two at a time (the third when one ends); 2-CPU cells one at a time."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("ITM_BENCH_SLOW", "train.after_optimizer_step:0.8")  # 4 steps: >= 3 s per cell
    suite = load_suite(write_suite(tmp_path, tiny_data, seeds=(0, 1, 2)))
    cells = [c.replace(resources=replace(c.resources, cpus=cpus)) for c in topological_order(expand(suite))]
    root = tmp_path / "runs"
    lines: list[str] = []
    jobs, lost, stopped = run_local_window(make_executor("local", tmp_path / "jobs"), cells, root,
                                           available=2, log=lines.append, poll_s=0.1)
    assert (len(jobs), lost, stopped) == (3, [], None)
    assert [line.split("] ")[0] for line in lines] == ["[1/3", "[2/3", "[3/3"]  # one line per finished cell
    assert all(": done (" in line for line in lines), lines
    intervals = [_interval(run_dir_for(c, root)) for c in cells]
    assert _most_at_once(intervals) == expected, intervals
    for c in cells:  # each trained with the threads of its CPUs (capped by the machine's)
        cost = json.loads((run_dir_for(c, root) / "result.json").read_text())["cost"]
        assert cost["torch_threads"] == min(cpus, len(os.sched_getaffinity(0)))


def test_a_cell_asking_for_more_cpus_than_the_machine_has_still_runs(tmp_path):
    """A cell's cpus above the machine's count is capped (it runs alone), never waits forever."""
    from bench.harness.sweep import cell_cpus

    cell = Cell.from_dict({"dataset": {"name": "f30k_precomp"}, "matcher": {"name": "sgr"},
                           "strategy": {"name": "baseline"}})
    assert cell_cpus(cell.replace(resources=Resources(cpus=8)), 2) == 2
    assert cell_cpus(cell.replace(resources=Resources(cpus=1)), 2) == 1
    assert cell_cpus(cell, 2) == 1  # no resources: one CPU


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM to the sweep", "Ctrl-C in its terminal"])
def test_a_stopped_local_sweep_interrupts_its_running_cells_and_a_plain_sweep_finishes_them(tiny_data, tmp_path,
                                                                                              how):
    """SIGTERM to the sweep alone, or SIGINT to its whole process group (what a terminal's Ctrl-C does):
    the running cells save their checkpoints (an ``interrupted`` marker, not a killed process), the
    others stay pending, and a plain sweep finishes every cell as if never stopped."""
    suite_path = write_suite(tmp_path, tiny_data, seeds=(0, 1, 2))
    suite = load_suite(suite_path)
    # the suite's resources: 1 CPU per cell (the suite file says nothing: default 8)
    cells = [c.replace(resources=replace(c.resources, cpus=1)) for c in topological_order(expand(suite))]
    reference_root = tmp_path / "reference"  # the same cells, never interrupted (1 thread each, as local)
    for c in cells:
        from bench.harness.store import run_cell_in_store

        run_cell_in_store(c, reference_root, tracker_factory=None)

    root = tmp_path / "runs"
    sweep_cmd = [sys.executable, "-m", "bench", "sweep", str(suite_path), "--executor", "local", "--root", str(root),
                 "resources.default.cpus=1"]
    proc = subprocess.Popen(sweep_cmd, cwd=REPO, env=env(ITM_BENCH_SLOW="train.after_optimizer_step:1.0",
                                                         OMP_NUM_THREADS="2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    t0 = time.time()
    first_two = [run_dir_for(c, root) for c in cells[:2]]
    while not all((d / "last.pt.sha256").exists() for d in first_two):  # both are mid-training
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() - t0 < 120, "the two first cells never both checkpointed"
        time.sleep(0.05)
    if how.startswith("SIGTERM"):
        proc.send_signal(signal.SIGTERM)  # to the sweep only: it passes the stop on to its cells
    else:
        os.killpg(proc.pid, signal.SIGINT)  # the sweep, the jobs' controllers and the cells, all at once
    out, err = proc.communicate(timeout=120)
    name = "SIGTERM" if how.startswith("SIGTERM") else "SIGINT"
    assert proc.returncode == 1 and f"sweep stopped by {name}" in err, err[-3000:]
    states = cell_states(cells, root)
    assert [states[c.id]["state"] for c in cells] == ["interrupted", "interrupted", "pending"], states
    for d in first_two:  # saved by the cell itself: its `interrupted` marker names the signal it got first
        assert not (d / "running").exists() and (d / "last.pt").is_file()
        assert json.loads((d / "interrupted").read_text())["signal"] == name

    report = sweep(load_suite(suite_path, ["resources.default.cpus=1"]), executor="local", root=root,
                   jobs_folder=tmp_path / "jobs2")  # a plain sweep resumes the two and runs the third
    assert sorted(report["selected"]) == sorted(c.id for c in cells) and not report["lost"]
    for c in cells:
        assert cell_state(run_dir_for(c, root)) == "done"
        assert comparable(run_dir_for(c, root)) == comparable(run_dir_for(c, reference_root)), c.id


def test_an_oas_cell_whose_baseline_is_done_runs_alone(tiny_data, tmp_path, monkeypatch):
    """A sweep whose OAS cell is left (its baseline done by an earlier sweep, or shared with another table) runs
    it on its own under the local executor, and plans its array without the baseline (was: 'depends on unknown
    cell', found by the rehearsal of two tables sharing a baseline)."""
    from bench.harness.dryrun import dry_run

    monkeypatch.setenv("WANDB_MODE", "disabled")
    path = write_suite(tmp_path, tiny_data, name="oas_left", epochs=1, steps=1)
    suite = load_suite(path, ["strategies=[baseline, {name: kd}]"])
    baseline, kd = topological_order(expand(suite))
    sweep(load_suite(path), executor="inline", root=tmp_path / "runs", progress=False)
    assert cell_state(run_dir_for(baseline, tmp_path / "runs")) == "done"
    text = dry_run(suite, tmp_path / "runs", "local")
    assert "1 of 2 cell(s) to run" in text and re.search(r"^array 1 \S+ \(stage 0\): 1 cell\(s\)", text, re.M) \
        and "afterok" not in text
    report = sweep(suite, executor="local", root=tmp_path / "runs", progress=False)
    assert report["selected"] == [kd.id] and {s["state"] for s in report["states"].values()} == {"done"}


@pytest.mark.parametrize("visible", ["GPU-1a2b3c4d,3", None])
def test_a_local_job_gets_its_cells_time_limit_and_this_machines_gpus(tmp_path, monkeypatch, visible):
    """submitit's LocalExecutor alone signals a job after 90 s (every full-scale cell was "timed out" three times,
    then failed: the rehearsal's CLIP DBL cells) and hides the GPUs (CUDA_VISIBLE_DEVICES empty)."""
    from bench.harness.slurm import local_job_environment, local_job_parameters
    from tests import jobs

    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    executor = make_executor("local", tmp_path / "jobs")
    executor.update_parameters(**local_job_parameters(Resources(time_min=45)))
    job = executor.submit(jobs.EnvironmentOfCellJob(local_job_environment(),
                                                    ("SUBMITIT_LOCAL_TIMEOUT_S", "CUDA_VISIBLE_DEVICES")))
    seen = job.result()
    assert seen["SUBMITIT_LOCAL_TIMEOUT_S"] == str(45 * 60)
    assert seen.get("CUDA_VISIBLE_DEVICES") == visible  # as this process sees them (unset: all of them)
    assert local_job_parameters(None)["timeout_min"] == 24 * 60  # a cell that names no limit
