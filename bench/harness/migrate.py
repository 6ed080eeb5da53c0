"""``python -m bench migrate --root DIR``: move the run folders of a result store made before a change of
cell ids to the ids the code gives them now, losing no result.

A cell's id is the hash of what decides its result (``bench.spec.result_key``); a change of that definition
(e.g. the matchers ``sgr`` and ``saf``, whose declared constructor defaults entered their ids after the
store of main 84bfe06 was written: ``tests/golden/changed_ids.json``) leaves their folders under the old id,
where no suite finds them. For each run folder ``<root>/<suite>/<id>/`` this reads the cell it recorded
(``config.yaml``, else ``result.json``), resolves it with the code now and, where the id differs, moves the
folder to the new id and rewrites the ids its files record (``config.yaml``, ``result.json``, ``ranks.npz``)
— an OAS cell's dependency through the same map, so its id follows its baseline's. A folder already at its id
is left alone, a move that would replace another folder or touch a cell another process trains is refused
and named. Every move is printed; ``--dry-run`` prints them and changes nothing. A move cut short (killed
between the rename and the rewrite) is finished by the next run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import yaml

from bench import yamlsafe
from bench.harness.cells import describe
from bench.harness.named_sweeps import SWEEPS_DIR
from bench.harness.store import (
    LOCKS_DIR,
    OLD_SUFFIX,
    RESULT_FILE,
    STAGING_SUFFIX,
    cell_state,
    lock_is_held,
    lock_path,
    write_json_atomic,
    write_text,
)
from bench.run_folder import running_process
from bench.spec import Cell, cell_id, is_plain_name


@dataclass(frozen=True)
class Move:
    """One run folder and the id its recorded cell has now."""

    folder: Path
    cell: Cell  # as recorded, its dependencies mapped to their new ids, and its new id
    old_id: str

    @property
    def target(self) -> Path:
        return self.folder.parent / self.cell.id

    def describe(self) -> str:
        return (f"{self.folder.parent.name}/{self.folder.name} -> {self.folder.parent.name}/{self.cell.id} "
                f"({describe(self.cell)}, {cell_state(self.folder)})")


def recorded_cell(folder: Path) -> Cell | None:
    """The cell a run folder recorded (``config.yaml``, else its ``result.json``); None for anything else."""
    try:
        if (folder / "config.yaml").is_file():
            return Cell.from_dict(yamlsafe.load((folder / "config.yaml").read_text()))
        return Cell.from_dict(json.loads((folder / RESULT_FILE).read_text())["cell"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return None


def _suite_folders(suite: Path) -> list[Path]:
    """The run folders ``<suite>/<id>`` (no staging or parked folders, no recorded sweeps)."""
    if not suite.is_dir():
        return []
    return [p for p in sorted(suite.iterdir()) if p.is_dir() and is_plain_name(p.name) and p.name != SWEEPS_DIR
            and STAGING_SUFFIX not in p.name and not p.name.endswith(OLD_SUFFIX)]


def _run_folders(root: Path) -> list[Path]:
    """``<root>/<suite>/<id>`` folders (no locks, job logs, summaries, staging or parked folders)."""
    suites = sorted(p for p in root.iterdir() if p.is_dir() and is_plain_name(p.name) and p.name != LOCKS_DIR)
    return [f for suite in suites for f in _suite_folders(suite)]


def plan(root: str | Path, folders: list[Path] | None = None) -> tuple[list[Move], list[str]]:
    """(the moves, what cannot be moved and why) for the store ``root`` (or only ``folders`` of it): cells
    without dependencies first, then each cell whose dependencies are mapped (their new ids enter its own)."""
    folders = _run_folders(Path(root)) if folders is None else folders
    recorded = {f: c for f in folders if (c := recorded_cell(f)) is not None}
    new_ids: dict[str, str] = {}
    moves, problems, pending = [], [], dict(recorded)
    while pending:
        ready = {f: c for f, c in pending.items() if all(d in new_ids or d not in _ids(recorded)
                                                         for d in c.depends_on or [])}
        if not ready:  # a dependency among the left ones that never resolves: leave them as they are
            problems += [f"{f}: its dependencies {c.depends_on} could not be mapped; left as it is"
                         for f, c in pending.items()]
            break
        for folder, cell in ready.items():
            del pending[folder]
            move, problem = _move(folder, cell, new_ids)
            if problem:
                problems.append(problem)
            elif move is not None:
                moves.append(move)
    return moves, problems


def _ids(recorded: dict[Path, Cell]) -> set[str]:
    return {c.id for c in recorded.values()}


def _move(folder: Path, cell: Cell, new_ids: dict[str, str]) -> tuple[Move | None, str | None]:
    """The move of one folder (None: already at its id), or why not."""
    mapped = replace(cell, depends_on=[new_ids.get(d, d) for d in cell.depends_on or []] if cell.depends_on
                     is not None else None)
    try:
        new = cell_id(mapped)
    except (KeyError, TypeError, ValueError) as e:
        return None, f"{folder}: its recorded cell does not resolve with this code ({e}); left as it is"
    new_ids[cell.id or folder.name] = new
    if folder.name == new and cell.id == new:
        return None, None
    if folder.name not in (cell.id, new):  # (named new but recording the old id: a move cut short, finished now)
        return None, f"{folder}: its config.yaml names cell {cell.id}, not the folder's; left as it is"
    move = Move(folder, replace(mapped, id=new), old_id=cell.id or folder.name)
    if folder.name != new and move.target.exists():
        return None, f"{folder}: its cell's id now is {new}, but {move.target} exists already; left as it is"
    for staged in folder.parent.glob(f"{folder.name}{STAGING_SUFFIX}*"):
        return None, f"{folder}: a re-run is staged in {staged}; finish it (a sweep) or remove it, then migrate"
    return move, None


def apply(move: Move, root: Path) -> None:
    """Move the folder (if not moved yet) and rewrite the ids its files record. Refused while another
    process holds either id's lock."""
    for cid in {move.old_id, move.cell.id}:
        if lock_is_held(lock_path(replace(move.cell, id=cid, suite=move.folder.parent.name), root)):
            raise RuntimeError(f"{move.folder}: cell {cid} is being trained by another process; migrate when it ends")
    if holder := running_process(move.folder):  # its lock file was removed under a live process
        raise RuntimeError(f"{move.folder}: cell {move.old_id} is being trained by {holder}; migrate when it ends")
    if move.folder != move.target:
        os.replace(move.folder, move.target)
    _rewrite(move.target, move.cell)


def _rewrite(folder: Path, cell: Cell) -> None:
    if (folder / "config.yaml").is_file():
        write_text(folder / "config.yaml", yaml.safe_dump(cell.to_dict(), sort_keys=False))
    if (folder / RESULT_FILE).is_file():
        result = json.loads((folder / RESULT_FILE).read_text())
        result.update(cell_id=cell.id, cell={**result.get("cell", {}), "id": cell.id,
                                              **({"depends_on": cell.depends_on} if cell.depends_on is not None else {})})
        write_json_atomic(folder / RESULT_FILE, result)
    ranks = folder / "ranks.npz"
    if ranks.is_file():
        with np.load(ranks) as z:
            arrays = dict(z)
        if "cell_id" in arrays:
            arrays["cell_id"] = np.array(cell.id)
            tmp = ranks.with_name("ranks.migrating.npz")
            np.savez_compressed(tmp, **arrays)
            os.replace(tmp, ranks)


def waiting_moves(cells: list[Cell], root: str | Path) -> list[Move]:
    """The moves that would bring results of ``cells`` made before a change of ids to their ids now: folders of
    the cells' suites that hold none of ``cells`` but whose recorded cell resolves to one of them (what
    ``status`` points out; only those folders are read)."""
    ids = {c.id for c in cells}
    folders = [f for suite in sorted({c.suite for c in cells if c.suite})
               for f in _suite_folders(Path(root) / suite) if f.name not in ids]
    return [m for m in plan(root, folders)[0] if m.cell.id in ids and m.folder.name != m.cell.id]


def migrate(root: str | Path, dry_run: bool = False, say=print) -> list[Move]:
    """Plan and apply the moves of ``root``, saying each; returns the moves made (planned, ``dry_run``)."""
    root = Path(root)
    moves, problems = plan(root)
    for move in moves:
        say(("would move " if dry_run else "moved ") + move.describe())
        if not dry_run:
            apply(move, root)
    for problem in problems:
        say(f"not moved: {problem}")
    if not moves:
        say(f"{root}: every run folder is at its cell's id; nothing to move")
    return moves
