"""The result store: ``<root>/<suite>/<cell-id>/`` per cell (DomainBed / CLIP_benchmark style).

A run folder holds ``config.yaml`` (the cell), the trainer's checkpoints, ``log.txt``, ``ranks.npz``,
``result.json`` (written atomically: tmp file, fsync, ``os.replace``) and finally the empty ``done`` marker,
all written by ``bench.run_folder.train_in_folder`` (the writer ``python -m bench.train`` uses too); the
store adds the lock, the states, the data fingerprints and the swap of a complete result around it. States (:func:`cell_state` reads the markers, :func:`run_status` adds the
data check and the lock):

- ``done``: the ``done`` marker and a ``result.json`` that parses, made from the data the cell reads now
  (its :func:`cell_fingerprint` equals the one in the result's provenance).
- ``stale``: done, but for other data (the fingerprints differ): never reported; a sweep retrains it,
  keeping the old result until the new one is complete.
- ``corrupt``: ``done`` without a ``result.json`` that parses and holds metrics for every protocol of
  the cell, or one whose ``cell_id`` is another cell's (copied): left out, re-run.
- ``mixed-code`` (:func:`mark_mixed_code`, over one table's cells): done, but made by other training
  code (``provenance.source_fingerprint``) than the rest of the table: left out, a sweep retrains it.
- ``blocked``: a file stands where the run folder belongs: nothing runs there until it is moved.
- ``unidentified``: a local weights folder the cell reads is gone (or holds no model files): its id, which
  holds the folder's content, cannot be computed, so its result (if any) cannot be found (:func:`unidentified`).
- ``failed``: a ``failed`` file (error line + path of ``traceback.txt``) and no ``done``.
- ``running``: a ``running`` file (host, pid, start time) *and* the cell's lock is held. A ``running``
  marker whose lock is free was left by a process that died (SIGKILL, node failure): the cell is
  ``interrupted`` and the next sweep takes it over.
- ``interrupted``: an ``interrupted`` file (SIGTERM, Ctrl-C, a clean stop after N steps): ``last.pt``
  was saved and a plain sweep resumes it.
- ``pending``: none of these.

One process per cell: training holds an exclusive ``fcntl.flock`` on ``<root>/.locks/<suite>/<id>.lock``
(the kernel releases it when the process dies); a second process skips a locked cell (or waits for it,
``wait_lock=True``) and takes the next one, so concurrent sweeps share the work. Re-running a non-done
cell trains in the same folder, so the trainer resumes from its checkpoints. Replacing a complete
result (``force=True``, or a ``stale`` one) trains in a staging folder ``<id>.rerun-<job>`` unique to
the process (or job) and swaps it in only when complete: the previous result stays valid until then,
and a swap cut short is repaired under the lock by the next process.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from bench.atomic import result_checkpoint_problem
from bench.faults import point as fault_point
from bench.harness.store_files import (  # noqa: F401 - the store's file-system primitives, read through it too
    LOCKS_DIR,
    CellLock,
    folder_lock,
    link_out_of_root,
    lock_is_held,
)
from bench.provenance import (  # noqa: F401 - also read through the store by its callers
    REPO_ROOT,
    cell_data_files,
    cell_fingerprint,
    data_fingerprint,
    device_name,
    git_info,
    package_versions,
    provenance,
    result_record,
    source_fingerprint,
)
from bench.run_folder import (  # noqa: F401 - the run folder's files, read through the store by its callers
    DONE_FILE,
    FAILED_FILE,
    INTERRUPTED_FILE,
    PLAIN_RUN,
    RESULT_FILE,
    RUNNING_FILE,
    RunOptions,
    running_process,
    train_in_folder,
    write_json,
    write_text,
)
from bench.spec import PLAIN_NAME_RULE, Cell, is_plain_name

DEFAULT_ROOT = REPO_ROOT / "results" / "runs"
OLD_SUFFIX, STAGING_SUFFIX = ".old", ".rerun"

log = logging.getLogger(__name__)


class StoreError(OSError):
    """The store cannot hold a cell where it belongs (a file in the way, an unwritable folder): the
    message names the path and the fix."""


# ----------------------------------------------------------------------------- files

write_atomic = write_text  # a reader sees the old file or the whole new one, never a part
write_json_atomic = write_json


def _check_name(kind: str, value, root: Path) -> str:
    """``value`` as one path component under ``root``, or a ValueError naming it and the fix."""
    text = str(value)
    if not is_plain_name(text):
        raise ValueError(f"{kind} {text!r} cannot name a folder inside the results folder {root} (it would "
                         f"write {Path(root) / text} or outside --root): use {PLAIN_NAME_RULE}")
    return text


def run_dir_for(cell: Cell, root: str | Path = DEFAULT_ROOT) -> Path:
    """``<root>/<suite>/<cell-id>``; a suite name or id that would leave ``root`` is a ValueError."""
    root = Path(root)
    return root / _check_name("suite name", cell.suite, root) / _check_name("cell id", cell.id, root)


def lock_path(cell: Cell, root: str | Path = DEFAULT_ROOT) -> Path:
    """The cell's lock file ``<root>/.locks/<suite>/<id>.lock``, outside its run folder (which a swap
    replaces) and outside the suite's folder (which holds run folders only)."""
    return folder_lock(run_dir_for(cell, root))


def locate_run(cell: Cell, root: str | Path = DEFAULT_ROOT, reuse_other_suites: bool = True,
               fingerprints: dict | None = None) -> Path:
    """The cell's own run folder, or a *done* run with the same id in another suite.

    The id covers the config (with the code's defaults); another suite's run is reused only when it is
    ``done`` for the data this cell reads now (same :func:`cell_fingerprint`), never when stale or corrupt.
    """
    own = run_dir_for(cell, root)
    if own.exists() or not reuse_other_suites:
        return own
    for other in sorted(Path(root).glob(f"*/{cell.id}")):
        if other != own and run_status(cell, other, fingerprints)["state"] == "done":
            return other
    return own


def read_result(run_dir: str | Path) -> tuple[dict | None, str | None]:
    """(result, None) for a run folder with a ``result.json`` that parses, else (None, why not)."""
    path = Path(run_dir) / RESULT_FILE
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"{path} is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"{path} does not parse ({type(e).__name__}: {e})"
    if not isinstance(result, dict) or not isinstance(result.get("metrics"), dict) or not result["metrics"]:
        return None, f"{path} holds no metrics"
    return result, None


def result_mismatch(cell: Cell, result: dict) -> str | None:
    """Why ``result`` is not ``cell``'s (another cell's ``result.json`` copied here, a rehearsal's for a real
    cell or the reverse, or one missing a protocol the cell evaluates), or None."""
    owner = result.get("cell_id")
    if owner is not None and owner != cell.id:
        return (f"its result.json belongs to cell {owner}, not {cell.id} (copied from another run folder?); "
                "it is left out and a sweep retrains the cell")
    rehearsal = bool((result.get("cell") or {}).get("rehearsal"))
    if rehearsal != (cell.rehearsal is not None):  # a rehearsal is never a table's result, nor the reverse
        return (f"its result.json is {'a rehearsal' if rehearsal else 'not a rehearsal'}'s, and the cell "
                f"{'is not a rehearsal' if rehearsal else 'is one'} (copied from another run folder?): it is left out "
                "and a sweep retrains the cell")
    missing = [p for p in cell.eval.protocols or [] if not result["metrics"].get(p)]
    if missing:
        return f"its result.json holds no metrics for {', '.join(missing)}; a sweep re-runs the cell"
    return None


def code_version(result: dict | None) -> tuple[str | None, str | None]:
    """(commit, training-code fingerprint) that made ``result`` (None where not recorded: results
    written before the store kept the fingerprint)."""
    prov = (result or {}).get("provenance") or {}
    return (prov.get("git") or {}).get("commit"), prov.get("source_fingerprint")


def mark_mixed_code(infos: dict, current: str | None = None) -> list[str]:
    """Mark the done cells of one table made by other training code than the rest ``mixed-code``.

    ``infos``: {cell id: :func:`run_status` dict}. When the done cells carry more than one training-code
    fingerprint (``source_fingerprint``; ``None`` = not recorded), the version kept is the current
    code's (``current``, default :func:`source_fingerprint`) if any cell has it, else the one most cells
    have; the others become ``mixed-code`` (left out of the table's means; a plain sweep retrains them
    with the current code). Returns the ids marked."""
    done = {cid: i for cid, i in infos.items() if i["state"] == "done"}
    versions: dict = {}
    for cid, i in done.items():
        versions.setdefault(i.get("code"), []).append(cid)
    if len(versions) < 2:
        return []
    current = source_fingerprint() if current is None else current
    keep = current if current in versions else max(versions, key=lambda v: (len(versions[v]), v or ""))
    marked = []
    for version, ids in versions.items():
        if version == keep:
            continue
        for cid in ids:
            what = f"training code {version[:12]}" if version else "training code not recorded (a result from before)"
            done[cid].update(state="mixed-code", error=(
                f"made by other code than the rest of the suite ({what}, commit {(done[cid].get('commit') or '?')[:10]}; "
                f"the others: training code {(keep or 'not recorded')[:12]}): left out of the table; a plain sweep "
                "retrains it with the current code (or collect --pool-mixed-code pools it, marked)"))
            marked.append(cid)
    return marked


def run_folder_holding(path: str | Path) -> Path | None:
    """The store's run folder that ``path`` would be written into (a folder above it holding a cell's
    ``config.yaml`` with its markers or checkpoints), or None: outputs of ``export`` and ``evaluate`` never
    land there, where they would replace a cell's own files."""
    marks = (DONE_FILE, RESULT_FILE, RUNNING_FILE, FAILED_FILE, INTERRUPTED_FILE, "best.pt", "last.pt")
    for d in Path(path).resolve().parents:
        if (d / "config.yaml").is_file() and any((d / m).exists() for m in marks):
            return d
    return None


def cell_state(run_dir: str | Path) -> str:
    """What the markers say: ``done`` | ``corrupt`` | ``failed`` | ``running`` | ``interrupted`` |
    ``pending`` (module docstring; :func:`run_status` adds ``stale`` and stale ``running`` markers)."""
    d = Path(run_dir)
    if (d / DONE_FILE).exists():
        return "done" if read_result(d)[1] is None else "corrupt"
    if (d / FAILED_FILE).exists():
        return "failed"
    if (d / RUNNING_FILE).exists():
        return "running"
    if (d / INTERRUPTED_FILE).exists():
        return "interrupted"
    return "pending"


def result_fingerprint(result: dict | None) -> str | None:
    return ((result or {}).get("provenance") or {}).get("data_fingerprint")


def unidentified(cell: Cell) -> str | None:
    """Why ``cell`` cannot be identified, or None: a local weights folder it reads holds no model files (gone or
    moved), so its id (which holds the folder's content fingerprint) cannot be computed and a result made from
    that folder cannot be found."""
    from bench.weights import unreadable_folders

    gone = unreadable_folders(cell.matcher.name, cell.matcher.arguments)
    if not gone:
        return None
    return "; ".join(f"weights folder {folder} ({arg}) missing or holding no model files: cannot identify the cell "
                     "(its id holds the folder's content); put the folder back, or name where it lies now "
                     "(weights.<kind>=DIR)" for arg, folder in gone.items())


def run_status(cell: Cell, run_dir: str | Path, fingerprints: dict | None = None,
               check_lock: bool = True, anchor: bool = False) -> dict:
    """``{"state", "run_dir", "error"?, "data_fingerprint"?, "result_fingerprint"?}`` of ``cell`` in
    ``run_dir``: :func:`cell_state` plus ``stale`` (a done result made from other data), ``corrupt``
    with the path, ``interrupted`` for a ``running`` marker whose lock is free (its process died) and
    ``unidentified`` (a weights folder it reads is gone).
    ``anchor``: other cells start from its ``best.pt`` (an OAS baseline), so a done result whose ``best.pt`` is
    missing, fails its digest or is not the model its result was evaluated from (``best_sha256``) is ``corrupt`` too
    (``checkpoint_damaged``: retrained from scratch)."""
    d = Path(run_dir)
    if gone := unidentified(cell):
        return {"state": "unidentified", "run_dir": str(d), "error": gone}
    if d.exists() and not d.is_dir():
        return {"state": "blocked", "run_dir": str(d),
                "error": f"{d} is a file where the cell's run folder belongs: move it away (or delete it) and sweep "
                         "again; the other cells are not held up"}
    state = cell_state(d)
    info = {"state": state, "run_dir": str(d)}
    if state != "done" and d.name == cell.id and (link := link_out_of_root(d, d.parent.parent)):
        return {"state": "blocked", "run_dir": str(d), "error": link}
    if state == "corrupt":
        info["error"] = read_result(d)[1] + "; a sweep re-runs the cell"
    elif state == "done":
        result = read_result(d)[0]
        recorded = result_fingerprint(result)
        current = cell_fingerprint(cell, fingerprints)
        info["commit"], info["code"] = code_version(result)
        mismatch = result_mismatch(cell, result)
        if mismatch:
            info.update(state="corrupt", error=mismatch)
        elif current is None and recorded is not None:
            info["unverified"] = (f"data of {cell.dataset.data_root} not found: its data fingerprint "
                                  "could not be compared (unverified)")
        elif current != recorded:
            info.update(state="stale", data_fingerprint=current, result_fingerprint=recorded,
                        error=f"made from other data: result data fingerprint {recorded}, the data now "
                              f"{current}; a sweep retrains it (the old result stays until then)")
        if info["state"] == "done" and anchor and (problem := result_checkpoint_problem(d / "best.pt", result)):
            info.update(state="corrupt", checkpoint_damaged=True, error=(
                f"{problem}: the cells that start from it (OAS) cannot read it; a sweep retrains it from scratch "
                "(its result stays until the new one is complete)"))
        if info["state"] == "done" and d.name == cell.id and (left := _left_rerun(cell, d)):
            info["note"] = left
    elif state == "interrupted":
        try:
            why = json.loads((d / INTERRUPTED_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            why = {}
        info["interrupted"] = True
        info["error"] = interrupted_message(why, d)
    elif state == "running" and check_lock and d.name == cell.id:
        try:
            held = lock_is_held(lock_path(cell, d.parent.parent))
        except ValueError:
            held = False
        holder = None if held else running_process(d)  # a lock file removed (rm -rf .locks) under a live process
        if holder:
            info["error"] = f"trained now by {holder} (its lock file {lock_path(cell, d.parent.parent)} is gone)"
        elif not held:
            info.update(state="interrupted", stale_marker=True, interrupted=True,
                        error="its `running` marker was left by a process that is gone; a sweep takes it over")
    return info


def _left_rerun(cell: Cell, final: Path) -> str | None:
    """What ``status`` says of a ``--force`` re-run of the done cell in ``final`` that was cut short (its staging
    folder is there and the cell's lock is free), or None."""
    staged = sorted(p for p in final.parent.glob(f"{final.name}{STAGING_SUFFIX}-*") if p.is_dir())
    if not staged:
        return None
    try:
        if lock_is_held(lock_path(cell, final.parent.parent)):
            return None  # being re-run now
    except ValueError:
        pass
    return (f"a --force re-run of it was cut short: {', '.join(p.name for p in staged)} (the result above stays; "
            "the next --force sweep resumes the re-run, or delete the folder to drop it)")


def interrupted_message(why: dict, run_dir: Path) -> str:
    """What ``status`` says of an interrupted cell (``why``: its ``interrupted`` marker): how it stopped and how a
    plain sweep goes on: from ``last.pt`` when there is one, else from scratch (a second Ctrl-C in the first step
    stops at once, before any checkpoint)."""
    signal, step = why.get("signal"), why.get("step")
    how = (f"stopped by {signal or 'a clean stop'} at step {step}" if step is not None else
           f"stopped at once by {'a second Ctrl-C' if signal == 'SIGINT' else signal or 'a stop'}")
    if any((run_dir / name).exists() for name in ("last.pt", "last.prev.pt")):
        return f"{how}; a plain sweep resumes it from last.pt"
    return f"{how}, before any checkpoint was saved (no last.pt); a plain sweep trains it from scratch"


def load_result(run_dir: str | Path) -> dict | None:
    """The result of a done run, or None (also when its result.json is missing or does not parse)."""
    d = Path(run_dir)
    if not (d / DONE_FILE).exists():
        return None
    return read_result(d)[0]


def failure_message(run_dir: str | Path) -> str | None:
    f = Path(run_dir) / FAILED_FILE
    return f.read_text().strip() if f.exists() else None


# ----------------------------------------------------------------------------- running

def default_tracker_factory(cell: Cell, run_dir: Path):
    from bench.harness.tracking import WandbTracker

    return WandbTracker(cell, run_dir)


def _task_rank() -> int:
    """This process's rank in a multi-task job (torch's RANK, else SLURM's task id), 0 otherwise."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))


def _job_token() -> str:
    """Names this process's staging folder: the SLURM job (shared by its tasks and kept across a
    requeue), torchrun's run id (shared by its ranks), else host and pid."""
    if os.environ.get("SLURM_JOB_ID"):
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        return f"slurm{os.environ['SLURM_JOB_ID']}" + (f"_{task}" if task else "")
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        return "torchrun" + re.sub(r"[^A-Za-z0-9._-]", "_", os.environ["TORCHELASTIC_RUN_ID"])
    return f"{re.sub(r'[^A-Za-z0-9._-]', '_', socket.gethostname())}-{os.getpid()}"


def _staging_dir(final: Path, adopt: bool) -> Path:
    """This process's staging folder for replacing the complete result in ``final``. With ``adopt``
    (the cell's lock is held, so other staging folders belong to processes that are gone) the newest
    one that left a checkpoint is taken over, so an interrupted re-run resumes; the others are removed."""
    mine = final.with_name(f"{final.name}{STAGING_SUFFIX}-{_job_token()}")
    if not adopt:
        return mine
    others = sorted((p for p in final.parent.glob(f"{final.name}{STAGING_SUFFIX}*")
                     if p != mine and p.is_dir() and not p.is_symlink()),
                    key=lambda p: p.stat().st_mtime)
    resumable = [p for p in others if (p / "last.pt").exists() or (p / "last.prev.pt").exists()]
    if resumable and not mine.exists():
        os.replace(resumable[-1], mine)
        log.info("resuming the re-run of %s from %s", final.name, resumable[-1])
    for p in others:
        if p.exists():
            shutil.rmtree(p, ignore_errors=True)
    return mine


def _repair_swap(final: Path) -> None:
    """Finish a swap cut short between its two renames (the lock is held): a complete staging folder
    becomes the result, else the previous result (``<id>.old``) is put back."""
    old = final.with_name(final.name + OLD_SUFFIX)
    if not final.exists():
        complete = [p for p in final.parent.glob(f"{final.name}{STAGING_SUFFIX}*") if cell_state(p) == "done"]
        if complete:
            os.replace(complete[0], final)
        elif old.exists():
            os.replace(old, final)
        else:
            return
        log.warning("repaired an interrupted swap of %s", final)
    if old.exists() and cell_state(final) == "done":
        shutil.rmtree(old, ignore_errors=True)


def _swap_in(work: Path, final: Path) -> None:
    """Replace the complete result in ``final`` by the complete one in ``work``; at every instant one of
    them is whole on disk (``<id>.old`` between the two renames, see :func:`_repair_swap`)."""
    if cell_state(work) != "done":
        raise RuntimeError(f"refusing to replace {final} by the incomplete run {work}")
    old = final.with_name(final.name + OLD_SUFFIX)
    if old.is_file() or old.is_symlink():  # a file where the swap parks the previous result
        old.unlink()
    shutil.rmtree(old, ignore_errors=True)
    os.replace(final, old)
    fault_point("store.swap")
    os.replace(work, final)
    shutil.rmtree(old, ignore_errors=True)


def _forced(run_dir: Path, options: RunOptions) -> bool:
    """Whether ``options.force`` replaces the done result in ``run_dir``: always, or (``force_before``, a
    sweep's start time) only a result finished before then, so concurrent forced sweeps train each cell once."""
    if not options.force:
        return False
    if options.force_before is None:
        return True
    try:
        return (run_dir / DONE_FILE).stat().st_mtime < options.force_before
    except FileNotFoundError:
        return True


def _other_code(status: dict) -> bool:
    """A done result made by other training code than this process runs (``mixed-code`` in its table)."""
    return status["state"] == "done" and status.get("code") != source_fingerprint()


def cannot_create(what: str, path: Path, root: Path, e: OSError, search: Path) -> StoreError:
    """The StoreError of ``path`` (``what``) that could not be made: the file in the way (looked for from
    ``search`` up), else the results folder that cannot be written."""
    blocker = next((p for p in [search, *search.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        return StoreError(f"cannot create {what} {path}: {blocker} is a file where the store's folder belongs "
                          f"({e.strerror}); move it away or choose another results folder (--root)")
    return StoreError(f"cannot create {what} {path} in the results folder {root} ({e.strerror}); choose a "
                      "writable results folder (--root)")


@dataclass(frozen=True)
class _Job:
    """One call of :func:`run_cell_in_store`: the cell, where it goes and how."""

    cell: Cell
    root: Path
    options: RunOptions
    tracker_factory: Callable | None
    train_fn: Callable
    raise_errors: bool
    reuse_other_suites: bool
    fingerprints: dict

    @property
    def final(self) -> Path:
        return run_dir_for(self.cell, self.root)

    def anchor_checkpoint(self) -> Path | None:
        return _anchor_checkpoint(self.cell, self.root, self.reuse_other_suites)


def _anchor_checkpoint(cell: Cell, root: Path, reuse_other_suites: bool) -> Path | None:
    """``best.pt`` of the baseline an OAS cell depends on; an error when that cell is not done (for the
    data this cell reads: a stale baseline is not an anchor). A released anchor (the suite's
    ``anchor_checkpoint:``) is used as is."""
    if cell.anchor_checkpoint:
        return Path(cell.anchor_checkpoint.path)
    if not cell.depends_on:
        return None
    dep = replace(cell, id=cell.depends_on[0])
    dep_dir = locate_run(dep, root, reuse_other_suites)
    info = run_status(dep, dep_dir, anchor=True)  # its best.pt whole: the digest checked before it is read
    if info["state"] != "done":
        why = f": {info['error']}" if info.get("error") else ""
        raise RuntimeError(f"anchor cell {dep.id} is not done ({info['state']} in {dep_dir}{why}); "
                           "run it first (topological order)")
    return dep_dir / "best.pt"


def anchor_problem(cell: Cell, root: str | Path, reuse_other_suites: bool = True) -> str | None:
    """Why ``cell`` cannot start now because the baseline it starts from (an OAS cell's dependency) is not done,
    or None: :func:`_anchor_checkpoint`'s check, for a command to refuse before it creates the cell's folder."""
    try:
        _anchor_checkpoint(cell, Path(root), reuse_other_suites)
    except RuntimeError as e:
        return str(e).replace("; run it first (topological order)", "")
    return None


def _done(run_dir: Path) -> dict:
    return {"state": "done", "run_dir": str(run_dir), "result": load_result(run_dir), "skipped": True}


def run_cell_in_store(cell: Cell, root: str | Path = DEFAULT_ROOT, options: RunOptions = PLAIN_RUN, *,
                      tracker_factory: Callable | None = default_tracker_factory, train_fn: Callable | None = None,
                      raise_errors: bool = True, reuse_other_suites: bool = True) -> dict:
    """Train ``cell`` into the store unless it is done; return ``{"state", "run_dir", "result"}``.

    ``train_fn(cell, run_dir, tracker=, anchor_checkpoint=)`` defaults to ``bench.train.run_cell``; the run
    folder is written by ``bench.run_folder.train_in_folder``, the one writer. OAS cells get
    ``anchor_checkpoint = <baseline run dir>/best.pt`` (the baseline must be done). The cell's lock is
    held while it trains: a cell another process holds is skipped (``{"state": "locked"}``) or, with
    ``options.wait_lock``, waited for. A ``stale`` or ``corrupt`` result is retrained; ``options.force``
    retrains a done one too (only if finished before ``force_before`` when given), and
    ``retrain_other_code`` one made by other training code (a sweep running a ``mixed-code`` cell).
    A SIGTERM / Ctrl-C during training saves ``last.pt`` and leaves the cell ``interrupted`` (the result
    then carries ``"signal"``). ``options.allow_code_change`` lets the trainer resume a checkpoint written
    by other code (both commits are recorded). On an exception: ``failed`` + ``traceback.txt`` are
    written, then it is re-raised (``raise_errors``) or returned as ``{"state": "failed", "error": ...}``.
    """
    root, fps = Path(root), {}
    final = locate_run(cell, root, reuse_other_suites, fps)
    status = run_status(cell, final, fps, anchor=cell.id in options.anchors)
    if (options.retrain_other_code and _other_code(status)) or status.get("checkpoint_damaged"):
        options = replace(options, force=True, force_before=options.force_before or time.time())
    if status["state"] == "done" and not _forced(final, options):
        return _done(final)
    if status["state"] != "blocked" and (link := link_out_of_root(final, root)):  # a forced re-run of a done cell
        status = {"state": "blocked", "error": link}
    if status["state"] == "blocked":
        if raise_errors:
            raise StoreError(status["error"])
        log.error("cell %s: %s", cell.id, status["error"])
        return {"state": "blocked", "run_dir": str(final), "result": None, "error": status["error"]}
    if train_fn is None:
        from bench.train import run_cell as train_fn  # lazy: the store is used without torch too
    from bench.train import cell_threads

    job = _Job(cell, root, options, tracker_factory, train_fn, raise_errors, reuse_other_suites, fps)
    with cell_threads(cell):  # the same torch thread count whichever executor runs the cell
        return _beside_rank_0(job) if _task_rank() != 0 else _run_under_lock(job)


def _beside_rank_0(job: _Job) -> dict:
    """A multi-task cell's other ranks train alongside rank 0, which alone writes the run folder."""
    work = _staging_dir(job.final, adopt=False) if cell_state(job.final) == "done" else job.final
    work.mkdir(parents=True, exist_ok=True)
    body = job.train_fn(job.cell, work, tracker=None, anchor_checkpoint=job.anchor_checkpoint(),
                        **({"allow_code_change": True} if job.options.allow_code_change else {}))
    state = "done" if body.get("status", "done") == "done" else "interrupted"
    return {"state": state, "run_dir": str(work), "result": body, "rank": _task_rank()}


def _run_under_lock(job: _Job) -> dict:
    lock = CellLock(lock_path(job.cell, job.root))
    if link := link_out_of_root(lock.path.parent, job.root):
        raise StoreError(f"cannot lock cell {job.cell.id}: {link}")
    try:
        got = lock.acquire(wait=job.options.wait_lock)
    except OSError as e:  # e.g. a path under a regular file, a read-only mount
        raise cannot_create("the cell's lock file", lock.path, job.root, e, lock.path.parent) from e
    if not got:
        log.info("cell %s is being trained by another process (%s): skipped", job.cell.id, lock.path)
        return {"state": "locked", "run_dir": str(job.final), "result": None, "skipped": True}
    try:
        return _run_locked(job)
    finally:
        lock.release()


def _live_holder(final: Path) -> str | None:
    """The live process of this host (``running`` marker: pid and kernel start time) training the cell of
    ``final`` in it or in one of its staging folders, or None."""
    for folder in [final, *final.parent.glob(f"{final.name}{STAGING_SUFFIX}-*")]:
        if holder := running_process(folder):
            return holder
    return None


def _run_locked(job: _Job) -> dict:
    """The lock is held: repair a swap cut short, look at the state again (another process may have finished
    the cell), train in the run folder (or, replacing a complete result, in a staging folder swapped in
    when complete)."""
    final = job.final
    if holder := _live_holder(final):  # the lock file was removed under a process that still trains the cell
        log.info("cell %s is being trained by %s (its lock file was removed): skipped", job.cell.id, holder)
        return {"state": "locked", "run_dir": str(final), "result": None, "skipped": True, "holder": holder}
    _repair_swap(final)
    status = run_status(job.cell, final, job.fingerprints, check_lock=False, anchor=job.cell.id in job.options.anchors)
    if status["state"] == "done" and not _forced(final, job.options):
        return _done(final)
    # a complete result stays until replaced by another (one whose best.pt is damaged: its metrics are whole)
    complete = status["state"] in ("done", "stale") or status.get("checkpoint_damaged", False)
    work = _staging_dir(final, adopt=True) if complete else final
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # e.g. a path under a regular file, a read-only mount
        raise cannot_create("the run folder", work, job.root, e, work) from e
    out = train_in_folder(job.cell, work, job.train_fn, cell_fingerprint(job.cell, job.fingerprints),
                          options=job.options, anchor_checkpoint=job.anchor_checkpoint,
                          tracker_factory=job.tracker_factory, raise_errors=job.raise_errors)
    if out["state"] == "done":
        if work != final:  # a complete result replaced by another complete one
            _swap_in(work, final)
        out.update(run_dir=str(final), skipped=False)
    return out
