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
