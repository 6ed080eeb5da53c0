"""The dress rehearsal of a paper table (``python -m bench sweep SUITE --rehearse``, ``make rehearse-<table>``):
every distinct full-scale configuration for a few steps, a REHEARSAL table that never mixes with the real one, a
log of each cell's peak memory beside its request and its seconds per step, and what the real table's sweep says
from that log before anything is submitted.

The fast tests rehearse the tiny data at smoke scale (real processes, a step per cell); the slow ones rehearse
the published sizes (BERT and CLIP from the session's generated folders): on the local SLURM cluster, and the
README's "Before you submit a table" block as written.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench.harness.cells import expand, topological_order
from bench.harness.config import load_suite
from bench.harness.rehearsal import REHEARSAL_DATA, REHEARSAL_ROOT, SUFFIX, generated_weights_folder
from bench.harness.rehearsal_log import check_before_submission, config_key, log_paths, store_root
from bench.harness.store import DEFAULT_ROOT, locate_run, run_dir_for
from bench.spec import Rehearsal, cell_id, resolve

REPO = Path(__file__).resolve().parents[1]
ONE_STEP = ["rehearsal.steps=1", "rehearsal.eval_images=10"]


def bench(*args, check=None, **extra_env):
    """``python -m bench ARGS`` in a subprocess, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITM_BENCH_")}
    env |= {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"} | extra_env
    p = subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=900)
    if check is not None:
        assert p.returncode == check, f"{args}\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    return p


def tiny_suite(folder: Path, data: Path) -> Path:
    """VSE∞ (small) at smoke scale on both tiny datasets, baseline and KD (an OAS cell on its baseline), 2 seeds."""
    spec = {"name": "tiny", "scale": "smoke", "data_root": str(data),
            "datasets": [{"name": "f30k_precomp", "label": "f30k"}, {"name": "coco_precomp", "label": "coco"}],
            "matchers": [{"name": "vse_infty", "label": "VSE"}],
            "strategies": [{"name": "baseline"}, {"name": "kd", "label": "KD"}], "seeds": [0, 1],
            "scales": {"smoke": {"schedule": {"default": {"epochs": 2, "batch_size": 16, "lr": 2e-3,
                                                          "oas_stage2": {"epochs": 1}}},
                                 "matchers": {"vse_infty": {"embed_size": 16, "word_dim": 8}}}},
            "resources": {"default": {"gpus": 1, "cpus": 1, "mem_gb": 4, "time_min": 60}}}
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# ----------------------------------------------------------------------------------------------- the cells


def test_a_rehearsal_is_a_table_of_its_own(tiny_data, monkeypatch):
    """Every distinct configuration once (the first seed), each with its published schedule and the rehearsal's
    cuts applied when resolved, never the id, folder, W&B project or published rows of a real cell; the inputs
    nobody gives are the generated ones; OAS cells depend on the rehearsal's own baselines."""
    from bench.harness.tracking import project_of

    monkeypatch.delenv("DATA", raising=False)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    real = load_suite("oas")
    suite = load_suite("oas", rehearse=True)
    assert suite.name == "oas" + SUFFIX and suite.spec["seeds"] == [0] and suite.spec["reference"] == []
    assert project_of(suite.name, suite.spec["wandb"]) == project_of(real.name, real.spec["wandb"]) + SUFFIX
    assert suite.spec["data_root"] == str(REHEARSAL_DATA) and suite.spec["generated"] == {"data": str(REHEARSAL_DATA)}
    cells, real_cells = topological_order(expand(suite)), expand(real)
    configs = {config_key(c) for c in real_cells}
    assert len(cells) == len(configs) == 28 and {config_key(c) for c in cells} == configs
    assert not {c.id for c in cells} & {c.id for c in real_cells}
    assert not {run_dir_for(c, store_root(DEFAULT_ROOT, suite.spec)) for c in cells} & {
        run_dir_for(c, DEFAULT_ROOT) for c in real_cells}
    assert store_root(DEFAULT_ROOT, suite.spec) == REHEARSAL_ROOT and store_root("/x", suite.spec) == Path("/x")
    ids = {c.id for c in cells}
    for c in cells:
        twin = next(r for r in real_cells if config_key(r) == config_key(c) and r.seed == 0)
        assert c.rehearsal == Rehearsal() and c.schedule == twin.schedule and c.suite == suite.name
        assert set(c.depends_on) <= ids and bool(c.depends_on) == bool(twin.depends_on)
        run = resolve(c)
        assert run.schedule.epochs == 1 and run.schedule.max_steps_per_epoch == Rehearsal().steps
        assert run.eval.dev_images == Rehearsal().eval_images and cell_id(run) == c.id
    # what the user gives is used: data, weights, the cuts
    given = load_suite("dbl", [f"data_root={tiny_data}", "weights.bert=/somewhere/bert", "rehearsal.batch_size=8"],
                       rehearse=True)
    assert given.spec["data_root"] == str(tiny_data) and given.spec["weights"]["bert"] == "/somewhere/bert"
    assert given.spec["weights"]["clip"] == str(generated_weights_folder("clip"))
    assert given.spec["generated"] == {"clip": str(generated_weights_folder("clip"))}
    assert all(resolve(c).schedule.batch_size == 8 for c in expand(given))


def test_a_rehearsal_runs_measures_and_stops_the_real_sweep_it_would_fail(tiny_data, tmp_path):
    """A rehearsal (real processes) of a table whose COCO KD cell fails at its test evaluation (a planted disk
    error): its log names the failure and each cell's peak memory, request and s/step, and what was cut; its
    table is REHEARSAL's; the real table's dry run then stops (exit 2) on the failed configuration and on one whose
    logged memory is over its request, and warns on one over its time limit; a rehearsal result copied into a
    real cell's folder is never pooled."""
    suite = tiny_suite(tmp_path, tiny_data)
    root = tmp_path / "rehearsal"
    out = bench("sweep", suite, "--rehearse", "--executor", "inline", "--root", root, *ONE_STEP, check=1,  # exit 1
                ITM_BENCH_FAULT="eval.test:4:eio")  # the 4th test evaluation: coco/VSE/KD (topological order)
    assert "REHEARSAL of table tiny: 4 configuration(s), 3 done, 1 failed" in out.stdout
    log = json.loads(log_paths("tiny", root)["json"].read_text())
    cells = {c["name"]: c for c in log["cells"]}
    assert set(cells) == {"f30k/VSE/baseline/s0", "f30k/VSE/KD/s0", "coco/VSE/baseline/s0", "coco/VSE/KD/s0"}
    failed = cells["coco/VSE/KD/s0"]
    assert failed["state"] == "failed" and "Input/output error" in failed["error"] and failed["problems"]
    for name in ("f30k/VSE/baseline/s0", "f30k/VSE/KD/s0", "coco/VSE/baseline/s0"):
        c = cells[name]
        assert c["state"] == "done" and c["steps_run"] == 1 and c["step_time_s"] > 0 and c["device"] == "cpu"
        assert 0.05 < c["peak_rss_gb"] < 8 and c["mem_request_gb"] == 4 and c["time_limit_min"] == 60
        assert 0.05 < c["rss_start_gb"] <= c["peak_rss_gb"]  # what the process held when the cell began
        assert c["problems"] == [] and c["planned_steps"] > 0
    assert log["reduced"]["dev images"] == {"10": ["1,000"]} and log["reduced"]["epochs"] == {"1": ["2"]}
    md = log_paths("tiny", root)["md"].read_text()
    assert md.startswith("# REHEARSAL of table `tiny`") and "failed: " in md
    # the test evaluation ran on a slice: COCO 1K's five folds of 2 images, 5K's 10 images
    coco = next(p for p in (root / "tiny-rehearsal").iterdir() if (p / "done").exists()
                and json.loads((p / "result.json").read_text())["cell"]["dataset"]["name"] == "coco_precomp")
    with np.load(coco / "ranks.npz") as ranks:
        assert ranks["coco_1k/i2t"].shape == (10,) and ranks["coco_5k/t2i"].shape == (50,)

    # the REHEARSAL table: its own files and title, no figures, no published rows
    tables = tmp_path / "tables"
    out = bench("collect", suite, "--rehearse", "--root", root, "--tables", tables, *ONE_STEP, check=0)
    table = (tables / "tiny-rehearsal.md").read_text()
    assert table.startswith("# REHEARSAL of table `tiny` (1 step(s) per cell") and "| published" not in table
    assert (tables / "tiny-rehearsal-log.json").is_file() and not (tables / "tiny.md").exists()
    assert "0/1 (1 failed)" in table and "| VSE | KD | 1/1 |" in table

    # the real table, before submitting: the failed configuration, and memory over the request, stop it
    fake = tmp_path / "log.json"
    for c in log["cells"]:
        if c["name"] == "f30k/VSE/baseline/s0":
            c["peak_rss_gb"] = 500.0  # what a published-size model could need
        if c["name"] == "coco/VSE/baseline/s0":
            c["extrapolated_min"] = 10_000.0
    fake.write_text(json.dumps(log))
    real = [suite, "--root", tmp_path / "runs", "--rehearsal-log", fake]
    dry = bench("sweep", *real, "--executor", "slurm", "--cluster", "example-gpu", "--dry-run", check=2)
    errors = [line for line in dry.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and not dry.stdout, dry.stderr
    assert re.search(r"coco/VSE/KD \(cells \w{12}, \w{12}\): its rehearsal failed \(.*Input/output error", errors[0] + errors[1])
    assert any("f30k/VSE/baseline" in e and "peak memory 500.0 GB > resources.mem_gb 4 GB; raise it "
               "(resources.vse_infty.mem_gb=625)" in e for e in errors)
    assert re.search(r"warning: .*coco/VSE/baseline .*training extrapolated to 10,000 min .* > resources.time_min 60",
                     dry.stderr)
    # inline and local sweeps request no memory: a warning; a failed rehearsal stops every executor
    real_suite = load_suite(suite)
    todo = expand(real_suite)
    inline = check_before_submission(real_suite, todo, "inline", fake)
    assert len(inline.errors) == 1 and "its rehearsal failed" in inline.errors[0]
    assert any("peak memory 500.0 GB" in w for w in inline.warnings)
    assert not check_before_submission(real_suite, todo, "slurm", tmp_path / "none.json").errors

    # a rehearsal result is never a real cell's: copied into a real cell's folder it is left out
    real_cell = next(c for c in todo if c.dataset.name == "f30k_precomp" and c.strategy.name == "baseline" and c.seed == 0)
    rehearsed = next(p for p in (root / "tiny-rehearsal").iterdir() if (p / "done").exists()
                     and yaml.safe_load((p / "config.yaml").read_text())["strategy"]["name"] == "baseline"
                     and yaml.safe_load((p / "config.yaml").read_text())["dataset"]["name"] == "f30k_precomp")
    target = run_dir_for(real_cell, tmp_path / "runs")
    shutil.copytree(rehearsed, target)
    result = json.loads((target / "result.json").read_text())
    result["cell_id"] = real_cell.id
    (target / "result.json").write_text(json.dumps(result))
    status = bench("status", suite, "--root", tmp_path / "runs", check=0).stdout
    assert f"{real_cell.id}  corrupt" in status and "its result.json is a rehearsal's, and the cell is not" in status


# ----------------------------------------------------------------------------------------------- published sizes


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.timeout(1200)
def test_published_sizes_rehearse_on_the_test_cluster(slurm_cluster, rehearsal_data, published_weights, tmp_path):
    """The paper tables' own configurations at their published sizes through the SLURM path, with the arrays and
    dependencies of the real tables, to REHEARSAL tables with 0 failed cells: table 1's baseline of every matcher
    (VSE∞ BiGRU, BERT-base, SGR, SAF, DBL's matcher, CLIP ViT-B/32 from the generated folders) and table 2's two
    OAS stages (VSE∞'s baseline, then KD on it, afterok). Cheapest: one step of 8 pairs, 10 evaluation images, one
    dataset (the other strategies are the same models)."""
    from bench.harness.dryrun import dry_run
    from bench.harness.show import show

    given = [f"data_root={rehearsal_data}", f"weights.clip={published_weights['clip']}",
             f"weights.bert={published_weights['bert']}", "datasets=[{name: f30k_precomp, label: f30k}]",
             "rehearsal.steps=1", "rehearsal.eval_images=10", "rehearsal.batch_size=8"]
    # table 2 first: its VSE∞ baseline is table 1's too (then done, found in table 2's folder by its id)
    tables = {"oas": [*given, "matchers=[vse_infty]", "strategies=[baseline, {name: kd, label: KD}]"],
              "dbl": [*given, "strategies=[baseline]"]}
    root, cluster = tmp_path / "runs", ["--executor", "slurm", "--cluster", slurm_cluster["profile"]]
    for name, overrides in tables.items():
        # the rehearsal's job arrays are the real table's: one per stage and resource shape, KD after its baseline
        # (the real table's first seed: the rehearsal's one; ids, the suite's name, the arrays' numbers and cell
        # counts, and the time requests, estimated from each store's done cells, aside)
        table = [o for o in overrides if not o.startswith("rehearsal.")] + ["seeds=[0]"]
        real = {_shape(a) for a in dry_run(load_suite(name, table), tmp_path / "real", slurm_cluster["profile"]
                                           ).splitlines() if a.startswith("array ")}
        suite = load_suite(name, overrides, rehearse=True)
        rehearsed = {_shape(a) for a in dry_run(suite, root, slurm_cluster["profile"]).splitlines()
                     if a.startswith("array ")}
        assert real == rehearsed, "\n".join(["real:", *real, "rehearsal:", *rehearsed])
        assert sum("afterok" in a for a in real) == (name == "oas")  # KD waits for its baseline

        out = bench("sweep", name, "--rehearse", *cluster, "--root", root, *overrides, check=0)
        cells = topological_order(expand(suite))
        assert f"REHEARSAL of table {name}: {len(cells)} configuration(s), {len(cells)} done, 0 failed" in out.stdout, \
            out.stdout[-2000:] + out.stderr[-3000:]
        log = json.loads(log_paths(name, root)["json"].read_text())
        assert all(c["state"] == "done" and c["peak_rss_gb"] > 0 and c["step_time_s"] > 0 for c in log["cells"])
        assert log["reduced"]["batch size"] == {"8": ["128"]} and log["reduced"]["steps per epoch"] == {"1": ["all"]}
        for cell in cells:  # each ran as a SLURM job; the KD cell started after its baseline was done
            run = locate_run(cell, root)
            result = json.loads((run / "result.json").read_text())
            assert result["provenance"]["slurm_job_id"] and result["cell"]["rehearsal"]["batch_size"] == 8
            if cell.depends_on:
                base = run_dir_for(cell.replace(id=cell.depends_on[0]), root)
                assert (run / "submitted.json").stat().st_mtime < (base / "done").stat().st_mtime
                assert (run / "config.yaml").stat().st_mtime >= (base / "done").stat().st_mtime
        bench("collect", name, "--rehearse", "--root", root, "--tables", tmp_path / "tables", *overrides, check=0)
        table = (tmp_path / "tables" / f"{name}-rehearsal.md").read_text()
        assert table.startswith(f"# REHEARSAL of table `{name}`") and table.count("| 1/1 |") == len(cells)
    assert len(expand(load_suite("dbl", tables["dbl"], rehearse=True))) == 6  # every matcher
    # the published architectures: CLIP ViT-B/32's parameter count in the rehearsal's own plan
    assert re.search(r"^ +151,277,313  f30k/clip$", show(load_suite("dbl", tables["dbl"], rehearse=True), root), re.M)


def _shape(array_line: str) -> str:
    """A dry run's array line without what differs between a table and its rehearsal: cell ids, the suite name, the
    array's number and its count of cells (the table's VSE∞ baseline is done by the OAS rehearsal before: the same
    cell), the time request (estimated from the store's done cells)."""
    line = re.sub(r"\b[0-9a-f]{12}\b", "<id>", array_line.replace(SUFFIX + ":", ":"))
    return re.sub(r"^array \d+ |\d+ cell\(s\)|-\d+m\b|, \d+ min", "", line)


# ----------------------------------------------------------------------------------------------- the README


def readme_block(heading: str) -> list[str]:
    """The commands of the README's ```bash blocks under ``## heading`` (comments dropped)."""
    text = (REPO / "README.md").read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```bash\n(.*?)^```", section, flags=re.S | re.M)
    return [line for b in blocks for line in b.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.slow
def test_before_you_submit_a_table_as_written(rehearsal_data, published_weights, tmp_path):
    """README.md's "## Before you submit a table" block, each command as written in a fresh checkout, the data
    and weights folders it names standing for the real ones, each rehearsal cut to one configuration (ARGS:
    one matcher, dataset and strategy; one step of 8 pairs): the generated inputs, then the user's, the log,
    then the real table's dry run, which reads that log."""
    from tests.test_journeys import make_checkout, run

    checkout = make_checkout(tmp_path / "checkout")
    (checkout / "data").mkdir()
    (checkout / "data" / "scan").symlink_to(rehearsal_data)
    (checkout / "data" / "synth-rehearsal").symlink_to(rehearsal_data)  # what `make rehearse-dbl` generates
    (checkout / "models").mkdir(exist_ok=True)  # the matchers package: the README fetches the weights into it
    for folder in published_weights.values():
        (checkout / "models" / folder.name).symlink_to(folder)
    lines = readme_block("Before you submit a table")
    assert lines and lines[0].startswith("make rehearse-dbl")
    cut = ["datasets=[{name: f30k_precomp, label: f30k}]", "strategies=[baseline]", "rehearsal.steps=1",
           "rehearsal.eval_images=10", "rehearsal.batch_size=8"]
    outputs = {}
    for line in lines:
        argv = shlex.split(line)
        if argv[0] == "make":
            args = next((a.split("=", 1)[1] for a in argv if a.startswith("ARGS=")), "")
            matcher = "clip" if "weights.clip" in args else "vse_infty"
            argv = [a for a in argv if not a.startswith("ARGS=")]
            argv += [f"ARGS={args} {shlex.join([f'matchers=[{matcher}]', *cut])}".strip(), "-o", ".venv/.installed-stamp"]
        outputs[line] = run(checkout, argv, timeout=900)
    log = json.loads((checkout / "results" / "rehearsal" / "dbl-rehearsal-log.json").read_text())
    assert [c["name"] for c in log["cells"]] == ["f30k/clip/baseline/s0"] and log["cells"][0]["state"] == "done"
    assert "models/clip-vit-base-patch32 (given)" in json.dumps(log["weights"])
    shown = next(v for k, v in outputs.items() if k.startswith("cat "))
    assert shown.startswith("# REHEARSAL of table `dbl`")
    assert (checkout / "results" / "rehearsal" / "dbl-rehearsal.md").read_text().startswith("# REHEARSAL")
    assert not (checkout / "results" / "tables" / "dbl.md").exists()


def test_the_log_shows_paths_inside_the_checkout_from_its_root(tmp_path):
    """A log committed from one checkout (results/rehearsal/) names its data, weights and store the same in another."""
    from bench.harness.rehearsal_log import _where
    from bench.provenance import REPO_ROOT

    assert _where(REPO_ROOT / "data" / "synth-rehearsal") == "data/synth-rehearsal"
    assert _where(tmp_path / "data") == str(tmp_path / "data")  # the user's own, outside: as it is


def test_a_rehearsal_runs_each_cell_in_a_process_of_its_own_by_default(capsys):
    """Inline, a cell's peak memory held what the cells before it left allocated (a COCO VSE∞ cell after the CLIP
    cells: 14 GB, 1 GB alone); a rehearsal's default executor is local, a plain sweep's stays inline."""
    from bench.__main__ import main

    for argv, executor in ((["sweep", "dbl", "--rehearse"], "local"), (["sweep", "dbl"], "inline")):
        with pytest.raises(SystemExit) as e:
            main([*argv, "--no-wait"])
        assert e.value.code == 2
        assert f"--no-wait applies to --executor slurm only, not {executor}" in capsys.readouterr().err
