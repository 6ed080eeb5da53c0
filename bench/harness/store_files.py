"""The result store's file-system primitives (:mod:`bench.harness.store` builds on them): the lock file of a run
folder and the exclusive ``fcntl.flock`` held on it while a process trains the cell, a probe of whether some process
holds it, and the check that a folder the store would write does not lead out of its results folder through a
symbolic link."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

LOCKS_DIR = ".locks"


def folder_lock(run_dir: str | Path) -> Path:
    """The lock file of the run folder ``<root>/<suite>/<id>``: ``<root>/.locks/<suite>/<id>.lock``."""
    run_dir = Path(run_dir)
    return run_dir.parent.parent / LOCKS_DIR / run_dir.parent.name / f"{run_dir.name}.lock"


class CellLock:
    """An exclusive ``fcntl.flock`` on a cell's lock file: held while a process trains the cell and
    released by the kernel when that process dies, whatever kills it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self, wait: bool = False) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_symlink():  # never lock (or create) a file elsewhere through a link: a lock of our own
            self.path.unlink()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd  # the file stays empty: who trains is in the run folder's `running` marker
        return True

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def lock_is_held(path: str | Path, attempts: int = 3, pause_s: float = 0.05) -> bool:
    """Whether some process holds the lock (probed with a shared lock taken and dropped at once;
    a few tries, so a probe of another reader is not mistaken for a holder)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        for i in range(attempts):
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                return False
            except BlockingIOError:
                if i + 1 < attempts:
                    time.sleep(pause_s)
        return True
    finally:
        os.close(fd)


def link_out_of_root(path: str | Path, root: str | Path) -> str | None:
    """Why the store must not write at ``path`` (a folder under ``root``): a symbolic link on the way from
    ``root`` leads out of it (``<root>/<suite>`` or a run folder linked to a colleague's store), so a write there
    would land in the other store. None when every folder on the way stays inside ``root``. (Links *inside* a
    run folder are replaced by copies before it is written: ``bench.run_folder.own_copies``.)"""
    root, path = Path(root), Path(path)
    try:
        inside = root.resolve()
        parts = path.relative_to(root).parts
    except (OSError, ValueError):
        return None
    step = root
    for part in parts:
        step = step / part
        if step.is_symlink() and not step.resolve().is_relative_to(inside):
            return (f"{step} is a symbolic link to {step.resolve()}, outside the results folder {root}: the store "
                    "writes only inside its results folder, and a cell trained here would write into the other "
                    f"folder; replace the link by a copy (cp -rL {step.resolve()} <a new folder>, then move it to "
                    f"{step}) or give --root the folder it points to")
    return None
