"""Named fault points for the fault-injection tests (tests/test_faults.py).

``point("checkpoint.before_rename")`` does nothing unless the environment variable
``ITM_BENCH_FAULT=<point>:<n>[:<action>]`` names that point; then the ``n``-th time (1-based) the
process reaches it, ``action`` happens: ``kill`` (default, SIGKILL of this process: a power cut),
``enospc`` or ``eio`` (raise the OSError a full or failing disk gives). Unset, a call costs one
dictionary lookup.

``ITM_BENCH_SLOW=<point>:<seconds>`` instead makes every pass through that point sleep, so tests can
catch a tiny training job while it runs (SLURM requeue, scancel) on any machine speed.
"""

from __future__ import annotations

import errno
import os
import signal
import time

ENV = "ITM_BENCH_FAULT"
SLOW_ENV = "ITM_BENCH_SLOW"
_hits: dict[str, int] = {}


def point(name: str) -> None:
    slow = os.environ.get(SLOW_ENV)
    if slow and slow.partition(":")[0] == name:
        time.sleep(float(slow.partition(":")[2]))
    spec = os.environ.get(ENV)
    if not spec:
        return
    want, _, rest = spec.partition(":")
    if want != name:
        return
    n, _, action = rest.partition(":")
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] != int(n or 1):
        return
    if action in ("", "kill"):
        os.kill(os.getpid(), signal.SIGKILL)
    code = {"enospc": errno.ENOSPC, "eio": errno.EIO}.get(action)
    if code is None:
        raise ValueError(f"{ENV}={spec!r}: action must be kill, enospc or eio")
    raise OSError(code, os.strerror(code))  # what a full or failing disk raises
