"""Benchmark sweeps on a real local SLURM cluster (slurm/testcluster), end to end.

Each test sweeps a tiny suite (VSE∞ with a 32-d embedding on the `tiny` embedded data) with
``bench.harness.sweep.sweep(executor="slurm")`` and checks what a user relies on: the same metrics as
the inline executor, OAS cells after their baseline, no duplicate submissions, a failing cell that
fails alone and can be retried, ``scontrol requeue`` and ``scancel`` mid-training without half-written
or duplicated results.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bench.harness.cells import expand, topological_order
from bench.harness.config import load_suite
from bench.harness.slurm import slurm_states
from bench.harness.store import DONE_FILE, RESULT_FILE, run_dir_for
from bench.harness.sweep import ACTIVE_SLURM_STATES, SUBMITTED_FILE, cell_states, sweep
from tests.slurm_cluster import release_requeued

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(240)]
REPO_ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 150

# 2 epochs x 4 steps of 32 pairs; OAS cells fine-tune 1 epoch from the baseline's best checkpoint.
SHORT = {"epochs": 2, "batch_size": 32, "lr": 2e-3, "max_steps_per_epoch": 4, "log_every": 1,
         "oas_stage2": {"epochs": 1, "lr": 1e-3, "lr_schedule": "constant"}}
# A checkpoint after every step, and long enough (45 steps) that a job caught after its first step is
# still training when SLURM's KillWait (5 s after SIGTERM, which submitit ignores) ends it.
LONG = {**SHORT, "epochs": 3, "max_steps_per_epoch": 15, "checkpoint_every": 1}
# Sleep after every optimiser step of the SLURM jobs (bench/faults.py; sbatch passes the environment on):
# 45 steps then take over 10 s however fast the machine, so a job is reliably caught mid-training.
SLOW_STEPS = "train.after_optimizer_step:0.25"
BASELINE, KD, DBL_OAS = "baseline", {"name": "kd"}, {"name": "dbl", "label": "DBL rel (OAS)",
                                                     "params": {"loss": "rel", "scenario": "oas"}}


@pytest.fixture(autouse=True)
def _offline_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # inherited by the SLURM jobs (sbatch exports the env)
    monkeypatch.setenv("WANDB_SILENT", "true")


def _write_suite(folder: Path, name: str, data_roots: dict[str, Path], strategies: list, schedule: dict):
    raw = {"name": name,
           "datasets": [{"name": "f30k_precomp", "label": label, "data_root": str(root),
                         "vocab_root": str(root / "vocab")} for label, root in data_roots.items()],
           "matchers": [{"name": "vse_infty", "overrides": {"embed_size": 32, "word_dim": 16}}],
           "strategies": strategies, "seeds": [0], "eval": {"dev_images": 30, "batch_size": 64},
           "scales": {"smoke": {"schedule": {"default": schedule}}}, "scale": "smoke"}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_suite(path)


def _cells(suite) -> list[dict]:
    return topological_order(expand(suite))


def _result(root: Path, cell: dict) -> dict:
    return json.loads((run_dir_for(cell, root) / RESULT_FILE).read_text())


def _same_numbers(a: dict, b: dict) -> None:
    """Exactly equal test metrics, dev curve and best epoch (timings and provenance differ)."""
    assert a["metrics"] == b["metrics"]
    assert a["dev_curve"] == b["dev_curve"] and a["best_epoch"] == b["best_epoch"]


def _job_ids(suite, root: Path) -> list[str]:
    out = []
    for cell in _cells(suite):
        f = run_dir_for(cell, root) / SUBMITTED_FILE
        if f.exists():
            out.append(json.loads(f.read_text())["job_id"])
    return out


def _wait_until(predicate, timeout_s: float, what: str, poll_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s}s for {what}")
        time.sleep(poll_s)


def _cancel_and_wait(job_ids: list[str]) -> None:
    """scancel the jobs (whole arrays) and wait until none of them is active any more."""
    if not job_ids:
        return
    # (scancel of a job that already ended only complains)
    subprocess.run(["scancel", *sorted({j.split("_")[0] for j in job_ids})], capture_output=True, timeout=20)
    _wait_until(lambda: not set(slurm_states(job_ids).values()) & ACTIVE_SLURM_STATES, 60, "jobs cancelled",
                poll_s=0.5)


def _mid_training(run_dir: Path) -> bool:
    """A mid-epoch checkpoint exists: the job has trained at least one step and is not finished."""
    return (run_dir / "last.pt").exists() and not (run_dir / DONE_FILE).exists()


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def short_sweep(slurm_cluster, tiny_data, tmp_path_factory):
    """baseline + KD (OAS) + DBL rel (OAS) swept on SLURM (wait=True) and inline into two stores."""
    folder = tmp_path_factory.mktemp("short")
    suite = _write_suite(folder, "short", {"tiny": tiny_data}, [BASELINE, KD, DBL_OAS], SHORT)
    start = time.monotonic()
    report = sweep(suite, executor="slurm", root=folder / "slurm" / "runs", cluster=slurm_cluster["profile"],
                   wait=True, progress=False)
    slurm_s = time.monotonic() - start
    start = time.monotonic()
    sweep(suite, executor="inline", root=folder / "inline" / "runs", progress=False)
    print(f"short suite: slurm sweep {slurm_s:.1f}s, inline {time.monotonic() - start:.1f}s")
    return {"suite": suite, "report": report, "slurm": folder / "slurm" / "runs",
            "inline": folder / "inline" / "runs", "folder": folder}


@pytest.fixture(scope="module")
def long_reference(slurm_cluster, tiny_data, tmp_path_factory):
    """The inline (uninterrupted) result of the LONG baseline cell."""
    folder = tmp_path_factory.mktemp("long_ref")
    suite = _write_suite(folder, "long", {"tiny": tiny_data}, [BASELINE], LONG)
    sweep(suite, executor="inline", root=folder / "runs", progress=False)
    [cell] = _cells(suite)
    return _result(folder / "runs", cell)


# ---------------------------------------------------------------------------------------------- tests
def test_slurm_sweep_equals_inline_and_oas_waits_for_baseline(short_sweep):
    suite, report, root = short_sweep["suite"], short_sweep["report"], short_sweep["slurm"]
    cells = _cells(suite)
    assert [c.strategy.name for c in cells] == ["baseline", "kd", "dbl"]
    assert {cid: s["state"] for cid, s in report["states"].items()} == {c.id: "done" for c in cells}
    assert report["lost"] == [] and set(report["jobs"]) == {c.id for c in cells}
    for cell in cells:
        _same_numbers(_result(root, cell), _result(short_sweep["inline"], cell))
        assert _result(root, cell)["provenance"]["slurm_job_id"]  # it really ran as a SLURM job
    base_dir = run_dir_for(cells[0], root)
    base_done = (base_dir / DONE_FILE).stat().st_mtime
    for oas in cells[1:]:
        oas_dir = run_dir_for(oas, root)
        # Both stages were queued before the baseline finished (afterok held the OAS array) ...
        assert (oas_dir / SUBMITTED_FILE).stat().st_mtime < base_done
        assert report["jobs"][oas.id].split("_")[0] != report["jobs"][cells[0].id].split("_")[0]
        # ... and the OAS cell started (wrote its config) only after the baseline was done.
        assert (oas_dir / "config.yaml").stat().st_mtime >= base_done


def test_resweep_submits_nothing_for_done_or_active_cells(short_sweep, slurm_cluster):
    suite, root = short_sweep["suite"], short_sweep["slurm"]
    marks = {c.id: (run_dir_for(c, root) / SUBMITTED_FILE).read_text() for c in _cells(suite)}
    again = sweep(suite, executor="slurm", root=root, cluster=slurm_cluster["profile"], wait=True, progress=False)
    assert again["selected"] == [] and again["jobs"] == {}
    assert {c.id: (run_dir_for(c, root) / SUBMITTED_FILE).read_text() for c in _cells(suite)} == marks

    # Queued/running cells of a sweep that has not finished are not submitted a second time.
    fresh = short_sweep["folder"] / "fresh" / "runs"
    first = sweep(suite, executor="slurm", root=fresh, cluster=slurm_cluster["profile"], wait=False, progress=False)
    try:
        assert len(first["jobs"]) == 3
        assert {s["state"] for s in first["states"].values()} <= {"queued", "running"}
        second = sweep(suite, executor="slurm", root=fresh, cluster=slurm_cluster["profile"], wait=False,
                       progress=False)
        assert second["selected"] == [] and second["jobs"] == {}
        assert sorted(_job_ids(suite, fresh)) == sorted(first["jobs"].values())
        squeue = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=20).stdout
        main_ids = {j.split("_")[0] for j in first["jobs"].values()}
        assert len([line for line in squeue.split() if line.split("_")[0] in main_ids]) <= 3
    finally:
        _cancel_and_wait(list(first["jobs"].values()))


def test_failing_cell_fails_alone_and_retry_failed_reruns_only_it(slurm_cluster, tiny_data, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_data, broken)
    features = broken / "f30k_precomp" / "train_ims.npy"
    features.write_bytes(features.read_bytes()[:200])  # a truncated feature file
    suite = _write_suite(tmp_path, "faulty", {"good": tiny_data, "broken": broken}, [BASELINE], SHORT)
    good, bad = _cells(suite)
    assert (good.dataset_label, bad.dataset_label) == ("good", "broken")
    root = tmp_path / "runs"
    report = sweep(suite, executor="slurm", root=root, cluster=slurm_cluster["profile"], wait=True, progress=False)
    states = report["states"]
    assert states[good.id]["state"] == "done" and states[bad.id]["state"] == "failed"
    assert "train_ims.npy" in states[bad.id]["error"]

    status = subprocess.run([sys.executable, "-m", "bench", "status", str(suite.path), "--root", str(root)],
                            capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, env=os.environ.copy())
    assert status.returncode == 0, status.stderr
    [line] = [line for line in status.stdout.splitlines() if bad.id in line]
    assert "failed" in line and "train_ims.npy" in line and "log: " in line
    log_path = Path(line.rsplit("log: ", 1)[1].rstrip(")"))
    assert "train_ims.npy" in log_path.read_text()  # the log it names holds the traceback

    shutil.copy(tiny_data / "f30k_precomp" / "train_ims.npy", features)  # fix the cause
    good_result = (run_dir_for(good, root) / RESULT_FILE).read_text()
    retry = sweep(suite, executor="slurm", root=root, cluster=slurm_cluster["profile"], retry_failed=True,
                  wait=True, progress=False)
    assert retry["selected"] == [bad.id] and list(retry["jobs"]) == [bad.id]
    assert {s["state"] for s in retry["states"].values()} == {"done"}
    assert (run_dir_for(good, root) / RESULT_FILE).read_text() == good_result  # untouched
    # Same data after the fix: the retried cell equals its twin on the good copy.
    _same_numbers(_result(root, bad), _result(root, good))


def test_scontrol_requeue_of_running_cell_gives_one_equal_result(slurm_cluster, tiny_data, tmp_path, request,
                                                                 monkeypatch):
    monkeypatch.setenv("ITM_BENCH_SLOW", SLOW_STEPS)  # the job outlives SIGTERM + KillWait on any machine
    suite = _write_suite(tmp_path, "long", {"tiny": tiny_data}, [BASELINE], LONG)
    [cell] = _cells(suite)
    root = tmp_path / "runs"
    report = sweep(suite, executor="slurm", root=root, cluster=slurm_cluster["profile"], wait=False, progress=False)
    job_id = report["jobs"][cell.id]
    run_dir = run_dir_for(cell, root)
    try:
        _wait_until(lambda: _mid_training(run_dir), WAIT_S, "a mid-training checkpoint")
        subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=20)
        release_requeued(job_id)  # not after SLURM's 120 s hold
        long_reference = request.getfixturevalue("long_reference")  # trained inline while the job resumes
        _wait_until(lambda: (run_dir / DONE_FILE).exists(), WAIT_S, "the requeued cell done", poll_s=0.5)
    finally:
        _cancel_and_wait([job_id])
    log = (run_dir / "log.txt").read_text()
    assert log.count("training cell") == 2 and "resumed" in log  # killed mid-training, then resumed
    assert sorted(p.name for p in (root / suite.name).iterdir()) == [cell.id]  # one run folder
    assert cell_states([cell], root)[cell.id]["state"] == "done"
    _same_numbers(_result(root, cell), long_reference)


def test_scancel_mid_sweep_leaves_no_partial_results_and_resweep_completes(slurm_cluster, tiny_data, tmp_path,
                                                                           long_reference, monkeypatch):
    monkeypatch.setenv("ITM_BENCH_SLOW", SLOW_STEPS)  # still training when the kill comes, on any machine
    suite = _write_suite(tmp_path, "long", {"tiny": tiny_data}, [BASELINE, KD], LONG)
    base, kd = _cells(suite)
    root = tmp_path / "runs"
    report = sweep(suite, executor="slurm", root=root, cluster=slurm_cluster["profile"], wait=False, progress=False)
    job_ids = list(report["jobs"].values())
    try:
        _wait_until(lambda: _mid_training(run_dir_for(base, root)), WAIT_S, "a mid-training checkpoint")
        # The hard case: SIGKILL at once, wherever the job is (a plain scancel sends SIGTERM, which
        # submitit ignores, and SIGKILL only after KillWait), then cancel the whole sweep.
        main_ids = sorted({j.split("_")[0] for j in job_ids})
        subprocess.run(["scancel", "--full", "--signal=KILL", *main_ids], capture_output=True, timeout=20)
    finally:
        _cancel_and_wait(job_ids)
    for cell in (base, kd):
        run_dir = run_dir_for(cell, root)
        if (run_dir / RESULT_FILE).exists():  # complete or absent, never half-written
            assert (run_dir / DONE_FILE).exists() and json.loads((run_dir / RESULT_FILE).read_text())["metrics"]
        else:
            assert not (run_dir / DONE_FILE).exists()
    states = cell_states([base, kd], root)
    # The killed baseline is interrupted (its `running` marker with a free lock, or its own `interrupted`
    # marker when the signal came during training): the next sweep takes it over.
    assert states[base.id]["state"] == "interrupted" and states[base.id].get("interrupted")
    assert states[kd.id]["state"] == "pending"  # cancelled while waiting on afterok

    again = sweep(suite, executor="slurm", root=root, cluster=slurm_cluster["profile"], wait=True, progress=False)
    assert sorted(again["selected"]) == sorted([base.id, kd.id])
    assert {s["state"] for s in again["states"].values()} == {"done"}
    assert "resumed" in (run_dir_for(base, root) / "log.txt").read_text()
    _same_numbers(_result(root, base), long_reference)  # resumed after scancel: same as uninterrupted


def test_a_failing_baseline_cancels_only_its_own_students(slurm_cluster, tiny_data, tmp_path):
    """Done-when (3) on the cluster, and (4): two baselines with a KD student each, one baseline planted to fail (a
    truncated feature file): its student is cancelled by SLURM (kill_on_invalid_dep on its own baseline's job), the
    other student trains; every job carries its name <suite>:<stage>:<shape> in `scontrol show job`."""
    broken = tmp_path / "broken"
    shutil.copytree(tiny_data, broken)
    features = broken / "f30k_precomp" / "train_ims.npy"
    features.write_bytes(features.read_bytes()[:200])
    suite = _write_suite(tmp_path, "planted", {"good": tiny_data, "broken": broken}, [BASELINE, KD], SHORT)
    cells = {(c.dataset_label, c.strategy.name): c for c in _cells(suite)}
    root = tmp_path / "runs"
    report = sweep(suite, executor="slurm", root=root, cluster=slurm_cluster["profile"], wait=True, progress=False)
    states, jobs = report["states"], report["jobs"]
    assert states[cells["good", "baseline"].id]["state"] == "done"
    assert states[cells["good", "kd"].id]["state"] == "done"  # its baseline's job succeeded: it ran
    assert states[cells["broken", "baseline"].id]["state"] == "failed"
    assert states[cells["broken", "kd"].id]["state"] == "pending"  # never started
    assert report["lost"] == [jobs[cells["broken", "kd"].id]]
    records = {key: _scontrol(jobs[c.id]) for key, c in cells.items()}  # finished jobs stay for MinJobAge (300 s)
    cancelled = records["broken", "kd"]
    assert cancelled["JobState"] == "CANCELLED" and "Dependency" in cancelled["Reason"]
    assert records["good", "kd"]["JobState"] in ("RUNNING", "COMPLETING", "COMPLETED")  # done (result written)
    for (_, strategy), record in records.items():
        stage = 1 if strategy == "kd" else 0
        assert re.fullmatch(rf"planted:{stage}:\d+gpu(-[\w.]+)*", record["JobName"]), record["JobName"]
    # each student's array was submitted after its own baseline's job only (the sweep's log line)
    assert jobs[cells["good", "kd"].id].split("_")[0] != jobs[cells["broken", "kd"].id].split("_")[0]


def _scontrol(job_id: str) -> dict:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=20,
                         check=True).stdout
    return dict(re.findall(r"(\S+?)=(\S*)", out.splitlines()[0]))
