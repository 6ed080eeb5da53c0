"""A result store written before a change of cell ids keeps every finished result (``python -m bench migrate``).

The store of main 84bfe06 is built by that commit's own code (``git archive`` of it, in a fresh clone as in
this checkout: the history is there), on the tiny data with a few steps; this code then migrates it and
finds every result done, with the same metrics and paired ΔRSUM. The ids listed in
``tests/golden/changed_ids.json`` under ``changed`` are exactly the moves the migration makes for the suites'
cells; those under ``replaced`` (another model now) are not moved.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench.harness.cells import describe, expand
from bench.harness.collect import collect, summarize
from bench.harness.config import load_suite
from bench.harness.migrate import migrate, waiting_moves
from bench.harness.sweep import cell_states
from tests.test_golden_ids import CHANGED, PLACEHOLDER_ROOT

REPO = Path(__file__).resolve().parents[1]
BEFORE = "84bfe06"  # main before the sgr/saf ids changed


def _env(code: Path) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith("ITM_BENCH_")}
    return e | {"WANDB_MODE": "disabled", "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"}


def _bench(code: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=code, env=_env(code),
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def code_before(tmp_path_factory) -> Path:
    """The code of main 84bfe06, from this repository's history."""
    found = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{BEFORE}^{{commit}}"],
                           capture_output=True, text=True)
    assert found.returncode == 0, f"commit {BEFORE} is not in this clone's history: {found.stderr}"
    archive = subprocess.run(["git", "-C", str(REPO), "archive", BEFORE], capture_output=True, check=True).stdout
    dest = tmp_path_factory.mktemp("before") / "code"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def _suite(path: Path, data: Path) -> Path:
    small = {"embed_size": 16, "word_dim": 8}
    spec = {"name": "before", "datasets": [{"name": "f30k_precomp", "label": "tiny", "data_root": str(data)}],
            "matchers": [{"name": "sgr"}, {"name": "saf"}, {"name": "vse_infty"}],
            "strategies": [{"name": "baseline"}, {"name": "kd", "label": "KD"}], "seeds": [0], "scale": "smoke",
            "scales": {"smoke": {"schedule": {"default": {"epochs": 1, "batch_size": 32, "lr": 2e-3,
                                                          "max_steps_per_epoch": 2}},
                                 "matchers": {m: {**small, **({"sim_dim": 8} if m != "vse_infty" else {})}
                                              for m in ("sgr", "saf", "vse_infty")}}},
            "eval": {"dev_images": 30}}
    path.write_text(yaml.safe_dump(spec))
    return path


def _results(root: Path) -> dict:
    """{(cell description, protocol): metrics} of every finished result under ``root``."""
    out = {}
    for f in root.glob("before/*/result.json"):
        r = json.loads(f.read_text())
        c = r["cell"]
        for protocol, m in r["metrics"].items():
            out[(f"{c['dataset_label']}/{c['matcher_label']}/{c['strategy']['label']}/s{c['seed']}", protocol)] = m
    return out


def _readme_block(work: Path) -> subprocess.CompletedProcess:
    """The README's "## Cell ids across versions" block, as written, in ``work`` (laid out as a checkout)."""
    from tests.test_journeys import readme_sections

    (block,) = [cmds for heading, cmds in readme_sections((REPO / "README.md").read_text())
                if heading == "Cell ids across versions"]
    return subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(block)], cwd=work, env=_env(REPO),
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_store_of_main_84bfe06_keeps_every_result_after_migrating(code_before, tiny_data, tmp_path):
    work = tmp_path / "work"  # laid out as a checkout: the store in results/runs, the environment in .venv
    root = work / "results" / "runs"
    root.mkdir(parents=True)
    (work / ".venv").symlink_to(Path(sys.prefix))
    suite_path = _suite(tmp_path / "before.yaml", tiny_data)
    made = _bench(code_before, "sweep", suite_path, "--root", root)
    assert made.returncode == 0 and "6 cells: done 6" in made.stdout, made.stdout + made.stderr[-3000:]
    before = _results(root)
    assert len(before) == 6

    suite = load_suite(suite_path)
    cells = expand(suite)
    states = cell_states(cells, root)
    lost = sorted(describe(c) for c in cells if states[c.id]["state"] != "done")
    assert lost == ["tiny/saf/KD/s0", "tiny/saf/baseline/s0", "tiny/sgr/KD/s0", "tiny/sgr/baseline/s0"]

    status = _bench(REPO, "status", suite_path, "--root", root)
    assert "4 cell(s) of this suite have results under the ids of an earlier version" in status.stdout, status.stdout
    assert f"`python -m bench migrate --root {root}` moves them" in status.stdout
    out = _readme_block(work)  # --dry-run, then the move
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("would move ") == 4 and out.stdout.count("\nmoved ") == 4, out.stdout
    for c in cells:
        if describe(c) in lost:
            assert "moved before/" in out.stdout and f"-> before/{c.id} ({describe(c)}, done)" in out.stdout

    assert {s["state"] for s in cell_states(cells, root).values()} == {"done"}
    df = collect(suite, root)
    assert set(df["state"]) == {"done"} and len(df) == 6
    assert _results(root) == before  # every metric as made
    for _, row in df.iterrows():
        with np.load(row["ranks_file"]) as z:
            assert str(z["cell_id"]) == row["cell_id"]
    summary = summarize(df, suite, n_boot=10)
    kd = summary[summary["strategy"] == "KD"]
    assert len(kd) == 3 and (kd["delta_seeds"] == 1).all()  # each paired with its (moved) baseline
    again = _bench(REPO, "migrate", "--root", root)
    assert again.returncode == 0 and "nothing to move" in again.stdout
    assert "earlier version" not in _bench(REPO, "status", suite_path, "--root", root).stdout


def test_the_listed_id_changes_are_the_moves_of_a_store_made_before(tmp_path, monkeypatch):
    """Each cell of ``changed_ids.json``, recorded under its old id as a store of 84bfe06 holds it, is moved
    to the listed new id; the other cells of the suite stay where they are."""
    monkeypatch.setenv("DATA", PLACEHOLDER_ROOT)
    monkeypatch.setenv("VOCAB", PLACEHOLDER_ROOT)
    changes = json.loads(CHANGED.read_text())["changed"]
    root = tmp_path / "runs"
    cells = expand(load_suite("dbl", ["scale=smoke"]))
    by_name = {describe(c): c for c in cells}
    old_of = {c["to"]: c["from"] for c in changes if c["suite"] == "dbl" and c["scale"] == "smoke"}
    for cell in cells:
        old = old_of.get(cell.id, cell.id)
        folder = root / "dbl" / old
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(yaml.safe_dump({**cell.to_dict(), "id": old}))
    waiting = waiting_moves(cells, root)  # what `status` points out
    assert sorted((m.old_id, m.cell.id) for m in waiting) == sorted((old, new) for new, old in old_of.items())
    lines: list[str] = []
    moves = migrate(root, say=lines.append)
    assert sorted((m.old_id, m.cell.id) for m in moves) == sorted((old, new) for new, old in old_of.items())
    assert waiting_moves(cells, root) == []
    assert len(moves) == len(old_of) == 36
    assert sorted(p.name for p in (root / "dbl").iterdir()) == sorted(c.id for c in by_name.values())
    for cell in cells:
        assert yaml.safe_load((root / "dbl" / cell.id / "config.yaml").read_text())["id"] == cell.id


def test_a_move_that_would_replace_a_folder_or_a_cell_in_training_is_refused(tmp_path, monkeypatch):
    from bench.harness.store import CellLock, lock_path

    monkeypatch.setenv("DATA", PLACEHOLDER_ROOT)
    change = next(c for c in json.loads(CHANGED.read_text())["changed"] if c["suite"] == "dbl")
    (cell,) = [c for c in expand(load_suite("dbl", [f"scale={change['scale']}"])) if c.id == change["to"]]
    root = tmp_path / "runs"
    for cid in (change["from"], change["to"]):  # the old folder, and one already at the new id
        (root / "dbl" / cid).mkdir(parents=True)
        (root / "dbl" / cid / "config.yaml").write_text(yaml.safe_dump({**cell.to_dict(), "id": cid}))
    lines: list[str] = []
    assert migrate(root, say=lines.append) == []
    assert any(f"{change['to']} exists already; left as it is" in line for line in lines), lines
    assert (root / "dbl" / change["from"]).is_dir()

    (root / "dbl" / change["to"] / "config.yaml").unlink()
    (root / "dbl" / change["to"]).rmdir()
    lock = CellLock(lock_path(cell.replace(id=change["from"]), root))
    assert lock.acquire()  # another process trains the old cell
    try:
        with pytest.raises(RuntimeError, match="is being trained by another process"):
            migrate(root, say=lines.append)
    finally:
        lock.release()
    assert (root / "dbl" / change["from"]).is_dir()
    (move,) = migrate(root, say=lines.append)
    assert move.cell.id == change["to"] and (root / "dbl" / change["to"] / "config.yaml").is_file()


_OLD_CELLS = """
import json
from bench.harness.cells import expand
from bench.harness.config import load_suite
print(json.dumps(expand(load_suite("dbl", ["scale=full"]))))
"""


@pytest.mark.slow  # the code of 84bfe06 expands the suite in a process of its own
def test_a_full_scale_store_made_before_moves_sgr_and_saf_and_leaves_the_toy_clip_cells(code_before, tmp_path,
                                                                                        monkeypatch):
    """``dbl scale=full`` recorded as a store of 84bfe06 holds it (each cell's ``config.yaml`` as that code wrote
    it): the migration makes exactly the listed ``changed`` moves (SGR, SAF); the CLIP cells, a toy CLIP then and
    ViT-B/32 now (``replaced``), keep their old folders, and no new CLIP cell finds an old result."""
    from tests.test_golden_ids import changed_ids

    monkeypatch.setenv("DATA", PLACEHOLDER_ROOT)
    monkeypatch.setenv("VOCAB", PLACEHOLDER_ROOT)
    env = _env(code_before) | {"DATA": PLACEHOLDER_ROOT, "VOCAB": PLACEHOLDER_ROOT}
    made = subprocess.run([sys.executable, "-c", _OLD_CELLS], cwd=code_before, env=env, capture_output=True,
                          text=True, timeout=600)
    assert made.returncode == 0, made.stderr[-3000:]
    old_cells = json.loads(made.stdout)
    root = tmp_path / "runs"
    for cell in old_cells:
        (root / "dbl" / cell["id"]).mkdir(parents=True)
        (root / "dbl" / cell["id"] / "config.yaml").write_text(yaml.safe_dump(cell, sort_keys=False))
    listed = {key: ids for key, ids in changed_ids().items() if key[:2] == ("dbl", "full")}
    replaced = {key: ids for key, ids in changed_ids("replaced").items() if key[:2] == ("dbl", "full")}
    assert len(listed) == 36 and len(replaced) == 18

    moves = migrate(root, say=lambda line: None)
    assert sorted((m.old_id, m.cell.id) for m in moves) == sorted(listed.values())
    now = {describe(c): c for c in expand(load_suite("dbl", ["scale=full"]))}
    for (_, _, name), (old, new) in replaced.items():
        assert now[name].id == new and (root / "dbl" / old / "config.yaml").is_file()  # left where it was
        assert not (root / "dbl" / new).exists()
    assert waiting_moves(list(now.values()), root) == []  # `status` points at nothing
    assert sorted(p.name for p in (root / "dbl").iterdir()) == sorted(
        {c.id for c in now.values()} - {new for _, new in replaced.values()} | {old for old, _ in replaced.values()})
