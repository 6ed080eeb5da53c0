"""Inputs and commands (docs/bad-inputs.md, "Inputs and commands"): what a user types on the command line
or in a suite file. Each case runs ``python -m bench`` as a process on the tiny data and asserts exit
code 2, one ``error: …`` line on stderr naming the override or key, the value and the fix, no traceback,
and that nothing was trained (no run folder under ``--root``)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench.spec import Cell, resolve
from bench.train import TrainingDiverged, run_cell

REPO = Path(__file__).resolve().parents[1]


def write_suite(tmp_path, data, **changes) -> Path:
    spec = {
        "name": "bad",
        "datasets": [{"name": "f30k_precomp", "label": "tiny", "data_root": str(data)}],
        "matchers": [{"name": "vse_infty", "overrides": {"embed_size": 16, "word_dim": 8}}],
        "strategies": [{"name": "baseline"}],
        "seeds": [0],
        "scale": "smoke",
        "scales": {"smoke": {"schedule": {"default": {"epochs": 1, "batch_size": 32, "lr": 2e-3,
                                                      "max_steps_per_epoch": 2}}}},
        "eval": {"dev_images": 30},
        **changes,
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def bench(*args, cwd=REPO):
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "bench", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def refused(*args, root=None) -> str:
    """Run ``bench ARGS``: exit 2, one ``error:`` line, no traceback, nothing trained under ``root``."""
    out = bench(*args)
    err = out.stderr.strip()
    assert out.returncode == 2, f"{args}: exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    assert "Traceback" not in out.stderr, out.stderr
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    if root is not None:
        assert not any(Path(root).rglob("*.pt")) and not any(Path(root).rglob("result.json")), list(Path(root).rglob("*"))
    return err


@pytest.fixture
def suite(tiny_data, tmp_path):
    return write_suite(tmp_path, tiny_data)


# ----------------------------------------------------------------------------- overrides

OVERRIDES = [
    # (overrides, fragments of the one line)
    (["seeds=[0,1"], ["override 'seeds=[0,1'", "not valid YAML", "close every bracket and quote"]),
    (["seeds.0.x=1"], ["override 'seeds.0.x=1'", "seeds.0 is int 0, not a mapping or a list",
                       "set seeds.0=… itself"]),
    (["schedule.default.lr=!!python/object/apply:os.system [touch PWNED]"],
     ["not valid YAML", "YAML tags are not read from overrides"]),
    (["=1"], ["override '=1': empty key before '='", "expected key=value"]),
    (["lr"], ["override 'lr': no '=' in it", "expected key=value"]),
    (["seeds=[0]", "seeds=[1]"], ["override 'seeds=[1]': key seeds is already set by 'seeds=[0]'",
                                  "give each key once"]),
    (["schedule.default={lr: 1.0, lr: 2.0}"], ["duplicate key 'lr'", "keep one of them"]),
    (["schedule..lr=1"], ["override 'schedule..lr=1'", "empty or blank-padded part"]),
]


@pytest.mark.parametrize("overrides,fragments", OVERRIDES, ids=[" ".join(o) for o, _ in OVERRIDES])
def test_a_malformed_override_names_itself_the_problem_and_the_fix(suite, tmp_path, overrides, fragments):
    root = tmp_path / "runs"
    msg = refused("sweep", suite, *overrides, "--root", root, root=root)
    for f in fragments:
        assert f in msg, msg
    assert not (REPO / "PWNED").exists() and not (tmp_path / "PWNED").exists()


# ----------------------------------------------------------------------------- values out of range

S = "schedule.default."
VALUES = [
    (S + "grad_clip=-2", "schedule.default.grad_clip: must be >= 0, got -2.0", "flips the gradient"),
    (S + "lr_decay=-1", "schedule.default.lr_decay: must be > 0 and <= 1, got -1.0", "reverses learning"),
    (S + "lr_decay=1.5", "schedule.default.lr_decay: must be > 0 and <= 1, got 1.5", "above 1 grows it"),
    (S + "lr=0", "schedule.default.lr: must be > 0, got 0.0", "learns nothing"),
    (S + "lr=-1e-3", "schedule.default.lr: must be > 0, got -0.001", "climbs the loss"),
    (S + "lr=fast", "schedule.default.lr: expected float, got str 'fast'", ""),
    (S + "lr=1e-3e", "schedule.default.lr: expected float, got str '1e-3e'", ""),
    (S + "log_every=0", "schedule.default.log_every: must be >= 1, got 0", "divide by zero"),
    (S + "epochs=-3", "schedule.default.epochs: must be >= 1, got -3", "a count of 0 or less trains nothing"),
    (S + "epochs=2.5", "schedule.default.epochs: expected int, got float 2.5", ""),
    (S + "batch_size=0", "schedule.default.batch_size: must be >= 1, got 0", "trains nothing"),
    (S + "batch_size=32.0", "schedule.default.batch_size: expected int, got float 32.0", ""),
    (S + "margin=-0.2", "schedule.default.margin: must be >= 0, got -0.2", "hinge margin"),
    (S + "weight_decay=-1", "schedule.default.weight_decay: must be >= 0, got -1.0", ""),
    (S + "workers=-1", "schedule.default.workers: must be >= 0, got -1", "data-loader"),
    (S + "checkpoint_every=-5", "schedule.default.checkpoint_every: must be >= 0, got -5", ""),
    (S + "hinge_warmup_epochs=-1", "schedule.default.hinge_warmup_epochs: must be >= 0, got -1", ""),
    (S + "lr_decay_epochs=[-1]", "schedule.default.lr_decay_epochs: must be >= 0, got [-1] (item -1)", ""),
    (S + "lr_decay_epochs=5", "schedule.default.lr_decay_epochs: expected a list, got int 5", ""),
    (S + "lr_schedule=cosine", "schedule.default.lr_schedule: unknown value 'cosine'. Valid: constant, step", ""),
    (S + "amp='true'", "schedule.default.amp: expected bool, got str 'true'", ""),
    ("schedule.vse_infty.max_steps_per_epoch=0", "schedule.vse_infty.max_steps_per_epoch: must be >= 1", "null: no limit"),
    ("eval.batch_size=0", "eval.batch_size: must be at least 1, got 0", ""),
    ("matchers.0.overrides.embed_size='16'", "matchers[0].overrides.embed_size: expected int, got str '16'",
     "without quotes"),
    ("matchers.0.overrides.embed_size=0", "matchers[0].overrides.embed_size: must be at least 1, got 0",
     "builds no model"),
    ("scales.smoke.matchers.vse_infty.embed_size=0",
     "scales.smoke.matchers.vse_infty.embed_size: must be at least 1, got 0", "builds no model"),
    ("matchers.0.overrides.img_dim=2048.0", "matchers[0].overrides.img_dim: expected int, got float 2048.0", ""),
    ("matchers=[{name: xattn, overrides: {word_dropout: 1.5}}]",
     "matchers[0].overrides.word_dropout: must be in [0, 1), got 1.5", "dropout probability"),
    ("strategies=[{name: dbl, params: {loss: abs, scenario: oss, split: 7.0}}]",
     "strategies[0]: params: dbl split=7.0", "must be in [0, 1]"),
    ("strategies=[{name: dbl, params: {loss: abs, scenario: oss}, sweep: {split: [0.5, 7]}}]",
     "strategies[0]: params (sweep {'split': 7.0}): dbl split=7.0", "must be in [0, 1]"),
    ("strategies=[{name: dbl, params: {loss: rel, scenario: oss, alpha: -1.0}}]",
     "strategies[0]: params: dbl alpha=-1.0", ">= 0"),
    ("strategies=[{name: momentum, params: {m0: 1.5}}]", "strategies[0]: params: momentum m0=1.5", "[0, 1]"),
    ("strategies=[{name: dml, params: {peers: 1}}]", "strategies[0]: params: dml peers=1: must be >= 2", "the peers trained together"),
    ("datasets.0.name=flickr", "datasets[0].name: unknown dataset 'flickr'. Valid: coco_precomp, f30k_precomp", ""),
    ("resources.default.gpus=-1", "resources.default.gpus: must be at least 0, got -1", ""),
    ("seeds=0", "seeds: expected a list, got int 0", ""),
]


@pytest.mark.parametrize("override,where,why", VALUES, ids=[v[0] for v in VALUES])
def test_a_value_out_of_range_is_refused_before_training_with_its_key(suite, tmp_path, override, where, why):
    root = tmp_path / "runs"
    msg = refused("sweep", suite, override, "--root", root, root=root)
    assert msg.startswith(f"error: {suite}: {where}"), msg
    assert why in msg


def test_every_limited_schedule_key_is_a_schedule_key():
    from bench.spec import SCHEDULE_DEFAULTS, SCHEDULE_LIMITS

    assert set(SCHEDULE_LIMITS) <= set(SCHEDULE_DEFAULTS)


def test_validation_keeps_the_values_as_given(suite):
    """Checking a value does not change it: an int where a float is read stays an int in the cell."""
    from bench.harness.cells import expand
    from bench.harness.config import load_suite

    cells = expand(load_suite(suite, ["schedule.default.lr=1", "schedule.default.grad_clip=0"]))
    assert cells[0].schedule.grad_clip == 0 and cells[0].matcher.overrides["embed_size"] == 16


# ----------------------------------------------------------------------------- a protocol and its dataset

def test_a_protocol_of_another_dataset_is_refused_at_load(suite, tiny_data, tmp_path):
    root = tmp_path / "runs"
    msg = refused("sweep", suite, "eval.protocols=[coco_5k]", "--root", root, root=root)
    assert msg == (f"error: {suite}: datasets[0].protocols: protocol 'coco_5k' (from eval.protocols, which applies "
                   "to every dataset) evaluates coco_precomp, not this dataset's f30k_precomp; give f30k_1k, or "
                   "leave `protocols` out for the dataset's own")
    msg = refused("sweep", suite, "datasets.0.name=coco_precomp", "datasets.0.protocols=[f30k_1k]", "--root", root,
                  root=root)
    assert "protocol 'f30k_1k' evaluates f30k_precomp, not this dataset's coco_precomp; give coco_1k or coco_5k" in msg
    # a cell given to the trainer directly (no suite) is refused the same way, before any data is read
    with pytest.raises(ValueError, match=r"eval.protocols: protocol 'coco_5k' evaluates coco_precomp, not this "
                                         r"cell's dataset f30k_precomp; give f30k_1k"):
        resolve(Cell.from_dict({"dataset": {"name": "f30k_precomp", "data_root": str(tiny_data)},
                                "matcher": {"name": "vse_infty"}, "strategy": {"name": "baseline"},
                                "eval": {"protocols": ["coco_5k"]}}))


def test_a_schedule_value_out_of_range_in_a_cell_given_to_the_trainer(tiny_data, tmp_path):
    cell = Cell.from_dict({"id": "x", "dataset": {"name": "f30k_precomp", "data_root": str(tiny_data)},
                           "matcher": {"name": "vse_infty", "embed_size": 16, "word_dim": 8},
                           "strategy": {"name": "baseline"},
                           "schedule": {"epochs": 1, "batch_size": 32, "lr": 2e-3, "grad_clip": -2.0}})
    with pytest.raises(ValueError, match=r"schedule.grad_clip must be >= 0, got -2.0: the largest gradient norm"):
        run_cell(cell, tmp_path / "run")
    assert not (tmp_path / "run" / "last.pt").exists()


# ----------------------------------------------------------------------------- data checked before training

def test_test_features_of_another_size_are_refused_before_training(tiny_data, tmp_path):
    data = Path(shutil.copytree(tiny_data, tmp_path / "data"))
    ims = data / "f30k_precomp" / "test_ims.npy"
    feats = np.load(ims)
    np.save(ims, np.concatenate([feats, feats[..., :1]], axis=-1))  # D + 1
    suite = write_suite(tmp_path, data)
    root = tmp_path / "runs"
    msg = refused("run", suite, "--cell", "", "--root", root)
    d = feats.shape[-1]
    assert f"{ims}: features of size {d + 1} per region, but the training split's" in msg
    assert f"are {d}; extract every split with the same feature extractor" in msg
    assert not any(root.rglob("*.pt"))  # refused when the data was opened, before the first step


def test_training_diverged_names_last_pt_only_when_it_exists(tiny_data, tmp_path):
    cell = Cell.from_dict({"id": "x", "dataset": {"name": "f30k_precomp", "data_root": str(tiny_data)},
                           "matcher": {"name": "vse_infty", "embed_size": 16, "word_dim": 8},
                           "strategy": {"name": "baseline"},
                           "schedule": {"epochs": 1, "batch_size": 32, "lr": 1e30, "max_steps_per_epoch": 3},
                           "eval": {"dev_images": 30}})
    with pytest.raises(TrainingDiverged) as info:
        run_cell(cell, tmp_path / "run")
    msg = str(info.value)
    assert not (tmp_path / "run" / "last.pt").exists()
    assert "last.pt" not in msg and "no checkpoint was written before it" in msg and "Lower schedule.lr" in msg
    # `run` prints it as one line (exit 2): the fix is in the message
    suite = write_suite(tmp_path, tiny_data)
    msg = refused("run", suite, "--cell", "", "schedule.default.lr=1e30", "--root", tmp_path / "runs")
    assert msg.startswith("error: non-finite loss {'target': nan} at epoch 0") and "Lower schedule.lr" in msg
    assert not any((tmp_path / "runs").rglob("*.pt"))


# ----------------------------------------------------------------------------- every command

def test_every_command_prints_a_user_error_as_one_line(suite, tmp_path):
    root = tmp_path / "runs"
    bad = "schedule.default.lr=0"
    for command in ("run", "sweep", "status", "show", "collect"):
        extra = ["--cell", "x"] if command == "run" else []
        msg = refused(command, suite, bad, *extra, "--root", root, "--tables", tmp_path / "t") if command == "collect" \
            else refused(command, suite, bad, *extra, "--root", root)
        assert msg.startswith(f"error: {suite}: schedule.default.lr: must be > 0"), (command, msg)
    assert "seeds: seed(s) [0] listed more than once" in refused("demo", "seeds=[0,0]", "--root", root)
    assert "no such suite file. Closest suites: demo" in refused("show", "dem")
    assert "--cell 'zz' matches none of the 1 cells of suite bad; give a longer prefix of one id. Nearest: " \
        in refused("run", suite, "--cell", "zz", "--root", root)
    assert "unknown cluster profile 'nosuch'" in refused("sweep", suite, "--executor", "slurm", "--cluster", "nosuch",
                                                        "--root", root)
    assert f"{tmp_path}/none.md does not exist: run `make demo` first" in refused("readme", "--table",
                                                                                 tmp_path / "none.md")
    assert f"{tmp_path}/nowhere does not exist" in refused("sync", tmp_path / "nowhere")
    blocker = tmp_path / "file"
    blocker.write_text("a file where the results folder should be")
    msg = refused("run", suite, "--cell", "", "--root", blocker / "runs")
    assert f"{blocker} is a file where the store's folder belongs" in msg and "choose another results folder (--root)" in msg
    assert not root.exists()


# ----------------------------------------------------------------------------- evaluate

@pytest.fixture(scope="module")
def run_dir(tiny_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evalrun")
    root = tmp / "runs"
    out = bench("sweep", write_suite(tmp, tiny_data), "--root", root)
    assert out.returncode == 0, out.stderr
    return next(p for p in (root / "bad").iterdir() if (p / "best.pt").is_file())


def test_evaluate_refuses_what_is_not_a_model_or_a_device(run_dir, tiny_data, tmp_path):
    data = ["--data-root", tiny_data, "--dataset", "f30k_precomp"]
    msg = refused("evaluate", run_dir / "last.pt", *data)
    assert f"{run_dir}/last.pt is a resume checkpoint" in msg and f"evaluate {run_dir}/best.pt" in msg
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).bytes(5000))
    msg = refused("evaluate", noise, *data)
    assert f"checkpoint {noise} (5000 bytes) could not be read: it is truncated or not a torch checkpoint" in msg
    assert "asks to unpickle" not in msg
    msg = refused("evaluate", run_dir, *data)
    assert f"checkpoint {run_dir} is a folder: give the checkpoint file in it (a run's {run_dir}/best.pt" in msg
    msg = refused("evaluate", run_dir / "best.pt", *data, "--device", "bogus")
    assert msg == "error: --device 'bogus' is not a device; use auto, cpu, cuda or cuda:N"
    import torch

    if not torch.cuda.is_available():
        msg = refused("evaluate", run_dir / "best.pt", *data, "--device", "cuda")
        assert "--device cuda: torch finds no CUDA device here" in msg and "use --device cpu" in msg
    for bad in ("0", "-3"):  # argparse's own error: usage, then the line; exit 2
        out = bench("evaluate", run_dir / "best.pt", *data, "--batch-size", bad)
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert f"argument --batch-size: must be >= 1 (images or captions encoded at once), got {bad}" in out.stderr
    msg = refused("export", run_dir / "best.pt", tmp_path / "x.pth")
    assert f"{run_dir}/best.pt is a file; give the run folder holding it ({run_dir})" in msg


# ----------------------------------------------------------------------------- files, paths, options, environment

def test_suite_files_paths_and_options_a_user_gives(suite, tiny_data, tmp_path):
    root = tmp_path / "runs"
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(suite.read_bytes().replace(b"name: bad", b"name: bad\ndescription: caf\xe9"))
    line = latin.read_bytes().split(b"\n").index(b"description: caf\xe9") + 1
    assert refused("show", latin) == f"error: {latin}:{line}: not UTF-8 (byte 0xe9); re-save the file as UTF-8"
    tab = tmp_path / "tab.yaml"
    tab.write_text("name: bad\n\tseeds: [0]\n")
    assert refused("show", tab) == (f"error: {tab}: not valid YAML: while scanning for the next token: found "
                                    "character '\\t' that cannot start any token (line 2, column 1)")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert refused("show", empty) == f"error: {empty}: name: required key missing"
    listed = tmp_path / "list.yaml"
    listed.write_text("- name: bad\n")
    assert refused("show", listed) == f"error: {listed}: expected a mapping of suite keys, got list"
    assert refused("show", tmp_path) == (f"error: {tmp_path} is a folder, not a suite file; give a suite name "
                                         "(bench/suites/<name>.yaml) or the path of a YAML file")
    assert refused("status", suite, "--root", suite) == (f"error: --root {suite} is a file, not a results folder; "
                                                         f"give a folder (default {REPO}/results/runs)")
    msg = refused("sweep", suite, "--cluster", "local", "--root", root, root=root)
    assert msg == ("error: --cluster applies to --executor slurm only, not inline (which would ignore it); add "
                   "--executor slurm or leave --cluster out")
    msg = refused("sweep", suite, "--executor", "local", "--no-wait", "--root", root, root=root)
    assert "--no-wait applies to --executor slurm only, not local" in msg
    assert not root.exists()


def test_a_dataset_without_a_data_root_or_with_a_missing_one_trains_nothing(tiny_data, tmp_path):
    """Without a data root the trainer would read its default (data/synth-demo, relative to the working
    folder) under the dataset's real name: a table of the demo data titled F30K."""
    root = tmp_path / "runs"
    suite = write_suite(tmp_path, tiny_data, datasets=[{"name": "f30k_precomp"}])
    env = {k: v for k, v in os.environ.items() if k not in ("DATA", "VOCAB")}
    for command in (["run", suite, "--cell", ""], ["sweep", suite]):
        out = subprocess.run([sys.executable, "-m", "bench", *map(str, command), "--root", str(root)], cwd=REPO,
                             capture_output=True, text=True, env={**env, "PYTHONPATH": str(REPO)}, timeout=600)
        assert out.returncode == 2 and out.stderr.strip() == (
            f"error: {suite}: data_root: not given: dataset f30k_precomp has no data root (the trainer would read its "
            "built-in default under the dataset's real name); set data_root on the dataset or the suite, or an "
            "override data_root=DIR, or the DATA environment variable (1 cell(s): f30k_precomp/vse_infty/baseline/s0)"
        ), out.stderr
        out = subprocess.run([sys.executable, "-m", "bench", *map(str, command), "--root", str(root)], cwd=REPO,
                             capture_output=True, text=True, timeout=600,
                             env={**env, "PYTHONPATH": str(REPO), "DATA": str(tmp_path / "nowhere")})
        assert out.returncode == 2 and out.stderr.strip() == (
            f"error: {suite}: data_root: {tmp_path}/nowhere (from the DATA environment variable): does not exist; "
            "point data_root at the folder holding <dataset>/ and vocab/ (the SCAN precomp release, or python -m "
            "bench.data.synth writes one) (1 cell(s): f30k_precomp/vse_infty/baseline/s0)"), out.stderr
    assert not root.exists()


def test_a_cluster_profile_with_a_typo_a_bad_value_or_no_file(suite, tmp_path):
    root = tmp_path / "runs"
    typo, negative = tmp_path / "typo.yaml", tmp_path / "negative.yaml"
    typo.write_text("partiton: debug\n")
    negative.write_text("max_gpus_per_node: -1\n")
    sweep = ["sweep", suite, "--executor", "slurm", "--root", root, "--cluster"]
    msg = refused(*sweep, typo, root=root)
    assert msg.startswith(f"error: {typo}: unknown key 'partiton' (did you mean 'partition'? known keys: ")
    assert refused(*sweep, negative, root=root) == f"error: {negative}: 'max_gpus_per_node' (GPUs a node has: a cell asking for more cannot run here) must be >= 0, got -1; leave the key out (or null) for no cap"
    assert refused(*sweep, tmp_path / "nope.yaml", root=root) == \
        f"error: cluster profile file {tmp_path}/nope.yaml does not exist"
