"""Session fixture ``slurm_cluster``: a real single-node SLURM cluster for the ``slurm`` tests.

Wired in ``tests/conftest.py`` by ``from tests.slurm_cluster import slurm_cluster``.

- Default: ``slurm/testcluster up --state <tmp>`` (needs root; installs Debian's SLURM if missing),
  ``SLURM_CONF`` set for the session, ``down`` at the end.
- ``SLURM_TEST_EXISTING=1``: use the cluster ``SLURM_CONF`` already points at (start/stop nothing),
  submitting with profile ``SLURM_TEST_PROFILE`` (default ``local``).
- Where no cluster can be had the tests SKIP with the reason; with ``REQUIRE_SLURM=1`` they FAIL.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTCLUSTER = REPO_ROOT / "slurm" / "testcluster"


def _unavailable(reason: str) -> None:
    if os.environ.get("REQUIRE_SLURM") == "1":
        pytest.fail(f"REQUIRE_SLURM=1 but no SLURM cluster: {reason}")
    pytest.skip(f"no SLURM cluster: {reason}")


def run_testcluster(command: str, state: Path, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """Run ``slurm/testcluster <command> --state <state>`` (stdout/stderr captured)."""
    return subprocess.run(
        [str(TESTCLUSTER), command, "--state", str(state)],
        capture_output=True, text=True, timeout=timeout_s,
    )


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """Yields {"conf", "state", "profile", "managed"}; SLURM_CONF is set while the session runs."""
    from bench.harness.slurm import cluster_reachable

    profile = os.environ.get("SLURM_TEST_PROFILE", "local")
    if os.environ.get("SLURM_TEST_EXISTING") == "1":
        ok, reason = cluster_reachable()
        if not ok:
            _unavailable(reason)
        yield {"conf": os.environ.get("SLURM_CONF"), "state": None, "profile": profile, "managed": False}
        return

    if os.geteuid() != 0:
        _unavailable("slurm/testcluster needs root (or set SLURM_TEST_EXISTING=1 with SLURM_CONF)")
    state = tmp_path_factory.mktemp("slurm")
    try:
        up = run_testcluster("up", state)
    except subprocess.TimeoutExpired:
        run_testcluster("down", state, timeout_s=120)
        _unavailable("slurm/testcluster up timed out")
    if up.returncode != 0:
        run_testcluster("down", state, timeout_s=120)
        _unavailable(f"slurm/testcluster up failed:\n{up.stderr[-3000:]}")
    conf = state / "slurm.conf"
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    try:
        ok, reason = cluster_reachable()
        if not ok:
            _unavailable(reason)
        yield {"conf": str(conf), "state": state, "profile": profile, "managed": True}
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        down = run_testcluster("down", state, timeout_s=120)
        if down.returncode != 0:
            print(f"slurm/testcluster down failed:\n{down.stderr}")


# SLURM revokes a killed run's job credential with one-second resolution, and slurmd refuses a launch
# whose credential is not newer than the revocation ("Killing non-startable batch JobId=…: Job credential
# revoked", the job then ends FAILED without running). Its own 120 s hold on a requeued job avoids that;
# a test that shortens the hold must still leave a few seconds.
REQUEUE_RESTART_S = 3


def release_requeued(job_id: str, timeout_s: float = 60) -> None:
    """Wait until a requeued job is PENDING again, then start it ``REQUEUE_RESTART_S`` seconds later
    instead of after SLURM's 120 s hold (``BeginTime``)."""
    from bench.harness.slurm import slurm_states

    deadline = time.monotonic() + timeout_s
    while slurm_states([job_id])[job_id] != "PENDING":
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s}s for job {job_id} to be requeued (PENDING)")
        time.sleep(0.2)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", f"StartTime=now+{REQUEUE_RESTART_S}"],
                   check=True, timeout=20)
