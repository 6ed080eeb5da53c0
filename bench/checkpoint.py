"""Atomic, checksummed checkpoints.

``save(obj, path)`` writes ``path`` through a temporary file in the same folder (fsync + os.replace),
so a reader never sees a torn file, and records the SHA-256 of the bytes in ``path + ".sha256"``
(written the same way, after the checkpoint). ``load(path)`` verifies it and raises
:class:`CheckpointError` naming the file when the bytes do not match (truncated or corrupted).
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

import torch

from bench.faults import point as fault_point


class CheckpointError(RuntimeError):
    pass


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename, fsync of the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        fault_point("checkpoint.before_rename")
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None:  # name the file: "[Errno 28]" alone says not where
            raise OSError(e.errno, f"{e.strerror}: cannot write {path} ({len(data)} bytes); free space or "
                                   f"fix the disk and re-run, any previous {path.name} is unchanged") from e
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save(obj, path: str | Path) -> None:
    path = Path(path)
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    # The digest is written first under a temporary name would not help a reader: a checkpoint whose
    # digest is older simply fails verification and the caller falls back to the previous one.
    atomic_write_bytes(path, data)
    fault_point("checkpoint.before_digest")
    atomic_write_bytes(_digest_path(path), hashlib.sha256(data).hexdigest().encode())


def verify(path: str | Path) -> None:
    """Raise CheckpointError when ``path`` is missing, unreadable or does not match its digest."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    digest = _digest_path(path)
    if not digest.is_file():
        raise CheckpointError(f"checkpoint {path} has no digest file {digest.name}; it was not written completely")
    want = digest.read_text().strip()
    got = hashlib.sha256(path.read_bytes()).hexdigest()
    if got != want:
        raise CheckpointError(
            f"checkpoint {path} is corrupted or truncated (sha256 {got[:12]}… ≠ recorded {want[:12]}…)")


def load(path: str | Path, map_location="cpu"):
    verify(path)
    with open(path, "rb") as f:
        return torch.load(f, map_location=map_location, weights_only=False)
