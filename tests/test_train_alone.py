"""``python -m bench.train CONFIG --run-dir DIR``: one cell trained alone equals the same cell of a sweep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

from bench import spec
from bench.harness.cells import expand
from bench.harness.config import load_suite
from bench.harness.store import run_cell_in_store, run_dir_for
from tests.test_store_integrity import write_suite

REPO = Path(__file__).resolve().parents[1]


def train_alone(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITM_BENCH_")} | {
        "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "bench.train", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)


def comparable(run_dir):
    r = json.loads((Path(run_dir) / "result.json").read_text())
    with np.load(Path(run_dir) / "ranks.npz") as z:
        ranks = {k: z[k].tolist() for k in z.files}
    return {k: r[k] for k in ("metrics", "dev_curve", "best_epoch", "best_dev_rsum", "cell_id")}, ranks


def test_help():
    out = train_alone("--help")
    assert out.returncode == 0 and "--run-dir" in out.stdout and "key=value" in out.stdout


def test_a_cell_trained_alone_equals_the_sweeps(tiny_data, tmp_path):
    (cell,) = expand(load_suite(write_suite(tmp_path, tiny_data, epochs=2, steps=2)))
    root = tmp_path / "runs"
    assert run_cell_in_store(cell, root, tracker_factory=None)["state"] == "done"
    swept = run_dir_for(cell, root)
    config = swept / "config.yaml"
    assert spec.Cell.from_dict(yaml.safe_load(config.read_text())) == cell

    alone = tmp_path / "alone"
    out = train_alone(config, "--run-dir", alone)
    assert out.returncode == 0, out.stderr
    assert f"cell {cell.id} done" in out.stdout
    for name in ("config.yaml", "log.txt", "ranks.npz", "result.json", "done", "best.pt", "last.pt"):
        assert (alone / name).is_file(), name
    assert sorted(p.name for p in alone.iterdir()) == sorted(p.name for p in swept.iterdir() if p.name != "wandb")
    assert comparable(alone) == comparable(swept)
    assert yaml.safe_load((alone / "config.yaml").read_text()) == cell.to_dict()

    # an override of what decides the result makes another cell (another id); a free key does not
    out = train_alone(config, "--run-dir", tmp_path / "other", "schedule.epochs=1", "schedule.log_every=1")
    assert out.returncode == 0, out.stderr
    other = json.loads((tmp_path / "other" / "result.json").read_text())
    assert other["cell"]["schedule"]["epochs"] == 1 and len(other["dev_curve"]) == 1
    assert other["cell_id"] != cell.id == spec.cell_id(cell.replace(schedule=replace(cell.schedule, log_every=1)))


def test_an_override_uses_the_grammar_of_every_command(tmp_path):
    """``python -m bench.train`` reads ``key=value`` as the suite commands do (``bench.overrides``): the same
    refusals, each one line, exit 2, before any folder is made."""
    config = tmp_path / "cell.yaml"
    config.write_text(yaml.safe_dump({"dataset": {"name": "f30k_precomp"}, "matcher": {"name": "vse_infty"},
                                      "strategy": {"name": "baseline"}, "schedule": {"epochs": 1}}))
    for bad, said in (("schedule.epochs", "no '=' in it"), ("seed=[0", "is not valid YAML"),
                      ("schedule..lr=1", "empty or blank-padded part"),
                      ("schedule.epochs.x=1", "schedule.epochs is int 1, not a mapping or a list")):
        out = train_alone(config, "--run-dir", tmp_path / "r", bad)
        assert out.returncode == 2 and out.stderr.startswith(f"error: override {bad!r}: "), out.stderr
        assert said in out.stderr and out.stderr.count("\n") == 1, out.stderr
    out = train_alone(config, "--run-dir", tmp_path / "r", "seed=1", "seed=2")
    assert out.returncode == 2 and "seed is already set by 'seed=1'" in out.stderr, out.stderr
    assert not (tmp_path / "r").exists()


def test_bad_input_is_one_clear_line(tmp_path):
    out = train_alone(tmp_path / "none.yaml", "--run-dir", tmp_path / "r")
    assert out.returncode == 2 and "none.yaml is not a file" in out.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"dataset": {"name": "f30k_precomp"}, "matcher": {"name": "vse_infty"},
                                   "strategy": {"name": "baseline"}, "schedule": {"lrr": 1}}))
    out = train_alone(bad, "--run-dir", tmp_path / "r")
    assert out.returncode == 2 and "unknown schedule keys ['lrr']" in out.stderr
    assert not (tmp_path / "r").exists()


def test_readme_train_one_cell_alone_as_written(tiny_data, tmp_path):
    """The README's "## Train one cell alone" block, run as written in a folder laid out as after
    `make demo` (one demo cell in results/runs/demo): the cell trained alone equals the sweep's."""
    from tests.test_journeys import readme_sections

    (block,) = [cmds for heading, cmds in readme_sections((REPO / "README.md").read_text())
                if heading == "Train one cell alone"]
    (cell,) = expand(load_suite(write_suite(tmp_path, tiny_data, name="demo", epochs=1, steps=2)))
    work = tmp_path / "work"
    (work / "results" / "runs").mkdir(parents=True)
    (work / ".venv").symlink_to(Path(sys.prefix))
    assert run_cell_in_store(cell, work / "results" / "runs", tracker_factory=None)["state"] == "done"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITM_BENCH_")} | {
        "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(block)], cwd=work, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    alone = work / "results" / "alone" / "demo-cell"
    assert comparable(alone) == comparable(run_dir_for(cell, work / "results" / "runs"))
