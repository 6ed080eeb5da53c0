"""Named sweeps: a sweep remembers its suite, overrides and result store, so later commands find its cells.

``python -m bench sweep SUITE [key=value …] [--sweep NAME]`` records, before anything runs,
``<root>/<suite>/sweeps/<name>.yaml`` (Hydra's ``overrides.yaml`` is the model: the overrides as typed,
in order), with the suite as given and its file, the store, the working folder and when it was made and
last run. ``status``, ``collect`` and ``run --cell`` then take the sweep's overrides: ``--sweep NAME``, or
by default (no overrides on their command line) the latest sweep of the suite in that store, saying which
(:func:`choose`); ``sweep SUITE --sweep NAME`` runs a recorded sweep again. ``python -m bench list`` shows
the suites, their sweeps and each sweep's cells by state.

A sweep without ``--sweep`` reuses the name of a sweep of the same suite file with the same overrides,
else gets the time it was made (``2026-12-04_17-03-35``, as Hydra names its runs).

``sweeps`` never collides with a run folder: run folders are named by cell id, 12 hex digits
(``bench.spec.cell_id``), and ``sweeps`` is not hex. Every reader of the store walks cells, not folders,
or skips it (``bench.harness.migrate``).
"""

from __future__ import annotations

import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench import yamlsafe
from bench.config_files import ConfigError, read_yaml
from bench.run_folder import write_text
from bench.spec import PLAIN_NAME_RULE, is_plain_name
from bench.values import shown

SWEEPS_DIR = "sweeps"  # <root>/<suite>/sweeps/<name>.yaml
assert not re.fullmatch(r"[0-9a-f]+", SWEEPS_DIR)  # never a cell id (hex): no run folder can be named so


@dataclass(frozen=True)
class SweepRecord:
    """One recorded sweep (``<root>/<suite>/sweeps/<name>.yaml``)."""

    name: str
    suite: str  # as given on the command line (a name in bench/suites/ or a path)
    suite_name: str  # the suite's ``name:`` (its folder in the store)
    suite_file: str  # the suite file, absolute
    overrides: tuple[str, ...] = ()
    root: str = ""
    cwd: str = ""  # where relative paths in the overrides were typed
    created: str = ""
    updated: str = ""
    updated_s: float = 0.0  # orders the sweeps (the latest is the default)
    runs: int = 1
    path: Path | None = field(default=None, compare=False)

    def to_dict(self) -> dict:
        return {"name": self.name, "suite": self.suite, "suite_name": self.suite_name, "suite_file": self.suite_file,
                "overrides": list(self.overrides), "root": self.root, "cwd": self.cwd, "created": self.created,
                "updated": self.updated, "updated_s": self.updated_s, "runs": self.runs}

    @classmethod
    def from_dict(cls, d: dict, path: Path | None = None) -> SweepRecord:
        return cls(name=str(d["name"]), suite=str(d["suite"]), suite_name=str(d["suite_name"]),
                   suite_file=str(d.get("suite_file") or d["suite"]), overrides=tuple(map(str, d.get("overrides") or ())),
                   root=str(d.get("root") or ""), cwd=str(d.get("cwd") or ""), created=str(d.get("created") or ""),
                   updated=str(d.get("updated") or ""), updated_s=float(d.get("updated_s") or 0.0),
                   runs=int(d.get("runs") or 1), path=path)

    @property
    def suite_arg(self) -> str:
        """The suite to load: its file where it still exists, else the suite as given."""
        return self.suite_file if Path(self.suite_file).is_file() else self.suite

    def describe(self) -> str:
        shown = " ".join(self.overrides) or "(no overrides)"
        return f"sweep {self.name} of suite {self.suite_name}: {shown}"


def sweeps_dir(root: str | Path, suite_name: str) -> Path:
    return Path(root) / suite_name / SWEEPS_DIR


def suite_name_of(suite_arg: str) -> str:
    """The ``name:`` of the suite file ``suite_arg`` names (read without overrides or validation), else the
    argument's stem."""
    from bench.harness.config import suite_path

    path = suite_path(suite_arg)
    try:
        raw = read_yaml(path) if path.is_file() else None
    except ConfigError:
        raw = None
    name = raw.get("name") if isinstance(raw, dict) else None
    return str(name) if isinstance(name, str) and is_plain_name(name) else Path(str(suite_arg)).stem


def list_sweeps(root: str | Path, suite_name: str) -> list[SweepRecord]:
    """The sweeps recorded for ``suite_name`` in ``root``, oldest run first (an unreadable record is skipped
    with a warning on stderr)."""
    folder = sweeps_dir(root, suite_name)
    out = []
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        try:
            out.append(SweepRecord.from_dict(yamlsafe.load(path.read_text()), path))
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as e:
            print(f"warning: {path} is not a sweep record ({type(e).__name__}: {e}); skipped", file=sys.stderr)
    return sorted(out, key=lambda r: (r.updated_s, r.name))


def read_sweep(root: str | Path, suite_name: str, name: str) -> SweepRecord:
    """Sweep ``name`` of ``suite_name`` in ``root``; ConfigError naming the sweeps there otherwise."""
    for record in list_sweeps(root, suite_name):
        if record.name == name:
            return record
    known = ", ".join(r.name for r in list_sweeps(root, suite_name)) or "none"
    raise ConfigError(f"--sweep {name}: no such sweep of suite {suite_name} in {root} (its sweeps: {known}); "
                      f"`python -m bench list --root {shlex.quote(str(root))}` lists them, or run `python -m bench sweep "
                      f"{suite_name} … --sweep {name}` to make it")


def _stamp() -> tuple[str, float]:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)), now


def record_sweep(root: str | Path, suite_arg: str, suite_name: str, suite_file: str | Path,
                 overrides: list[str] | tuple[str, ...], name: str | None = None) -> SweepRecord:
    """Record (or update: ``runs`` + 1, ``updated``) the sweep ``name`` of this suite and overrides in ``root``.
    Without ``name``: the sweep of the same suite file and overrides when there is one, else a new one named
    by the time. A ``name`` recorded with other overrides is a ConfigError (run it by name without
    overrides, or give another name)."""
    suite_file = str(Path(suite_file).resolve())
    overrides = tuple(overrides)
    existing = list_sweeps(root, suite_name)
    same = [r for r in existing if r.suite_file == suite_file and r.overrides == overrides]
    previous = (same[-1] if same else None) if name is None else check_sweep_name(root, suite_name, name, overrides)
    text, now = _stamp()
    if previous is not None:
        record = SweepRecord(**{**previous.to_dict(), "updated": text, "updated_s": now, "runs": previous.runs + 1,
                                "root": str(Path(root).resolve()), "cwd": str(Path.cwd())},
                             path=previous.path)
    else:
        taken = {r.name for r in existing}
        new = name or time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(now))
        base, k = new, 1
        while new in taken:
            k += 1
            new = f"{base}.{k}"
        record = SweepRecord(name=new, suite=str(suite_arg), suite_name=suite_name, suite_file=suite_file,
                             overrides=overrides, root=str(Path(root).resolve()), cwd=str(Path.cwd()), created=text,
                             updated=text, updated_s=now, runs=1)
    path = sweeps_dir(root, suite_name) / f"{record.name}.yaml"
    header = ("# A sweep of python -m bench (bench/harness/named_sweeps.py): `status`, `collect` and `run --cell` "
              "use these overrides\n# (--sweep NAME; the latest by default); `sweep SUITE --sweep NAME` runs it again.\n")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, header + yaml.safe_dump(record.to_dict(), sort_keys=False, allow_unicode=True))
    except OSError as e:  # a file where the store's folder belongs, a read-only store: named as the store names it
        from bench.harness.store import cannot_create

        raise cannot_create("the sweep record", path, Path(root), e, path.parent) from e
    return SweepRecord(**record.to_dict(), path=path)


def check_sweep_name(root: str | Path, suite_name: str, name: str | None, overrides) -> SweepRecord | None:
    """The sweep ``name`` already recorded (None: a new one); ConfigError when it was recorded with other
    overrides (a sweep's cells are its overrides': run it by name without overrides, or give another name)."""
    if name is None:
        return None
    if not is_plain_name(name):
        raise ConfigError(f"--sweep {shown(name)}: a sweep name is a file name in {sweeps_dir(root, suite_name)}: "
                          f"use {PLAIN_NAME_RULE}")
    previous = next((r for r in list_sweeps(root, suite_name) if r.name == name), None)
    if previous is not None and previous.overrides != tuple(overrides):
        raise ConfigError(f"--sweep {name}: recorded with the overrides {' '.join(previous.overrides) or '(none)'}, "
                          f"not {' '.join(overrides) or '(none)'}; run it again with `--sweep {name}` and no "
                          "overrides, or give the new overrides another --sweep name")
    return previous


@dataclass(frozen=True)
class Choice:
    """What a command runs on: the suite to load, its overrides, and the sweep they came from (or None)."""

    suite: str
    overrides: list[str]
    sweep: SweepRecord | None
    note: str | None  # the line saying which sweep was taken (stderr), or None


def choose(suite_arg: str, overrides: list[str], root: str | Path, sweep: str | None,
           latest_by_default: bool = True) -> Choice:
    """The suite and overrides a command works on: ``--sweep NAME`` (its recorded overrides, then any given
    here), else the given overrides as they are, else (``latest_by_default``, no overrides given) the latest
    sweep of the suite in ``root``, else the suite as declared."""
    name = suite_name_of(suite_arg)
    if sweep is not None:
        record = read_sweep(root, name, sweep)
        extra = f" + {' '.join(overrides)}" if overrides else ""
        return Choice(record.suite_arg, [*record.overrides, *overrides], record,
                      f"{record.describe()}{extra} (last run {record.updated})")
    if overrides or not latest_by_default:
        return Choice(suite_arg, list(overrides), None, None)
    every = list_sweeps(root, name)
    recorded = [r for r in every if _of_this_suite(r, suite_arg)]
    if not recorded:
        note = (f"suite {name}: the sweeps recorded under that name in {root} ran other suite files "
                f"({', '.join(sorted({r.suite_file for r in every}))}); the suite {suite_arg} as declared"
                if every else None)
        return Choice(suite_arg, [], None, note)
    record = recorded[-1]
    others = f"; others: {', '.join(r.name for r in recorded[:-1])} (--sweep NAME)" if len(recorded) > 1 else ""
    return Choice(record.suite_arg, list(record.overrides), record,
                  f"{record.describe()} (the latest, last run {record.updated}{others})")


def _of_this_suite(record: SweepRecord, suite_arg: str) -> bool:
    """Whether ``record`` ran the suite file ``suite_arg`` names: the same file, or one of the same content (the
    checkout moved); a record whose file is gone counts when it was named the same way. Another file that sets
    ``name:`` (``t.yaml name=oss``) is another suite: taking its sweep made ``collect oss`` write an oss table of it."""
    from bench.harness.config import suite_path

    own, ran = suite_path(suite_arg), Path(record.suite_file)
    if not own.is_file():
        return True  # a name only the records know: their suite
    if not ran.exists():
        return record.suite == str(suite_arg)
    try:
        return ran.resolve() == own.resolve() or ran.read_bytes() == own.read_bytes()
    except OSError:
        return False


def sweep_cells(record: SweepRecord):
    """The cells of a recorded sweep (its suite loaded with its overrides), dependencies first."""
    from bench.harness.cells import expand, topological_order
    from bench.harness.config import load_suite

    return topological_order(expand(load_suite(record.suite_arg, list(record.overrides))))


def state_counts(record: SweepRecord, root: str | Path, query_slurm: bool = True) -> dict[str, int]:
    """{state: cells} of a recorded sweep in ``root`` (``bench.harness.sweep.cell_states``)."""
    from collections import Counter

    from bench.harness.sweep import cell_states

    states = cell_states(sweep_cells(record), Path(root), query_slurm=query_slurm)
    return dict(sorted(Counter(s["state"] for s in states.values()).items()))


def sweeps_with_done_cells(root: str | Path, suite_name: str) -> list[tuple[SweepRecord, int]]:
    """(sweep, its done cells) of every recorded sweep of ``suite_name`` in ``root`` with at least one done cell
    (a sweep that no longer loads is left out)."""
    out = []
    for record in list_sweeps(root, suite_name):
        try:
            done = state_counts(record, root, query_slurm=False).get("done", 0)
        except (ConfigError, OSError, ValueError):
            continue
        if done:
            out.append((record, done))
    return out


def describe_counts(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    return f"{total} cells: " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none")
