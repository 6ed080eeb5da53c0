"""``python -m bench show``: the README's commands as written, and the estimate from recorded step times."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

import models
from bench.harness.cells import expand
from bench.harness.config import load_suite
from bench.harness.store import run_cell_in_store

REPO = Path(__file__).resolve().parents[1]
# README's `show` block, verbatim (test_readme_show_commands_as_written runs what README says and
# checks it still says this)
README_SHOW = [
    ".venv/bin/python -m bench show oas scale=smoke seeds=[0] data_root=data/synth-demo",
    ".venv/bin/python -m bench show oas recipes.oas_stage2=lr_2e-4 data_root=data/synth-demo",
]


def _readme_show_lines() -> list[str]:
    text = (REPO / "README.md").read_text()
    lines = [line.split("#")[0].strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S)
             for line in block.splitlines() if " -m bench show " in line]
    assert lines == README_SHOW
    return lines


def _schedule(out: str, name: str) -> tuple[dict, dict]:
    """The resolved schedule ``show`` prints for ``dataset/matcher``: (stage 1, OAS stage 2) as dicts."""
    (line,) = [x for x in out.splitlines() if x.startswith(f"  {name}: ")]
    parts = line.split(": ", 1)[1].split(" | ")
    return tuple(dict(kv.split("=", 1) for kv in p.split()) for p in parts + [""] * (2 - len(parts)))


def _run(command: str, cwd: Path) -> str:
    env = dict(os.environ, WANDB_MODE="offline", PYTHONPATH=str(REPO))
    out = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{command}\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_readme_show_commands_as_written(tiny_data, tmp_path):
    """Each documented `show` line, verbatim, from a folder where data/synth-demo is the tiny data."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "synth-demo").symlink_to(tiny_data)
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))  # the environment running the tests
    smoke, variant = _readme_show_lines()
    out = _run(smoke, tmp_path)
    assert out.startswith("suite oas (") and "scale smoke: 28 cells" in out
    assert re.search(r"oas_stage2=lr_2e-5@[0-9a-f]{8}  bench/recipes/oas_stage2/lr_2e-5\.yaml", out)
    # the smoke schedule of DBL's matcher with OAS's caption augmentation, stage 2 after the bar
    assert _schedule(out, "f30k/xattn") == (
        {"epochs": "2", "batch_size": "32", "lr": "0.002", "lr_decay_epochs": "[1]", "max_steps_per_epoch": "100",
         "hinge_warmup_epochs": "1", "caption_aug": "True"},
        {"epochs": "1", "lr": "2e-05", "lr_schedule": "constant", "hinge_warmup_epochs": "0"})
    n_train = sum(1 for _ in open(tiny_data / "f30k_precomp" / "train_caps.txt"))
    steps = 2 * min(-(-n_train // 128), 20)
    assert re.search(rf"f30k/vse_infty/baseline/s0 +{steps} ", out)
    assert "the training captions (data)" in out  # counted in the tiny data's train_caps.txt
    out = _run(variant, tmp_path)
    assert "scale full: 84 cells" in out and "oas_stage2=lr_2e-4@" in out
    # DBL's scripts: 40 epochs, decay at 30 on Flickr30K; 20 / 10 on COCO; fp32; the other stage-2 reading
    assert _schedule(out, "f30k/xattn") == (
        {"amp": "False", "epochs": "40", "batch_size": "128", "lr": "0.0002", "lr_decay_epochs": "[30]",
         "grad_clip": "2.0", "caption_aug": "True"},
        {"epochs": "30", "lr": "0.0002", "lr_schedule": "constant", "lr_decay_epochs": "[]"})
    stage1, stage2 = _schedule(out, "coco/xattn")
    assert (stage1["epochs"], stage1["lr_decay_epochs"], stage2["lr_decay_epochs"]) == ("20", "[10]", "[10]")
    assert _schedule(out, "f30k/vse_infty")[0]["weight_decay"] == "0.01"  # torch's AdamW default, as VSE∞
    # the published schedule's 25 epochs of the data's batches of 128
    assert re.search(rf"f30k/vse_infty/baseline/s0 +{25 * -(-n_train // 128)} ", out)
    # the parameters of each model as its cells build it: VSE∞ on the data's vocabulary (+ <mask>) and regions
    vocab = len(json.loads((tiny_data / "vocab" / "f30k_precomp_vocab.json").read_text())["word2idx"])
    n_vse = models.parameter_count("vse_infty", vocab_size=vocab + 1, img_dim=64)
    assert re.search(rf"^ +{n_vse:,}  f30k/vse_infty$", out, re.M)


def _main(capsys, *argv) -> str:
    from bench.__main__ import main

    main([str(a) for a in argv])
    return capsys.readouterr().out


def test_estimate_from_a_done_cell(tiny_data, tmp_path, capsys):
    """One trained cell gives the seconds per step; a pending cell of the same matcher, batch and
    strategy is estimated as its planned steps × that time."""
    spec = {"name": "est", "datasets": [{"name": "f30k_precomp", "label": "tiny", "data_root": str(tiny_data)}],
            "matchers": [{"name": "vse_infty"}], "strategies": [{"name": "baseline"}], "seeds": [0],
            "scale": "smoke",
            "scales": {"smoke": {"schedule": {"default": {"epochs": 1, "batch_size": 32, "lr": 2e-3,
                                                          "max_steps_per_epoch": 2}},
                                 "matchers": {"vse_infty": {"embed_size": 32, "word_dim": 16}}}},
            "eval": {"dev_images": 30}, "resources": {"default": {"gpus": 0}},
            "recipes": {"reference": "published"}}  # a recipe, so that status and collect name it
    suite = tmp_path / "est.yaml"
    suite.write_text(yaml.safe_dump(spec))
    root = tmp_path / "runs"
    (cell,) = expand(load_suite(suite))
    assert run_cell_in_store(cell, root, tracker_factory=None)["state"] == "done"  # in process, no W&B
    out = _main(capsys, "show", suite, "seeds=[0,1]", "schedule.default.epochs=3", "--root", root)
    (result,) = [json.loads(p.read_text()) for p in root.glob("est/*/result.json")]
    step = result["cost"]["step_time_s"]
    # seed 0 with 3 epochs is another cell (other schedule): both pending, estimated from the record
    assert not re.search(r"  done  ", out) and out.count("  pending  ") == 2
    hours = 3 * 2 * step / 3600
    assert out.count(f"{hours:.3g} h (estimate: 1 done cell(s) of this matcher, batch and strategy)") == 2
    assert f"total: {2 * hours:.4g} GPU-hours estimated for 2 pending cell(s) (0 from the GPU rates" in out
    assert f"based on: seconds per step of 1 done cell(s) in {root} (device: cpu)" in out
    # the done cell itself shows its recorded hours
    out = _main(capsys, "show", suite, "--root", root)
    assert re.search(r" done +tiny/vse_infty/baseline/s0 +2 +[0-9.e-]+ h \(recorded\)", out)
    # the recipe, name@version, as the run recorded it: status, the table and the per-cell rows
    tag = result["cell"]["recipe"]["reference"]
    assert re.fullmatch(r"published@[0-9a-f]{8}", tag)
    assert f"reference={tag}" in _main(capsys, "status", suite, "--root", root)
    _main(capsys, "collect", suite, "--root", root, "--tables", tmp_path / "tables", "--figures", tmp_path / "fig")
    assert f"Recipes: reference={tag}." in (tmp_path / "tables" / "est.md").read_text()
    assert f"reference={tag}" in (tmp_path / "tables" / "est_cells.csv").read_text()


def test_oas_table_names_its_stage2_recipe(tmp_path):
    """The OAS table says which reading of the ambiguous Flickr30K stage 2 its cells used."""
    from bench.harness.collect import collect, write_tables

    for option, lr in (("lr_2e-5", "2e-5"), ("lr_2e-4", "2e-4")):
        suite = load_suite("oas", ["seeds=[0]", "matchers=[vse_infty]", f"recipes.oas_stage2={option}"])
        cells = expand(suite)
        f30k_kd = [c for c in cells if c.strategy.name == "kd" and c.dataset_label == "f30k"][0]
        assert f30k_kd.schedule.lr == float(lr) and f30k_kd.schedule.lr_schedule == "constant"
        assert f30k_kd.recipe["oas_stage2"].startswith(f"{option}@")
        out = tmp_path / option
        md = write_tables(collect(suite, out / "runs"), suite, out, n_boot=10)["md"].read_text()
        assert f"OAS stage 2: recipe {f30k_kd.recipe['oas_stage2']} (OAS stage 2: Flickr30K constant {lr} " \
               "for 30 epochs" in md
