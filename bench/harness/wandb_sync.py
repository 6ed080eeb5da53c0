"""``python -m bench sync``: upload offline W&B runs with ``wandb sync``, saying first what it waits for
(the server it uploads to) and giving up with one line after a timeout. Without network ``wandb sync``
retries silently for many minutes; the offline runs are never changed by a sync that is stopped."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

TIMEOUT_S = 600  # uploading a suite's offline runs takes seconds to minutes; without network it never ends


def seconds(text: str) -> float:
    """argparse type of ``--timeout``: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {text}")
    return value


def sync(runs: list[Path], dry_run: bool = False, timeout_s: float = TIMEOUT_S) -> int:
    """``wandb sync`` of ``runs``; its exit code, or 1 after one ``error:`` line when it did not end within
    ``timeout_s`` (its whole process group is stopped)."""
    host = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
    what = (f"wandb sync --dry-run: {len(runs)} offline run(s), nothing is uploaded" if dry_run else
            f"wandb sync: uploading {len(runs)} offline run(s) to {host} (WANDB_BASE_URL); it needs the network")
    print(f"{what}; gives up after {timeout_s:g} s (--timeout)", flush=True)
    cmd = [sys.executable, "-m", "wandb", "sync", *(["--dry-run"] if dry_run else []), *map(str, runs)]
    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _stop(proc)
        print(f"error: wandb sync did not finish within {timeout_s:g} s and was stopped (no network, or the W&B "
              "server does not answer); the offline runs are unchanged: check the connection and run it again, or "
              "give a longer --timeout", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _stop(proc)
        raise


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
