"""The SLURM launching layer against a real local cluster (slurm/testcluster), and cluster profiles."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import submitit
from submitit.slurm.slurm import SlurmJobEnvironment

from bench.harness.jobs import CellJob
from bench.harness.slurm import (
    JobLostError,
    ProfileError,
    ResourceError,
    Resources,
    cluster_reachable,
    job_request,
    load_profile,
    make_executor,
    slurm_states,
    submit_array,
    wait_for_jobs,
)
from bench.run_folder import RunOptions
from bench.spec import Cell
from tests import jobs
from tests.slurm_cluster import release_requeued, run_testcluster

WAIT_S = 90


SMALL = Resources(cpus=1, mem_gb=1, time_min=10)  # what the test jobs ask for


def _executor(cluster, tmp_path):
    return make_executor("slurm", tmp_path / "jobs", cluster["profile"], resources=SMALL)


def _wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s}s for {what}")
        time.sleep(0.2)


def _step(state_path: Path) -> int:
    return json.loads(state_path.read_text())["step"] if state_path.exists() else -1


# ---------------------------------------------------------------------------------------------- profiles
def test_shipped_profiles_load():
    local = load_profile("local")
    assert local["partition"] == "debug" and local["max_gpus_per_node"] == 2 and local["name"] == "local"
    gpu = load_profile("example-gpu")
    assert gpu["max_time_min"] == 2880 and gpu["additional"] == {"requeue": True}
    assert gpu["account"] == "my-project" and gpu["constraint"] is None


def test_profile_errors_name_file_and_fix(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("partiton: gpu\n")
    with pytest.raises(ProfileError, match=r"typo\.yaml: unknown key 'partiton' \(did you mean 'partition'"):
        load_profile(typo)
    bad_type = tmp_path / "bad.yaml"
    bad_type.write_text("max_gpus_per_node: two\n")
    with pytest.raises(ProfileError, match=r"bad\.yaml: 'max_gpus_per_node' .* must be int, got 'two'"):
        load_profile(bad_type)
    need = tmp_path / "need.yaml"  # a job's needs live in the cell's resources, not in the profile
    need.write_text("time_min: 240\n")
    with pytest.raises(ProfileError, match=r"need\.yaml: 'time_min' is what a job needs.*suite's resources"
                                           r".*cap it with 'max_time_min'"):
        load_profile(need)
    with pytest.raises(ProfileError, match=r"unknown cluster profile 'locl' \(did you mean 'local'\?\)"):
        load_profile("locl")
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(tmp_path / "missing.yaml")


def test_make_executor_asks_for_the_cells_needs_where_the_profile_says(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("partition: gpu\nqos: high\nmax_time_min: 60\nadditional: {exclusive: true}\n")
    # "slurm" without checking the cluster: only the sbatch parameters are inspected.
    need = Resources(gpus=2, cpus=3, mem_gb=12, time_min=7)
    params = make_executor("slurm", tmp_path / "jobs", path, check=False, resources=need)._executor.parameters
    assert (params["partition"], params["qos"], params["time"], params["cpus_per_task"]) == ("gpu", "high", 7, 3)
    assert (params["gpus_per_node"], params["mem"]) == (2, "12GB")
    assert params["additional_parameters"] == {"exclusive": True}
    # the profile caps what it can (and says so); GPUs beyond a node's cannot be capped
    request = job_request({"gpus": 1, "cpus": 8, "mem_gb": 64, "time_min": 2880}, load_profile(path))
    assert request.resources.time_min == 60 and request.resources.cpus == 8
    assert request.caps == ("time_min 2880 min capped to 60 by max_time_min of profile p (a cut cell resumes "
                            "from its checkpoint when requeued)",)
    with pytest.raises(ResourceError, match=r"asks for 3 GPU\(s\) per node but cluster profile local allows 2"):
        job_request(Resources(gpus=3), load_profile("local"))
    capped = make_executor("slurm", tmp_path / "jobs", path, check=False, resources=Resources(time_min=600))
    assert capped._executor.parameters["time"] == 60
    executor = make_executor("slurm", tmp_path / "jobs", path, check=False)
    assert executor.cluster == "slurm"
    assert make_executor("local", tmp_path / "jobs", "local").cluster == "local"
    with pytest.raises(ValueError, match="executor kind"):
        make_executor("auto", tmp_path / "jobs")


def test_unreachable_cluster_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "nope.conf"))
    ok, reason = cluster_reachable()
    assert not ok and "nope.conf does not exist" in reason
    with pytest.raises(RuntimeError, match="cannot submit to SLURM: .*nope.conf"):
        make_executor("slurm", tmp_path / "jobs", "local")


def test_local_executor_runs_array_and_rejects_dependency(tmp_path):
    executor = make_executor("local", tmp_path / "jobs", "local")
    array = submit_array(executor, jobs.echo_job, [5, 6])
    wait_for_jobs(array, timeout_s=WAIT_S)
    assert [job.result()["x"] for job in array] == [5, 6]
    with pytest.raises(ValueError, match="dependencies need SLURM"):
        submit_array(executor, jobs.echo_job, [7], dependency_job_ids=[array[0].job_id])


def test_cell_job_pickles_plain_values_and_requeues_itself():
    import pickle

    cell = Cell.from_dict({"id": "c1", "suite": "s", "dataset": {"name": "f30k_precomp"}, "matcher": {"name": "sgr"},
                           "strategy": {"name": "baseline"}})
    options = RunOptions(force=True, force_before=1.5)
    cell_job = pickle.loads(pickle.dumps(CellJob(cell, "/results", options)))
    assert (cell_job.cell, cell_job.root, cell_job.options) == (cell.to_dict(), "/results", options.to_dict())
    assert Cell.from_dict(cell_job.cell) == cell and RunOptions(**cell_job.options) == options
    assert b"bench.spec" not in pickle.dumps(cell_job)  # a job pickled before a change of the classes still reads
    assert cell_job.checkpoint().function is cell_job


# ---------------------------------------------------------------------------------------------- jobs on SLURM
@pytest.mark.slurm
def test_job_array_returns_results(slurm_cluster, tmp_path):
    array = submit_array(_executor(slurm_cluster, tmp_path), jobs.echo_job, [10, 11, 12, 13])
    ids = [job.job_id for job in array]
    main_id = ids[0].split("_")[0]
    assert ids == [f"{main_id}_{i}" for i in range(4)]  # one SLURM array
    wait_for_jobs(array, timeout_s=WAIT_S)
    results = [job.result() for job in array]
    assert [r["x"] for r in results] == [10, 11, 12, 13]
    assert [r["job_id"] for r in results] == ids
    # The result file is written before the job step ends (COMPLETING), then SLURM says COMPLETED.
    _wait_until(lambda: set(slurm_states(ids).values()) == {"COMPLETED"}, 30, "COMPLETED states")


@pytest.mark.slurm
def test_failing_item_raises_with_log_while_others_succeed(slurm_cluster, tmp_path):
    items = [functools.partial(jobs.echo_job, 1), functools.partial(jobs.fail_job, "boom-42"),
             functools.partial(jobs.echo_job, 3)]
    array = submit_array(_executor(slurm_cluster, tmp_path), None, items)
    wait_for_jobs(array, timeout_s=WAIT_S)
    assert array[0].result()["x"] == 1 and array[2].result()["x"] == 3
    with pytest.raises(submitit.core.utils.FailedJobError, match="boom-42") as failure:
        array[1].result()
    log_paths = re.findall(r"- (\S+_log\.err)", str(failure.value))
    assert log_paths and "boom-42" in Path(log_paths[0]).read_text()  # the error names its log


@pytest.mark.slurm
def test_afterok_dependency_runs_after_parent(slurm_cluster, tmp_path):
    executor = _executor(slurm_cluster, tmp_path)
    [parent] = submit_array(executor, jobs.sleep_job, [3.0])
    children = submit_array(executor, jobs.started_at_job, ["a", "b"], dependency_job_ids=[parent.job_id])
    assert executor._executor.parameters.get("additional_parameters") is None  # not left on the executor
    assert set(slurm_states([c.job_id for c in children]).values()) == {"PENDING"}
    wait_for_jobs([parent, *children], timeout_s=WAIT_S)
    parent_finished = parent.result()
    assert all(child.result()["started"] >= parent_finished for child in children)


@pytest.mark.slurm
def test_scontrol_requeue_resumes_from_state_file(slurm_cluster, tmp_path):
    state = tmp_path / "state.json"
    [job] = submit_array(_executor(slurm_cluster, tmp_path), None, [jobs.CheckpointableJob(state, 20, 0.4)])
    _wait_until(lambda: _step(state) >= 2, WAIT_S, "two steps")
    subprocess.run(["scontrol", "requeue", job.job_id], check=True, timeout=10)
    release_requeued(job.job_id)
    wait_for_jobs([job], timeout_s=WAIT_S)
    result = job.result()
    assert result["step"] == 20 and result["attempts"] == 2
    first, second = result["resumed_from"]
    assert first == 0 and 2 <= second < 20  # the second run continued, not restarted


def _signal(job, name: str) -> None:
    subprocess.run(["scancel", job.job_id, "--signal", name], check=True, timeout=10)


@pytest.mark.slurm
def test_preemption_calls_checkpoint_and_resumes(slurm_cluster, tmp_path):
    state = tmp_path / "state.json"
    [job] = submit_array(_executor(slurm_cluster, tmp_path), None, [jobs.CheckpointableJob(state, 12, 0.4)])
    _wait_until(lambda: _step(state) >= 2, WAIT_S, "two steps")
    # What SLURM sends on preemption: SIGTERM (submitit ignores it), then USR2 -> checkpoint() + self-requeue.
    # One at a time (not submitit's job._interrupt(), which sends both at once): two `scancel --signal` in a
    # row reach the job in either order, and a SIGTERM landing while the USR2 handler runs its
    # `scontrol requeue` child kills that child; the job then ends FAILED instead of being requeued.
    _signal(job, "SIGTERM")
    _wait_until(lambda: "Bypassing signal SIGTERM" in (job.stdout() or ""), WAIT_S, "SIGTERM reached the job")
    _signal(job, SlurmJobEnvironment.USR_SIG)
    release_requeued(job.job_id)
    wait_for_jobs([job], timeout_s=WAIT_S)
    result = job.result()
    assert result["step"] == 12 and result["attempts"] == 2 and result["resumed_from"][1] >= 2
    log = (job.stdout() or "") + (job.stderr() or "")
    assert "Calling checkpoint method" in log and "Exiting gracefully after preemption" in log


@pytest.mark.slurm
def test_cancelled_job_is_reported_lost_not_hung(slurm_cluster, tmp_path):
    [job] = submit_array(_executor(slurm_cluster, tmp_path), jobs.sleep_job, [60.0])
    _wait_until(lambda: slurm_states([job.job_id])[job.job_id] == "RUNNING", WAIT_S, "job running")
    subprocess.run(["scancel", job.job_id], check=True, timeout=10)
    with pytest.raises(JobLostError, match=f"job {job.job_id} ended .*without a result") as lost:
        wait_for_jobs([job], timeout_s=WAIT_S, poll_s=0.5, grace_s=1.0)
    # the log's last line is quoted (what SLURM said of the cancel: it varies with how far the job had got)
    last = job.paths.stderr.read_text().strip().splitlines()[-1]
    assert str(lost.value).endswith(f"\n  | {last}") and ("srun" in last or "slurmstepd" in last)


# ---------------------------------------------------------------------------------------------- the script
def _pids(state: Path) -> list[int]:
    files = [state / "run" / "slurmctld.pid", state / "run" / "slurmd.pid", state / "munge" / "munged.pid"]
    return [int(f.read_text()) for f in files if f.exists()]


@pytest.mark.slurm
def test_testcluster_up_twice_then_down(slurm_cluster, tmp_path):
    if not slurm_cluster["managed"]:
        pytest.skip("using an existing cluster (SLURM_TEST_EXISTING=1)")
    state = tmp_path / "cluster"
    try:
        first = run_testcluster("up", state)
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == f"export SLURM_CONF={state / 'slurm.conf'}"
        pids = _pids(state)
        assert len(pids) == 3 and all(Path(f"/proc/{p}").exists() for p in pids)
        second = run_testcluster("up", state)  # idempotent: no second slurmd (it would kill the first)
        assert second.returncode == 0, second.stderr
        assert _pids(state) == pids and all(Path(f"/proc/{p}").exists() for p in pids)
        status = run_testcluster("status", state)
        assert status.returncode == 0 and "localhost idle" in status.stdout
    finally:
        down = run_testcluster("down", state)
    assert down.returncode == 0, down.stderr
    assert _pids(state) == [] and not any(Path(f"/proc/{p}").exists() for p in pids)
    assert run_testcluster("down", state).returncode == 0  # nothing running: fine
    assert run_testcluster("status", state).returncode == 1
    assert os.environ["SLURM_CONF"] == slurm_cluster["conf"]  # the session cluster is untouched
    assert cluster_reachable()[0]


@pytest.mark.slurm
def test_slurm_readme_python_block_as_written(slurm_cluster, tmp_path):
    """slurm/README.md's submission example, verbatim, from a scratch folder (its results/jobs land there)."""
    text = (Path(__file__).resolve().parents[1] / "slurm" / "README.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", text, re.S)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=WAIT_S + 60)
    assert out.returncode == 0, out.stderr
    results = eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - the printed list of result dicts
    assert [r["x"] for r in results] == [1, 2, 3] and len({r["job_id"].split("_")[0] for r in results}) == 1
    (script,) = {p.read_text() for p in (tmp_path / "results" / "jobs").glob("*_submission.sh")}
    assert "#SBATCH --mem=1GB" in script and "#SBATCH --time=10" in script and "--gpus-per-node" not in script
