"""The id of every cell of every suite in ``bench/suites/`` at both scales, held in ``tests/golden/cell_ids.json``.

A cell's id names its run folder in every result store: a change of any id orphans the results made
under it. This test fails on any id that differs from the recorded one, on a cell added or lost.

An intended change of ids is listed, id by id, in ``tests/golden/changed_ids.json`` (``from`` the recorded id
``to`` the new one, and why): under ``changed`` the same cell under a new id, with a migration that moves
results made before (``python -m bench migrate``); under ``replaced`` a cell that is now another one (another
model), whose old results are not its results and stay where they are. ``cell_ids.json`` stays as recorded,
so every id not listed there is held unchanged. Regenerate the file
only for a new suite (and say why in the commit message)::

    .venv/bin/python -m tests.test_golden_ids > tests/golden/cell_ids.json

The data roots are a fixed placeholder: ids do not depend on where the data lies (``cells.cell_id``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden" / "cell_ids.json"
CHANGED = Path(__file__).parent / "golden" / "changed_ids.json"
SUITES_DIR = Path(__file__).resolve().parents[1] / "bench" / "suites"
PLACEHOLDER_ROOT = "/nonexistent/data-root"


def current_ids() -> dict:
    """{suite: {scale: [[description, id], ...]}} for every suite file and each of both scales it has."""
    from bench.harness.cells import describe, expand
    from bench.harness.config import ConfigError, load_suite

    old = {k: os.environ.get(k) for k in ("DATA", "VOCAB")}
    os.environ["DATA"], os.environ["VOCAB"] = PLACEHOLDER_ROOT, PLACEHOLDER_ROOT
    try:
        out: dict = {}
        for path in sorted(SUITES_DIR.glob("*.yaml")):
            out[path.stem] = {}
            for scale in ("smoke", "full"):
                try:
                    suite = load_suite(path, [f"scale={scale}"])
                except ConfigError as e:  # a suite with one scale only (demo: smoke)
                    if "no entry for the chosen scale" not in str(e):
                        raise
                    continue
                out[path.stem][scale] = [[describe(c), c.id] for c in expand(suite)]
        return out
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def changed_ids(part: str = "changed") -> dict:
    """{(suite, scale, cell description): (recorded id, new id)} of the intended changes: ``changed`` (the same
    cell, migrated) or ``replaced`` (another cell now, not migrated)."""
    listed = json.loads(CHANGED.read_text())
    cells = listed["changed"] if part == "changed" else listed["replaced"]["cells"]
    return {(c["suite"], c["scale"], c["cell"]): (c["from"], c["to"]) for c in cells}


def expected_ids() -> dict:
    """The recorded ids with the listed changes applied."""
    want, changes = json.loads(GOLDEN.read_text()), changed_ids() | changed_ids("replaced")
    for suite, scales in want.items():
        for scale, cells in scales.items():
            for pair in cells:
                old, new = changes.get((suite, scale, pair[0]), (pair[1], pair[1]))
                assert pair[1] == old, f"{suite}/{scale}/{pair[0]}: changed_ids.json says from {old}, recorded {pair[1]}"
                pair[1] = new
    return want


def test_cell_ids_unchanged_but_the_listed_ones():
    want = expected_ids()
    got = current_ids()
    assert sorted(got) == sorted(want), "suites added or removed: regenerate (see the module docstring)"
    problems = []
    for suite, scales in want.items():
        for scale, cells in scales.items():
            have = got[suite][scale]
            if have != cells:
                changed = [f"{d}: {i} -> {dict(have).get(d)}" for d, i in cells if dict(have).get(d) != i]
                added = [d for d, _ in have if d not in dict(cells)]
                problems.append(f"{suite}/{scale}: changed {changed[:5]} added {added[:5]} "
                                f"({len(cells)} recorded, {len(have)} now)")
    assert not problems, "cell ids changed (existing results would be orphaned):\n" + "\n".join(problems)


def test_the_listed_changes_are_sgr_and_saf_and_the_full_scale_clip_cells_only():
    changes, replaced = changed_ids(), changed_ids("replaced")
    assert len(changes) == 72 and {cell.split("/")[1] for _, _, cell in changes} == {"sgr", "saf"}
    assert len(replaced) == 18 and {(suite, scale, cell.split("/")[1]) for suite, scale, cell in replaced} == {
        ("dbl", "full", "clip")}  # the full recipe's ViT-B/32 (issue 30)
    assert not set(changes) & set(replaced)
    assert all(old != new for old, new in [*changes.values(), *replaced.values()])


def test_golden_file_is_not_trivial():
    want = json.loads(GOLDEN.read_text())
    ids = [i for scales in want.values() for cells in scales.values() for _, i in cells]
    assert len(want) >= 7 and len(ids) > 100
    assert all(len(i) == 12 for i in ids)


if __name__ == "__main__":
    sys.stdout.write(json.dumps(current_ids(), indent=1) + "\n")
