"""The one atomic file writer (no torch import: the result store and collect use it too)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path

from bench.faults import point as fault_point


def atomic_write_bytes(path: str | Path, data: bytes, fault: str = "checkpoint.before_rename") -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename, fsync of the folder).

    The one writer of every file a reader may see half-written (checkpoints, digests, ranks, results,
    markers); ``fault`` names its injection point (bench/faults.py) between the write and the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # as open() would make it: mkstemp's 0600 hid every result from the group
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        fault_point(fault)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None:  # name the file: "[Errno 28]" alone says not where
            raise OSError(e.errno, f"{e.strerror}: cannot write {path} ({len(data)} bytes); {_fix(e.errno, path)}, "
                                   f"any previous {path.name} is unchanged") from e
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _umask() -> int:
    """The process's umask (``/proc/self/status``; else set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def digest_problem(path: str | Path) -> str | None:
    """What is wrong with a checksummed file (a checkpoint and its ``<name>.sha256``, written by
    ``bench.checkpoint.save``): missing, no digest, or bytes that do not match it (truncated, damaged); None when
    whole. The one check of a digest (``bench.checkpoint.verify``, and the store without torch)."""
    path = Path(path)
    if not path.is_file():
        return f"checkpoint {path} does not exist"
    digest = path.with_name(path.name + ".sha256")
    if not digest.is_file():
        return f"checkpoint {path} has no digest file {digest.name}; it was not written completely"
    want = digest.read_text().strip()
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            sha.update(block)
    got = sha.hexdigest()
    if got != want:
        return f"checkpoint {path} is corrupted or truncated (sha256 {got[:12]}… ≠ recorded {want[:12]}…)"
    return None


def result_checkpoint_problem(path: str | Path, result: dict | None) -> str | None:
    """What is wrong with ``path``, a finished run's ``best.pt``, as the checkpoint of that run's ``result``
    (``result.json``, which records the sha256 of the ``best.pt`` it was evaluated from as ``best_sha256``):
    :func:`digest_problem`, or bytes that are another checkpoint (another run's ``best.pt`` copied over with its
    digest file: whole, but not this result's model); None when it is the result's own. A result written before
    the digest was recorded is checked against the digest file alone."""
    if problem := digest_problem(path):
        return problem
    recorded = (result or {}).get("best_sha256")
    got = Path(path).with_name(Path(path).name + ".sha256").read_text().strip()
    if recorded and got != recorded:
        return (f"checkpoint {path} is not the model of the run's result (sha256 {got[:12]}…, but its result.json was "
                f"evaluated from {str(recorded)[:12]}…): another run's checkpoint copied over (with its digest file)?")
    return None


def _fix(errno_code: int, path: Path) -> str:
    """What to do about a failed write, by its cause (a folder in the way is no full disk)."""
    if errno_code == errno.EISDIR:
        return f"{path} is a folder: give the path of a file to write (e.g. {path / 'result.json'})"
    if errno_code == errno.ENOTDIR:
        return f"a file stands where a folder of {path} belongs: move it away or write elsewhere"
    if errno_code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "make the folder writable or write elsewhere, and re-run"
    return "free space or fix the disk and re-run"


def _json_default(x):
    if hasattr(x, "tolist"):  # numpy / torch scalars and arrays
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"cannot store {type(x).__name__} in result.json")


def json_text(obj) -> str:
    """``obj`` as the JSON of a result file (sorted keys, numpy/torch values as lists, paths as strings)."""
    return json.dumps(obj, indent=1, sort_keys=True, default=_json_default) + "\n"
