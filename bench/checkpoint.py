"""Atomic, checksummed checkpoints.

``save(obj, path)`` writes ``path`` through a temporary file in the same folder (fsync + os.replace),
so a reader never sees a torn file, and records the SHA-256 of the bytes in ``path + ".sha256"``
(written the same way, after the checkpoint). ``load(path)`` verifies it and raises
:class:`CheckpointError` naming the file when the bytes do not match (truncated or corrupted).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

from bench.atomic import atomic_write_bytes
from bench.faults import point as fault_point


class CheckpointError(RuntimeError):
    pass


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
