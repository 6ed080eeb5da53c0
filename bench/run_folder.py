"""One run folder, written in one place: by the result store (``bench.harness.store``, which adds the
lock, the state and the data fingerprints around it) and by ``python -m bench.train`` alike.

    config.yaml    the cell (``Cell.to_dict``), written before training
    log.txt        the run's log (``LOG_FORMAT``)
    running        while it trains: host, pid, start time (and the process's kernel start time, which tells it
                   from a later process reusing the pid: :func:`running_process`)
    interrupted    stopped by a signal or a step budget (``last.pt`` saved: the same command resumes): signal, step, time
    failed         the error line and the path of ``traceback.txt``
    result.json    the result (``bench.provenance.result_record``), whole or not at all
    done           written last: the result is complete

How a run is run (force, wait for a lock, resume across a code change, …) is one value, :class:`RunOptions`,
from the command line through a sweep and its jobs to the store and the trainer.

No write of a run follows a symbolic link: before anything is written, every link in the run folder (a store
copied with ``cp -as`` is made of them, pointing into a colleague's store) is replaced by a copy of what it
points to (:func:`own_copies`), so a resumed cell appends to its own ``log.txt`` and a failing one writes its own
``traceback.txt``; the files the run replaces whole (markers, ``config.yaml``, ``result.json``, checkpoints) are
written by renaming a new file over the old name, which replaces a link and never writes through it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench import spec
from bench.atomic import atomic_write_bytes, json_text
from bench.faults import point as fault_point
from bench.provenance import result_record

RESULT_FILE, DONE_FILE, FAILED_FILE, RUNNING_FILE = "result.json", "done", "failed", "running"
INTERRUPTED_FILE, CONFIG_FILE, LOG_FILE, TRACEBACK_FILE = "interrupted", "config.yaml", "log.txt", "traceback.txt"
#: The markers of a run's outcome (one at most after a run; ``running`` while it runs).
MARKERS = (DONE_FILE, FAILED_FILE, INTERRUPTED_FILE, RUNNING_FILE)
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """How a cell is run: one value from the command line (``python -m bench run|sweep``) through a sweep and
    its jobs to the store (``run_cell_in_store``) and the trainer."""

    force: bool = False  # replace a done result, trained from scratch (never from a checkpoint)
    force_before: float | None = None  # with force: only results finished before then (a sweep's start time)
    wait_lock: bool = False  # wait for a cell another process is training instead of skipping it
    allow_code_change: bool = False  # resume a checkpoint written by other code (both commits are recorded)
    retrain_other_code: bool = False  # retrain a done result made by other training code (a sweep's mixed-code cells)
    anchors: tuple[str, ...] = ()  # ids of the cells that others start from (OAS baselines: their best.pt); a done
    #                                  one whose best.pt is missing or fails its digest is retrained from scratch

    def to_dict(self) -> dict:
        return dict(self.__dict__)


PLAIN_RUN = RunOptions()  # a plain run: resume or skip as the store says, never force, never wait


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so a reader sees the old file or the whole new one, never a part."""
    atomic_write_bytes(path, text.encode(), fault="store.before_rename")


def write_json(path: Path, obj) -> None:
    write_text(path, json_text(obj))


class RunFolder:
    """The files of one run folder (module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def start(self, cell: spec.Cell, from_scratch: bool = False) -> None:
        """Replace the folder's links by copies (:func:`own_copies`), clear the last outcome (its markers;
        ``from_scratch``: its checkpoints too), then write ``config.yaml`` and the ``running`` marker. A folder
        where a file belongs is moved aside, never deleted."""
        own_copies(self.path)
        for name in (*MARKERS, RESULT_FILE, CONFIG_FILE):
            if self.file(name).is_dir():
                aside = self.file(f"{name}.not-a-file-{time.strftime('%Y%m%d-%H%M%S')}")
                os.replace(self.file(name), aside)
                log.warning("%s was a folder where a run writes a file: moved to %s", self.file(name), aside)
        for marker in (FAILED_FILE, DONE_FILE, INTERRUPTED_FILE):
            self.file(marker).unlink(missing_ok=True)
        if from_scratch:  # never from a checkpoint (e.g. one that other code wrote)
            for f in [*self.path.glob("last*.pt*"), *self.path.glob("best.pt*")]:
                f.unlink()
        write_text(self.file(CONFIG_FILE), yaml.safe_dump(cell.to_dict(), sort_keys=False))
        write_json(self.file(RUNNING_FILE), {"host": socket.gethostname(), "pid": os.getpid(), "started_at": now(),
                                             "process_start": process_start(os.getpid())})

    @contextmanager
    def logging(self) -> Iterator[None]:
        """The run's log into ``log.txt`` (INFO and above, ``LOG_FORMAT``) while the block runs."""
        handler = logging.FileHandler(self.file(LOG_FILE))
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.setLevel(logging.INFO)
        root = logging.getLogger()
        old_level = root.level
        root.setLevel(min(old_level, logging.INFO))
        root.addHandler(handler)
        try:
            yield
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)
            handler.close()

    def interrupted(self, signal: str | None, step: int | None) -> None:
        """Stopped with ``last.pt`` saved: the same command (a plain sweep) resumes it."""
        write_json(self.file(INTERRUPTED_FILE), {"signal": signal, "step": step, "at": now()})
        self.file(RUNNING_FILE).unlink(missing_ok=True)

    def done(self, cell: spec.Cell, body: dict, wall_time_s: float, fingerprint, tracker=None) -> dict:
        """``result.json`` (the trainer's ``body`` with the cell and its provenance), then ``done``."""
        result = result_record(cell, body, wall_time_s=wall_time_s, fingerprint=fingerprint)
        fault_point("store.before_result")
        write_json(self.file(RESULT_FILE), result)
        fault_point("store.before_done")
        if tracker is not None:
            tracker.finish(result)
        self.file(DONE_FILE).touch()
        self.file(RUNNING_FILE).unlink(missing_ok=True)
        if cell.rehearsal is not None:  # a rehearsal never resumes: its full checkpoint (a published-size model
            for f in self.path.glob("last*.pt*"):  # and its optimiser state, 1.8 GB for CLIP) goes; best.pt stays
                f.unlink(missing_ok=True)          # (an OAS rehearsal's anchor)
        return result

    def failed(self, e: BaseException) -> str:
        """Record why the run stopped (``failed`` + ``traceback.txt``; a second Ctrl-C: ``interrupted``) as far
        as the folder can be written; returns the error line."""
        message = error_line(e, self.path)
        try:
            if isinstance(e, KeyboardInterrupt):
                write_json(self.file(INTERRUPTED_FILE), {"signal": "SIGINT", "at": now()})
            else:
                self.file(TRACEBACK_FILE).write_text(traceback.format_exc())
                write_text(self.file(FAILED_FILE), f"{message}\ntraceback: {self.file(TRACEBACK_FILE)}\n")
        except OSError as record_error:  # e.g. the disk is full: the original error still propagates
            log.error("could not record the failure in %s: %s", self.path, record_error)
        try:
            self.file(RUNNING_FILE).unlink(missing_ok=True)
        except OSError:  # a read-only folder: the marker stays, its free lock says the cell is not running
            pass
        return message


def own_copies(folder: str | Path) -> list[Path]:
    """Replace every symbolic link inside ``folder``, at any depth, by a copy of what it points to (a folder by a
    copy of its tree; a link to nothing is removed), so that no write into the run folder lands in another
    folder through a link: a store copied with ``cp -as`` holds links into a colleague's store, whose ``log.txt``
    a resumed cell appended to. Returns the links replaced (each is logged)."""
    replaced = []
    for top, dirs, files in os.walk(folder):  # links to folders are listed in dirs, not followed
        for name in [*dirs, *files]:
            link = Path(top) / name
            if not link.is_symlink():
                continue
            target, copy = link.resolve(), link.with_name(f".{name}.copy-{os.getpid()}")
            if target.is_dir():
                shutil.copytree(target, copy, symlinks=False, ignore_dangling_symlinks=True)
            elif target.is_file():
                shutil.copy2(target, copy)
            link.unlink()
            if copy.exists():
                os.replace(copy, link)
            replaced.append(link)
    if replaced:
        log.warning("%s: %d symbolic link(s) replaced by copies of what they point to, so that the run writes its own "
                    "files (%s)", folder, len(replaced), ", ".join(str(p.relative_to(folder)) for p in replaced[:8]))
    return replaced


def process_start(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` (``/proc/<pid>/stat``, field 22: clock ticks since boot), or
    None (no such process, or no ``/proc``): with the pid it names one process, never a later one reusing it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after the command name, which may hold spaces: field 3 on
    if fields and fields[0] in ("Z", "X"):  # a zombie: it has exited (its locks released), not yet reaped
        return None
    return fields[19] if len(fields) > 19 else None


def running_process(folder: str | Path) -> str | None:
    """``process <pid> on <host> (started …)`` when the folder's ``running`` marker names a live process of this
    host (the one that wrote it: same pid and kernel start time) other than this one, else None (no marker, a
    marker of another host, or of a process that is gone). The liveness that a lock file removed by a user
    (``rm -rf <root>/.locks``) cannot fool; across hosts the lock alone says it."""
    try:
        marker = json.loads(Path(folder, RUNNING_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("host") != socket.gethostname() or not marker.get("process_start"):
        return None
    pid = marker.get("pid")
    if not isinstance(pid, int) or pid == os.getpid() or process_start(pid) != marker["process_start"]:
        return None
    return f"process {pid} on {marker['host']} (started {marker.get('started_at')})"


def refusal(folder: str | Path, cell: spec.Cell) -> str | None:
    """Why ``python -m bench.train`` must not train ``cell`` in ``folder``, checked before anything in it changes
    (None: a new folder, or this cell's unfinished run, which it resumes): a finished run (never replaced), a run
    that trains now, another cell's run, or checkpoints and results whose cell cannot be told."""
    folder = Path(folder)
    if not folder.exists():
        return None
    if not folder.is_dir():
        return f"--run-dir {folder} is a file, not a folder: give a folder for the run"
    if (folder / DONE_FILE).exists():
        return (f"--run-dir {folder} holds a finished run (its `done` marker): python -m bench.train never changes a "
                "finished result; give a fresh --run-dir (or move the folder away to train the cell there again)")
    if holder := running_process(folder):
        return f"--run-dir {folder} is being trained now by {holder}: give another --run-dir, or wait for it"
    config = folder / CONFIG_FILE
    if not config.exists():
        kept = [n for n in ("last.pt", "last.prev.pt", "best.pt", RESULT_FILE) if (folder / n).exists()]
        return (f"--run-dir {folder} holds {', '.join(kept)} but no {CONFIG_FILE}: which cell they belong to cannot be "
                "told; give a fresh --run-dir (or move them away)") if kept else None
    try:
        from bench.config_files import read_yaml

        other = spec.Cell.from_dict(read_yaml(config, "run folder config"))
        other_id = spec.cell_id(other)
    except Exception as e:  # noqa: BLE001 - whatever it holds, it is no cell this one can resume
        return (f"{config} is not a cell's config ({type(e).__name__}: {e}): whose run --run-dir {folder} holds cannot "
                "be told; give a fresh --run-dir")
    if other_id != cell.id:
        return (f"--run-dir {folder} holds the run of another cell ({other_id}: {other.matcher.name} / "
                f"{other.strategy.name} / seed {other.seed}; this cell is {cell.id}); give a fresh --run-dir (a run "
                "folder holds one cell)")
    return None


def error_line(e: BaseException, folder: Path) -> str:
    """The one line a failed run records (a folder turned read-only says what to do)."""
    if isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (f"the run folder {folder} is not writable any more ({os.strerror(e.errno)}: {e}); the cell "
                "failed, the other cells go on: make the folder writable and sweep again (it resumes from "
                "its last checkpoint)")
    return f"{type(e).__name__}: {e}"


def train_in_folder(cell: spec.Cell, folder: str | Path, train_fn: Callable, fingerprint, *,
                    options: RunOptions = PLAIN_RUN, anchor_checkpoint: Callable[[], Path | None] | None = None,
                    tracker_factory: Callable | None = None, raise_errors: bool = True) -> dict:
    """Train ``cell`` in ``folder`` and write every file of the run folder; ``{"state": "done" | "interrupted"
    | "failed", "run_dir", "result", "error"?, "signal"?}``. ``train_fn(cell, run_dir, tracker=,
    anchor_checkpoint=[, allow_code_change=True])`` is ``bench.train.run_cell``; ``anchor_checkpoint()``
    finds the checkpoint an OAS cell starts from (its error is the run's); ``fingerprint`` the data's
    (recorded in the provenance); ``tracker_factory(cell, run_dir)`` makes the W&B run. An exception is
    recorded (``failed``), then re-raised (``raise_errors``, or not an ``Exception``) or returned."""
    run = RunFolder(folder)
    run.start(cell, from_scratch=options.force)
    tracker = None
    with run.logging():
        start = time.time()
        try:
            anchor = anchor_checkpoint() if anchor_checkpoint else None
            tracker = tracker_factory(cell, run.path) if tracker_factory else None
            log.info("training cell %s in %s", cell.id, run.path)
            body = train_fn(cell, run.path, tracker=tracker, anchor_checkpoint=anchor,
                            **({"allow_code_change": True} if options.allow_code_change else {}))
            if body.get("status", "done") != "done":  # checkpoint written: the same command resumes
                run.interrupted(body.get("signal"), body.get("global_step"))
                if tracker is not None:
                    tracker.finish(None)
                return {"state": "interrupted", "run_dir": str(run.path), "result": None,
                        "status": body.get("status"), "signal": body.get("signal"), "global_step": body.get("global_step")}
            result = run.done(cell, body, time.time() - start, fingerprint, tracker)
        except BaseException as e:
            message = run.failed(e)
            if tracker is not None:
                tracker.finish(None, failed=True)
            if raise_errors or not isinstance(e, Exception):
                raise
            log.error("cell %s failed: %s", cell.id, message)
            return {"state": "failed", "run_dir": str(run.path), "error": message, "result": None}
    stopped_by = body.get("signal")  # a stop during the final evaluation: the result is whole
    return {"state": "done", "run_dir": str(run.path), "result": result, **({"signal": stopped_by} if stopped_by else {})}
