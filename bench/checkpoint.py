"""Atomic, checksummed checkpoints.

``save(obj, path)`` writes ``path`` through a temporary file in the same folder (fsync + os.replace),
so a reader never sees a torn file, and records the SHA-256 of the bytes in ``path + ".sha256"``
(written the same way, after the checkpoint). ``load(path)`` verifies it and raises
:class:`CheckpointError` naming the file when the bytes do not match (truncated or corrupted).

Every checkpoint the project reads — this suite's ``best.pt``/``last.pt``, an OAS anchor, an official
release — is unpickled by :func:`read` alone: ``torch.load(weights_only=True)`` with a short allow-list
of the few non-tensor types these files hold (:data:`ALLOWED_GLOBALS`, scoped to the one load). A file
whose pickle names anything else (``os.system``, any class or function) is refused unread, naming what
it asked for; nothing in it runs. ``load`` = ``verify`` + ``read``.

A training checkpoint holds named objects: :func:`state_dicts` gathers ``{name: obj.state_dict()}`` (a
mapping of objects, e.g. the branches, gives a mapping of state dicts) and :func:`restore` loads each
named object back from a loaded checkpoint, naming what it lacks. :data:`RNG` is the process's random
generators (Python, NumPy, torch, CUDA) as such an object.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import pickle
import random
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from bench.atomic import atomic_write_bytes, digest_problem
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
    """Raise CheckpointError when ``path`` is missing, unreadable or does not match its digest
    (``bench.atomic.digest_problem``)."""
    if problem := digest_problem(path):
        raise CheckpointError(problem)


def load(path: str | Path, map_location="cpu"):
    """The checkpoint at ``path`` after :func:`verify` (its digest), read by :func:`read`."""
    verify(path)
    return read(path, map_location=map_location)


def _allowed_globals() -> list:
    """What a checkpoint may name besides tensors and plain containers: ``argparse.Namespace`` (the
    official programs' ``opt``), numpy arrays, scalars and dtypes (numpy's RNG state in ``last.pt``, a
    numpy ``best_rsum`` in official files), under their numpy 1 and 2 names."""
    try:
        from numpy._core import multiarray as _ma  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core import multiarray as _ma
    allowed: list = [argparse.Namespace, np.dtype, np.ndarray]
    for name in ("scalar", "_reconstruct"):
        fn = getattr(_ma, name)
        allowed += [(fn, f"numpy.core.multiarray.{name}"), (fn, f"numpy._core.multiarray.{name}")]
    for dtype in (np.float64, np.float32, np.int64, np.int32, np.uint32, np.uint8, np.bool_):
        allowed.append(type(np.dtype(dtype)))
    return allowed


READ_ERRORS = (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError,
               AttributeError, ImportError, IndexError, KeyError, TypeError)


def read(path: str | Path, map_location="cpu"):
    """The unpickled checkpoint at ``path``: ``torch.load(weights_only=True)`` allowing only
    :func:`_allowed_globals`. :class:`CheckpointError` naming the file: a global it may not name (the
    file is refused unread: nothing in it runs), or bytes that are no torch checkpoint."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_allowed_globals()), open(path, "rb") as f:
            return torch.load(f, map_location=map_location, weights_only=True)
    except READ_ERRORS as e:
        if isinstance(e, (FileNotFoundError, IsADirectoryError, PermissionError)):
            raise CheckpointError(f"checkpoint {path} cannot be opened ({type(e).__name__}: {e.strerror})") from e
        text = str(e)
        found = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"Unsupported global: ([\w. ]+)", text)
        if found:
            raise CheckpointError(
                f"checkpoint {path} asks to unpickle {found.group(1).strip()}, which no model checkpoint needs "
                "(torch.load(weights_only=True) refused it: nothing in the file ran); it is not a checkpoint "
                "of this suite or of a supported official program. Only load files you trust.") from e
        why = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", text, re.S)
        why = " ".join(why.group(1).split()) if why else (text.splitlines()[0] if text else "unexpected end of file")
        raise CheckpointError(
            f"checkpoint {path} ({path.stat().st_size} bytes) could not be read: it is truncated or not a "
            f"torch checkpoint ({type(e).__name__}: {why}); download or copy it again") from e


class _RandomGenerators:
    """The process's random generators as a named object of a checkpoint (state_dict / load_state_dict)."""

    def state_dict(self) -> dict:
        state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


RNG = _RandomGenerators()


def state_dicts(**objects) -> dict:
    """``{name: obj.state_dict()}``; a mapping of objects gives ``{name: {key: obj.state_dict()}}``."""
    return {name: ({k: o.state_dict() for k, o in obj.items()} if isinstance(obj, Mapping) else obj.state_dict())
            for name, obj in objects.items()}


def restore(saved: dict, path: str | Path, **objects) -> None:
    """Load each named object (or each object of a named mapping) from ``saved`` (a loaded checkpoint);
    CheckpointError naming the checkpoint and what it lacks."""
    for name, obj in objects.items():
        if name not in saved:
            raise CheckpointError(f"checkpoint {path} holds no {name!r} (it has {sorted(saved)})")
        if isinstance(obj, Mapping):
            missing = sorted(set(obj) - set(saved[name]))
            if missing:
                raise CheckpointError(f"checkpoint {path} holds no {name} {missing} (it has {sorted(saved[name])})")
            for key, o in obj.items():
                o.load_state_dict(saved[name][key])
        else:
            obj.load_state_dict(saved[name])
