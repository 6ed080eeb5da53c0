"""The result store: ``<root>/<suite>/<cell-id>/`` per cell (DomainBed / CLIP_benchmark style).

A run folder holds ``config.yaml`` (the resolved cell), the trainer's checkpoints, ``log.txt``,
``ranks.npz``, ``result.json`` (written atomically: tmp file, fsync, ``os.replace``) and finally the
empty ``done`` marker. States (:func:`cell_state`):

- ``done``: the ``done`` marker exists (result.json is complete, as it was written before).
- ``failed``: a ``failed`` file (error line + path of ``traceback.txt``) and no ``done``.
- ``running``: a ``running`` file (host, pid, start time); a requeued job simply takes it over.
- ``pending``: none of these.

Re-running a non-done cell trains in the same folder, so the trainer can resume from its
checkpoints. ``force=True`` on a done cell trains in ``<cell-id>.rerun/`` and swaps it in only when
complete, so the previous result stays valid until the new one exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import yaml

from bench.faults import point as fault_point

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ROOT = REPO_ROOT / "results" / "runs"
PACKAGES = ("torch", "transformers", "wandb", "numpy", "pandas", "submitit")
RESULT_FILE, DONE_FILE, FAILED_FILE, RUNNING_FILE = "result.json", "done", "failed", "running"

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- files

def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so a reader sees the old file or the whole new one, never a part."""
    from bench.atomic import atomic_write_bytes

    atomic_write_bytes(path, text.encode(), fault="store.before_rename")


def write_json_atomic(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=1, sort_keys=True, default=_json_default) + "\n")


def _json_default(x):
    if hasattr(x, "tolist"):  # numpy / torch scalars and arrays
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"cannot store {type(x).__name__} in result.json")


def run_dir_for(cell: dict, root: str | Path = DEFAULT_ROOT) -> Path:
    return Path(root) / cell["suite"] / cell["id"]


def locate_run(cell: dict, root: str | Path = DEFAULT_ROOT, reuse_other_suites: bool = True) -> Path:
    """The cell's own run folder, or a *done* run with the same id in another suite (same config)."""
    own = run_dir_for(cell, root)
    if own.exists() or not reuse_other_suites:
        return own
    for other in sorted(Path(root).glob(f"*/{cell['id']}")):
        if (other / DONE_FILE).exists():
            return other
    return own


def cell_state(run_dir: str | Path) -> str:
    """``done`` | ``failed`` | ``running`` | ``pending`` (module docstring)."""
    d = Path(run_dir)
    if (d / DONE_FILE).exists():
        return "done"
    if (d / FAILED_FILE).exists():
        return "failed"
    if (d / RUNNING_FILE).exists():
        return "running"
    return "pending"


def load_result(run_dir: str | Path) -> dict | None:
    """The result of a done run, or None."""
    d = Path(run_dir)
    if not (d / DONE_FILE).exists():
        return None
    return json.loads((d / RESULT_FILE).read_text())


def failure_message(run_dir: str | Path) -> str | None:
    f = Path(run_dir) / FAILED_FILE
    return f.read_text().strip() if f.exists() else None


# ----------------------------------------------------------------------------- provenance

def git_info(repo: Path = REPO_ROOT) -> dict:
    """Commit and dirty flag of the code (read-only git commands); None where git is unavailable."""
    def git(*args):
        try:
            return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                                  timeout=20, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def package_versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"cuda: {torch.cuda.get_device_name(0)} (x{torch.cuda.device_count()})"
    except Exception:  # torch missing or a broken CUDA setup: provenance must not fail
        pass
    return f"cpu: {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def data_fingerprint(roots, edge_bytes: int = 4096, max_files: int = 10_000) -> str | None:
    """sha1 over every data file's relative path, size, mtime and first/last ``edge_bytes`` bytes.

    Cheap on purpose (never reads whole files: COCO features are 33 GB); it detects replaced,
    truncated or regenerated files, not a change in the middle of an unchanged-size file.
    """
    roots = [Path(r) for r in roots if r]
    if not roots:
        return None
    h = hashlib.sha1()
    n = 0
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            n += 1
            if n > max_files:
                break
            st = p.stat()
            rel = p.name if p == root else str(p.relative_to(root))
            h.update(f"{rel}|{st.st_size}|{st.st_mtime_ns}|".encode())
            with open(p, "rb") as f:
                h.update(f.read(edge_bytes))
                if st.st_size > edge_bytes:
                    f.seek(max(edge_bytes, st.st_size - edge_bytes))
                    h.update(f.read(edge_bytes))
    return h.hexdigest()


def provenance(cell: dict | None = None, wall_time_s: float | None = None) -> dict:
    """Where and with what a result was made: code, packages, machine, data, seed, wall time."""
    ds = (cell or {}).get("dataset", {})
    return {
        "git": git_info(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": device_name(),
        "data_fingerprint": data_fingerprint([ds.get("data_root"), ds.get("vocab_root")]),
        "seed": (cell or {}).get("seed"),
        "wall_time_s": wall_time_s,
        "argv": list(sys.argv),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# ----------------------------------------------------------------------------- running

def default_tracker_factory(cell: dict, run_dir: Path):
    from bench.harness.tracking import WandbTracker

    return WandbTracker(cell, run_dir)


def _task_rank() -> int:
    """This process's rank in a multi-task job (torch's RANK, else SLURM's task id), 0 otherwise."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))


def _anchor_checkpoint(cell: dict, root: Path, reuse_other_suites: bool) -> Path | None:
    """``best.pt`` of the baseline an OAS cell depends on; an error when that cell is not done."""
    if not cell.get("depends_on"):
        return None
    dep = {"suite": cell["suite"], "id": cell["depends_on"][0]}
    dep_dir = locate_run(dep, root, reuse_other_suites)
    if cell_state(dep_dir) != "done":
        raise RuntimeError(f"anchor cell {dep['id']} is not done ({cell_state(dep_dir)} in {dep_dir}); "
                           "run it first (topological order)")
    return dep_dir / "best.pt"


def run_cell_in_store(cell: dict, root: str | Path = DEFAULT_ROOT, force: bool = False,
                      tracker_factory: Callable | None = default_tracker_factory,
                      train_fn: Callable | None = None, raise_errors: bool = True,
                      reuse_other_suites: bool = True) -> dict:
    """Train ``cell`` into the store unless it is done; return ``{"state", "run_dir", "result"}``.

    ``train_fn(cell, run_dir, tracker=, anchor_checkpoint=)`` defaults to ``bench.train.run_cell``.
    OAS cells get ``anchor_checkpoint = <baseline run dir>/best.pt`` (the baseline must be done).
    On an exception: ``failed`` + ``traceback.txt`` are written, then it is re-raised
    (``raise_errors``) or returned as ``{"state": "failed", "error": ...}``.
    """
    root = Path(root)
    final = locate_run(cell, root, reuse_other_suites)
    if cell_state(final) == "done" and not force:
        return {"state": "done", "run_dir": str(final), "result": load_result(final), "skipped": True}
    if train_fn is None:
        from bench.train import run_cell as train_fn  # lazy: the store is used without torch too
    final = run_dir_for(cell, root)
    work = final.with_name(final.name + ".rerun") if cell_state(final) == "done" else final
    if _task_rank() != 0:  # a multi-task cell: the other ranks train alongside rank 0, which alone writes
        work.mkdir(parents=True, exist_ok=True)
        body = train_fn(cell, work, tracker=None, anchor_checkpoint=_anchor_checkpoint(cell, root, reuse_other_suites))
        state = "done" if body.get("status", "done") == "done" else "pending"
        return {"state": state, "run_dir": str(work), "result": body, "rank": _task_rank()}
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # e.g. a path under a regular file, a read-only mount
        raise OSError(e.errno, f"cannot create the run folder {work} in the results folder {root} "
                               f"({e.strerror}); choose a writable results folder (--root)") from e
    for marker in (FAILED_FILE, DONE_FILE):
        (work / marker).unlink(missing_ok=True)
    write_atomic(work / "config.yaml", yaml.safe_dump(cell, sort_keys=False))
    write_json_atomic(work / RUNNING_FILE, {"host": socket.gethostname(), "pid": os.getpid(),
                                           "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    handler = logging.FileHandler(work / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    handler.setLevel(logging.INFO)
    root_logger = logging.getLogger()
    old_level = root_logger.level
    root_logger.setLevel(min(old_level, logging.INFO))
    root_logger.addHandler(handler)
    tracker = None
    start = time.time()
    try:
        anchor = _anchor_checkpoint(cell, root, reuse_other_suites)
        tracker = tracker_factory(cell, work) if tracker_factory else None
        log.info("training cell %s in %s", cell["id"], work)
        body = train_fn(cell, work, tracker=tracker, anchor_checkpoint=anchor)
        if body.get("status", "done") != "done":  # e.g. "interrupted": checkpoint written, resume later
            (work / RUNNING_FILE).unlink(missing_ok=True)
            if tracker is not None:
                tracker.finish(None)
            return {"state": "pending", "run_dir": str(work), "result": None, "status": body.get("status")}
        result = dict(body)
        result.update({"cell_id": cell["id"], "cell": cell,
                       "provenance": provenance(cell, wall_time_s=time.time() - start)})
        fault_point("store.before_result")
        write_json_atomic(work / RESULT_FILE, result)
        fault_point("store.before_done")
        if tracker is not None:
            tracker.finish(result)
        (work / DONE_FILE).touch()
        (work / RUNNING_FILE).unlink(missing_ok=True)
    except BaseException as e:
        tb = work / "traceback.txt"
        try:
            tb.write_text(traceback.format_exc())
            write_atomic(work / FAILED_FILE, f"{type(e).__name__}: {e}\ntraceback: {tb}\n")
        except OSError as record_error:  # e.g. the disk is full: the original error still propagates
            log.error("could not record the failure of %s in %s: %s", cell["id"], work, record_error)
        (work / RUNNING_FILE).unlink(missing_ok=True)
        if tracker is not None:
            tracker.finish(None, failed=True)
        if raise_errors or not isinstance(e, Exception):
            raise
        return {"state": "failed", "run_dir": str(work), "error": f"{type(e).__name__}: {e}", "result": None}
    finally:
        root_logger.removeHandler(handler)
        root_logger.setLevel(old_level)
        handler.close()
    if work != final:  # forced re-run of a done cell: swap the new folder in, then drop the old one
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(work, final)
        shutil.rmtree(old, ignore_errors=True)
    return {"state": "done", "run_dir": str(final), "result": result, "skipped": False}
