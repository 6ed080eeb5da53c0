"""What each SLURM job asks for: the cell's resources, placed by the cluster profile, one array per
resource shape, shown by ``sweep --dry-run`` (submitit's own ``#SBATCH`` header) and read back from the
real local cluster with ``scontrol show job``; time estimates beside the requested time."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.harness.cells import expand
from bench.harness.config import load_suite
from bench.harness.estimate import TIME_STEPS_MIN, cell_estimates, hours_of, time_request
from bench.harness.show import rate_mode
from bench.harness.store import run_cell_in_store
from bench.harness.sweep import SUBMITTED_FILE
from bench.spec import Cell, Schedule

REPO = Path(__file__).resolve().parents[1]
# The README's dry run, verbatim (test_readme_dry_run_as_written checks the README still says it).
README_DRY_RUN = ".venv/bin/python -m bench sweep dbl scale=full --executor slurm --cluster slurm/profiles/example-gpu.yaml --dry-run data_root=data/scan weights.clip=models/clip-vit-base-patch32 weights.bert=models/bert-base-uncased"  # noqa: E501


@pytest.fixture
def full_inputs(rehearsal_data, published_weights) -> list[str]:
    """The overrides giving `dbl scale=full` every input its cells read (checked before any dry run):
    data of the published shapes and the CLIP and BERT folders."""
    return [f"data_root={rehearsal_data}", f"weights.clip={published_weights['clip']}",
            f"weights.bert={published_weights['bert']}"]


def _cli(args: list, cwd: Path = REPO, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=300)
    if check:
        assert out.returncode == 0, f"{args}\n{out.stdout}\n{out.stderr}"
    return out


def parse_dry_run(text: str) -> list[dict]:
    """Arrays of a dry run: {"title", "sbatch": {option: value}, "cells": [ids], "caps", "lines"}."""
    arrays = []
    for line in text.splitlines():
        if line.startswith("array "):
            arrays.append({"title": line, "sbatch": {}, "cells": [], "caps": [], "lines": []})
        elif arrays and line.startswith("  #SBATCH --"):
            key, _, value = line[len("  #SBATCH --"):].partition("=")
            arrays[-1]["sbatch"][key] = value
        elif arrays and line.startswith("  cap: "):
            arrays[-1]["caps"].append(line[len("  cap: "):])
        elif arrays and re.match(r"  [0-9a-f]{12}  ", line):
            arrays[-1]["cells"].append(line.split()[0])
            arrays[-1]["lines"].append(line)
    return arrays


def _array_of(arrays: list[dict], cells: list[dict], matcher: str) -> dict:
    ids = {c.id for c in cells if c.matcher.name == matcher}
    (array,) = [a for a in arrays if ids & set(a["cells"])]  # all of a matcher's cells in one array
    assert ids <= set(array["cells"])
    return array


@pytest.mark.slow  # the session's generated CLIP and BERT folders (~15 s once)
def test_readme_dry_run_as_written(tmp_path, rehearsal_data, published_weights, full_inputs):
    """dbl at scale=full on the example GPU profile: SGR/SAF (2,880 min), CLIP (16 CPUs, 96 GB) and the
    other matchers (1,440 min) in arrays of their own, one GPU each; nothing submitted. The README's
    folders are the published-shape data and generated weights, under the README's paths."""
    text = (REPO / "README.md").read_text()
    assert README_DRY_RUN in text
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    (tmp_path / "slurm").symlink_to(REPO / "slurm")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "scan").symlink_to(rehearsal_data)
    (tmp_path / "models").mkdir()
    for folder in published_weights.values():
        (tmp_path / "models" / folder.name).symlink_to(folder)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(["bash", "-c", README_DRY_RUN], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "nothing is submitted" in out.stdout.splitlines()[0]
    arrays = parse_dry_run(out.stdout)
    cells = expand(load_suite("dbl", ["scale=full", *full_inputs]))  # the same weights elsewhere: the same ids
    assert sorted(c for a in arrays for c in a["cells"]) == sorted(c.id for c in cells)  # each cell once
    # each cell asks for the time its estimate gives (x 1.5 + 15 min, on the ladder, at most its time_min): the
    # committed H200 rates on this data; vse_infty_bert, not measured, its resources' 1,440 minutes
    estimates = hours_of(cell_estimates(cells, tmp_path / "results" / "runs"))
    by_id = {c.id: c for c in cells}
    for array in arrays:
        times = {time_request(by_id[c], estimates[c])[0] for c in array["cells"]}
        assert times == {int(array["sbatch"]["time"])}, array["title"]
        shape = {(by_id[c].resources.cpus, by_id[c].resources.mem_gb) for c in array["cells"]}
        assert shape == {(int(array["sbatch"]["cpus-per-task"]), int(array["sbatch"]["mem"][:-2]))}
        sb = array["sbatch"]
        assert sb["gpus-per-node"] == "1" and sb["job-name"].startswith("dbl:0:1gpu-")
        # where it goes: the profile's
        assert (sb["partition"], sb["account"], sb["qos"]) == ("gpu", "my-project", "normal") and "requeue" in sb
        assert re.fullmatch(rf"0-{len(array['cells']) - 1}%\d+", sb["array"])
        assert not array["caps"]
    # the profile's max_concurrent_gpus: 16 GPUs for the whole sweep, shared among its arrays
    assert sum(int(a["sbatch"]["array"].rpartition("%")[2]) for a in arrays) <= 16
    assert {int(_array_of(arrays, cells, "vse_infty_bert")["sbatch"]["time"])} == {1440}
    assert {by_id[c].resources.cpus for a in arrays for c in a["cells"] if by_id[c].matcher.name == "clip"} == {16}
    assert re.search(r"^total: [0-9.]+ GPU-hours requested, [0-9.]+ GPU-hours estimated \(GPU rates of NVIDIA H200, "
                     r"2026-12-04; .*\), 18 cell\(s\) without an estimate; "
                     r"at most 16 GPUs at once \(max_concurrent_gpus\)$", out.stdout, re.M)
    assert not (tmp_path / "results").exists()  # nothing submitted, nothing written


def _profile(tmp_path: Path, name: str, **keys) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"partition": "gpu", **keys}))
    return path


@pytest.mark.slow  # the session's generated CLIP and BERT folders (~15 s once)
def test_profile_caps_are_printed_and_a_cell_it_cannot_hold_is_named(tmp_path, full_inputs):
    capped = _profile(tmp_path, "short", max_time_min=20, max_gpus_per_node=4)
    out = _cli(["sweep", "dbl", "scale=full", *full_inputs, "--executor", "slurm", "--cluster", capped, "--dry-run",
                "--root", tmp_path / "runs"]).stdout
    arrays = parse_dry_run(out)
    cells = expand(load_suite("dbl", ["scale=full", *full_inputs]))
    sgr = _array_of(arrays, cells, "sgr")
    assert sgr["sbatch"]["time"] == "20"
    assert sgr["caps"] == ["time_min 30 min capped to 20 by max_time_min of profile short (a cut cell resumes "
                           "from its checkpoint when requeued)"] or re.fullmatch(
        r"time_min \d+ min capped to 20 by max_time_min of profile short \(a cut cell resumes from its checkpoint "
        r"when requeued\)", sgr["caps"][0])
    assert all(a["sbatch"]["time"] == "20" for a in arrays)  # every request above the cap: lowered to it
    # GPUs cannot be capped: every cell asking for more is named, exit 2, nothing submitted (no cluster needed)
    no_gpus = _profile(tmp_path, "cpu-only", max_gpus_per_node=0)
    for extra in (["--dry-run"], []):
        bad = _cli(["sweep", "dbl", "scale=full", *full_inputs, "--executor", "slurm", "--cluster", no_gpus, *extra,
                    "--root", tmp_path / "runs"], check=False)
        assert bad.returncode == 2, bad.stderr
        assert bad.stderr.count("asks for 1 GPU(s) per node but cluster profile cpu-only allows 0") == len(cells)
        first = cells[0]
        assert f"cell {first.id} (f30k/vse_infty/baseline/s0) asks for 1 GPU(s)" in bad.stderr
        assert "max_gpus_per_node in " + str(no_gpus) in bad.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "jobs").exists()


def test_slurm_only_flags_are_refused_for_other_executors(tmp_path):
    for flag in (["--cluster", "local"], ["--no-wait"], ["--dry-run"]):
        out = _cli(["sweep", "demo", "--executor", "local", *flag, "--root", tmp_path / "runs"], check=False)
        assert out.returncode == 2 and f"{flag[0]} applies to --executor slurm only" in out.stderr
    # and SLURM without a profile (it planned full-scale cells at the default partition's 1 CPU / 1 GB)
    out = _cli(["sweep", "demo", "--executor", "slurm", "--root", tmp_path / "runs"], check=False)
    assert out.returncode == 2 and "error: --executor slurm needs --cluster PROFILE" in out.stderr
    assert not (tmp_path / "runs").exists()


def _rates(tmp_path: Path, rates: dict) -> Path:
    path = tmp_path / "gpu-rates.json"
    path.write_text(json.dumps({"card": "NVIDIA H200", "torch": "2.13.0+cu128", "date": "2026-12-04",
                                "commit": None, "rates": rates}))
    return path


@pytest.mark.slow  # the session's generated CLIP and BERT folders (~15 s once)
def test_gpu_rates_give_estimates_and_warn_below_the_request(tmp_path, rehearsal_data, full_inputs):
    """`show … scale=full` with make bench-gpu's rates: GPU-hours per cell and for the table, the card
    named; a request below the estimate warned about, in `show` and in the dry run."""
    rates = _rates(tmp_path, {"vse_infty": {"fp32": {"train_samples_per_s": 1000.0, "score_us_per_pair": 1.0},
                                            "bf16": {"train_samples_per_s": 4000.0, "score_us_per_pair": None}},
                              "sgr": {"fp32": {"train_samples_per_s": 0.1, "score_us_per_pair": None}}})
    root = tmp_path / "runs"
    out = _cli(["show", "dbl", "scale=full", *full_inputs, "--root", root, "--gpu-rates", rates]).stdout
    # the data's training captions in batches of 128, 25 epochs; baseline = 1 forward pass
    n_train = sum(1 for _ in open(rehearsal_data / "f30k_precomp" / "train_caps.txt"))
    hours = 25 * math.ceil(n_train / 128) * 128 / 1000.0 / 3600
    line = next(x for x in out.splitlines() if "f30k/vse_infty/baseline/s0 " in x)
    job_min = next(m for m in TIME_STEPS_MIN if m >= hours * 60 * 1.5 + 15)  # x the safety factor, on the ladder
    assert f"{hours:.3g} h (estimate: 1000 samples/s fp32 on NVIDIA H200, x1 forward passes (evaluations not " \
        f"estimated)); job time {job_min} min (estimate {hours * 60:.0f} min x 1.5 + 15 min)" in line \
        and "WARNING" not in line
    dbl = next(x for x in out.splitlines() if "f30k/vse_infty/DBL abs/s0 " in x)
    assert f"{2 * hours:.3g} h (estimate: 1000 samples/s fp32 on NVIDIA H200, x2 forward passes" in dbl
    sgr = next(x for x in out.splitlines() if "f30k/sgr/baseline/s0 " in x)
    sgr_steps = int(re.search(r"f30k/sgr/baseline/s0 +(\d+) ", sgr).group(1))  # its own schedule
    sgr_min = sgr_steps * 128 / 0.1 / 60  # far above its 2,880 minutes
    assert f"WARNING: resources.time_min 2880 min is below the estimated {sgr_min:.0f} min" in sgr
    assert "no recorded step time" in next(x for x in out.splitlines() if "f30k/clip/baseline/s0 " in x)
    n_rated = sum(1 for c in expand(load_suite("dbl", ["scale=full", *full_inputs]))
                  if c.matcher.name in ("vse_infty", "sgr"))
    assert re.search(rf"^total: [0-9.e+]+ GPU-hours estimated for {n_rated} pending cell\(s\) \({n_rated} from the GPU "
                     r"rates of NVIDIA H200 \(2026-12-04\), 0 from done cells\)", out, re.M)
    assert "GPU rates: NVIDIA H200, 2026-12-04 (torch 2.13.0+cu128" in out
    assert "WARNING: 18 cell(s) request less time" in out  # every SGR cell
    dry = _cli(["sweep", "dbl", "scale=full", *full_inputs, "--executor", "slurm", "--cluster", "example-gpu",
                "--dry-run", "--root", root, "--gpu-rates", rates]).stdout
    sgr_line = next(x for x in dry.splitlines() if "f30k/sgr/baseline/s0 " in x)
    assert "requested 2880 min (estimate " in sgr_line and "at most the cell's resources.time_min)" in sgr_line
    assert f", estimate {sgr_min:.0f} min (" in sgr_line and "WARNING: its resources.time_min 2880 min" in sgr_line
    vse_line = next(x for x in dry.splitlines() if "f30k/vse_infty/baseline/s0 " in x)
    assert f"requested {job_min} min (estimate {hours * 60:.0f} min x 1.5 + 15 min), estimate {hours * 60:.0f} min" \
        in vse_line and "WARNING" not in vse_line
    assert re.search(r"^total: [0-9.]+ GPU-hours requested, [0-9.]+ GPU-hours estimated \(GPU rates of NVIDIA H200, "
                     r"2026-12-04;", dry, re.M)
    # the mode comes from the schedule (fp32 unless precision/compile are set)
    plain = Cell.from_dict({"dataset": {"name": "f30k_precomp"}, "matcher": {"name": "sgr"},
                            "strategy": {"name": "baseline"}})
    assert [rate_mode(plain.replace(schedule=Schedule.from_dict(s))) for s in
            ({}, {"precision": "bf16"}, {"precision": "bf16", "compile": True})] == ["fp32", "bf16", "bf16+compile"]
    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    bad = _cli(["show", "dbl", "--root", root, "--gpu-rates", broken], check=False)
    assert bad.returncode == 2 and f"{broken}: not a GPU rates file" in bad.stderr


def test_dry_run_estimates_from_a_done_cell(tiny_data, tmp_path):
    """A done cell of the same matcher, batch and strategy gives the estimate beside the requested time;
    a request below it is warned about."""
    spec = {"name": "est", "datasets": [{"name": "f30k_precomp", "label": "tiny", "data_root": str(tiny_data)}],
            "matchers": [{"name": "vse_infty"}], "strategies": [{"name": "baseline"}], "seeds": [0],
            "scale": "smoke",
            "scales": {"smoke": {"schedule": {"default": {"epochs": 1, "batch_size": 32, "lr": 2e-3,
                                                          "max_steps_per_epoch": 2}},
                                 "matchers": {"vse_infty": {"embed_size": 32, "word_dim": 16}}}},
            "eval": {"dev_images": 30}, "resources": {"default": {"gpus": 0, "cpus": 1, "time_min": 1}}}
    suite = tmp_path / "est.yaml"
    suite.write_text(yaml.safe_dump(spec))
    root = tmp_path / "runs"
    (cell,) = expand(load_suite(suite))
    assert run_cell_in_store(cell, root, tracker_factory=None)["state"] == "done"
    step = json.loads(next(root.glob("est/*/result.json")).read_text())["cost"]["step_time_s"]
    epochs = math.ceil(180 / (2 * step))  # a cell planned to train ~3 minutes
    out = _cli(["sweep", suite, f"schedule.default.epochs={epochs}", "--executor", "slurm", "--cluster", "local",
                "--dry-run", "--root", root]).stdout
    (array,) = parse_dry_run(out)
    (line,) = array["lines"]
    wall = epochs * 2 * step / 60
    assert "requested 1 min (estimate " in line and "at most the cell's resources.time_min)" in line
    assert f"estimate {wall:.0f} min (1 done cell(s) of this matcher, batch and strategy)" in line
    assert "WARNING: its resources.time_min 1 min is below the estimate" in line
    assert "1 cell(s) request less time than estimated" in out


# ---------------------------------------------------------------------------------------------- on SLURM
def _scontrol(job_id: str) -> dict:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=20,
                         check=True).stdout
    return dict(re.findall(r"(\S+?)=(\S*)", out.splitlines()[0]))


def _minutes(limit: str) -> int:
    days, _, rest = limit.rpartition("-")
    h, m, s = (int(x) for x in rest.split(":"))
    return (int(days) if days else 0) * 1440 + h * 60 + m + (1 if s else 0)


def _megabytes(value: str) -> int:
    number, unit = float(value[:-1]), value[-1].upper()
    return int(number * {"M": 1, "G": 1024, "T": 1024 * 1024}[unit])


def _check_arrays_match_dry_run(suite_args: list, profile, root: Path) -> list[dict]:
    """Dry run, then the same sweep submitted (--no-wait, held): each SLURM array's record matches the
    header the dry run printed for its cells. Returns the dry run's arrays with their SLURM records."""
    dry = _cli(["sweep", *suite_args, "--executor", "slurm", "--cluster", profile, "--dry-run", "--root", root])
    arrays = parse_dry_run(dry.stdout)
    assert not root.exists()
    sub = _cli(["sweep", *suite_args, "--executor", "slurm", "--cluster", profile, "--no-wait", "--root", root])
    submitted = {p.parent.name: json.loads(p.read_text())["job_id"] for p in root.glob(f"*/*/{SUBMITTED_FILE}")}
    job_arrays = []
    try:
        for array in arrays:
            ids = {submitted[c] for c in array["cells"]}
            (array_id,) = {j.split("_")[0] for j in ids}  # the cells of one dry-run array: one SLURM array
            assert len(ids) == len(array["cells"])
            job_arrays.append(array_id)
            name = array["sbatch"]["job-name"]  # <suite>:<stage>:<shape>, as squeue shows it
            assert f"array {array_id} ({name}): {len(array['cells'])} cell(s)" in sub.stderr
            record = _scontrol(array_id)  # a held array: one record for all its tasks
            sb = array["sbatch"]
            assert record["JobName"] == name and re.fullmatch(r"[\w.+-]+:\d+:\d+gpu(-\w+)*", name)
            assert record.get("WCKey", "") in ("", "*", "(null)") and "wckey" not in sb  # none unless a profile says
            assert _minutes(record["TimeLimit"]) == int(sb["time"])
            assert _megabytes(record["MinMemoryNode"]) == _megabytes(sb["mem"].replace("GB", "G"))
            assert record["CPUs/Task"] == sb["cpus-per-task"] and record["Partition"] == sb["partition"]
            assert record.get("TresPerNode", "") == (f"gres:gpu:{sb['gpus-per-node']}" if "gpus-per-node" in sb else "")
            # a held array is one record for all its tasks; one cell is a plain job (no --array)
            assert record.get("ArrayTaskId") == sb.get("array")
            array["record"] = record
            array["job_id"] = array_id
    finally:
        if job_arrays:
            subprocess.run(["scancel", *job_arrays], capture_output=True, timeout=30)
    assert len(set(job_arrays)) == len(arrays) == len(job_arrays)
    return arrays


def _held(tmp_path: Path, **caps) -> Path:
    """The local cluster's profile, its jobs held (they are read back, never run)."""
    raw = yaml.safe_load((REPO / "slurm" / "profiles" / "local.yaml").read_text())
    path = tmp_path / "held.yaml"
    path.write_text(yaml.safe_dump({**raw, **caps, "additional": {"hold": True}}))
    return path


@pytest.mark.slurm
def test_each_array_asks_for_its_cells_resources(slurm_cluster, tiny_data, tmp_path):
    """Two matchers with other GPUs, CPUs, memory and time, and OAS cells after their baselines: one array
    per stage and shape, each with its own limits in SLURM, dependents held by afterok across arrays."""
    raw = {"name": "shapes",
           "datasets": [{"name": "f30k_precomp", "label": "tiny", "data_root": str(tiny_data)}],
           "matchers": [{"name": "vse_infty"}, {"name": "sgr"}],
           "strategies": ["baseline", {"name": "kd"}], "seeds": [0], "scale": "smoke",
           "scales": {"smoke": {"schedule": {"default": {"epochs": 1, "batch_size": 32, "lr": 2e-3,
                                                         "max_steps_per_epoch": 2}}}},
           "resources": {"default": {"gpus": 1, "cpus": 1, "mem_gb": 1, "time_min": 7},
                         "sgr": {"gpus": 2, "cpus": 2, "mem_gb": 3, "time_min": 50}}}
    suite = tmp_path / "shapes.yaml"
    suite.write_text(yaml.safe_dump(raw))
    profile = _held(tmp_path, max_cpus_per_task=2, max_mem_gb=2, max_time_min=40)
    arrays = _check_arrays_match_dry_run([suite], profile, tmp_path / "runs")
    cells = expand(load_suite(suite))
    by_id = {c.id: c for c in cells}
    shapes = {(re.search(r"\((stage \d)\)", a["title"]).group(1), by_id[a["cells"][0]].matcher.name):
              (a["sbatch"]["gpus-per-node"], a["sbatch"]["cpus-per-task"], a["sbatch"]["mem"], a["sbatch"]["time"])
              for a in arrays}
    # times from the estimates (a few minutes on the tiny data: the ladder's 30 min), at most the cell's own
    assert shapes == {("stage 0", "vse_infty"): ("1", "1", "1GB", "7"), ("stage 0", "sgr"): ("2", "2", "2GB", "30"),
                      ("stage 1", "vse_infty"): ("1", "1", "1GB", "7"), ("stage 1", "sgr"): ("2", "2", "2GB", "30")}
    sgr = next(a for a in arrays if by_id[a["cells"][0]].matcher.name == "sgr")
    assert sgr["caps"] == ["mem_gb 3 GB capped to 2 by max_mem_gb of profile held"]
    # each OAS array waits on the baseline array of its matcher (afterok across arrays)
    for array in arrays:
        if "stage 1" in array["title"]:
            parents = {d for c in array["cells"] for d in by_id[c].depends_on}
            (parent,) = [a for a in arrays if set(a["cells"]) & parents]
            assert re.search(rf"afterok:{parent['job_id']}(?!\d)", array["record"]["Dependency"])


@pytest.mark.slurm
def test_dbl_smoke_arrays_on_the_local_cluster_match_the_dry_run(slurm_cluster, tiny_data, tmp_path):
    """The paper table's sweep at scale=smoke on the tiny data (both datasets: CLIP reads COCO's images too):
    SGR/SAF (2,880 min) apart from the others."""
    arrays = _check_arrays_match_dry_run(["dbl", "scale=smoke", f"data_root={tiny_data}"], _held(tmp_path),
                                         tmp_path / "runs")
    # times from the estimates (minutes on the tiny data): the ladder's first step; vse_infty_bert, whose rate was
    # not measured, its resources' 1,440 minutes
    assert sorted(a["sbatch"]["time"] for a in arrays) == ["1440", "30"]
    assert all(a["record"]["TresPerNode"] == "gres:gpu:1" for a in arrays)


def test_oas_dry_run_each_student_waits_for_its_own_baseline_and_the_sweep_shares_a_gpu_cap(tmp_path):
    """Done-when (3), the plan: `oas` at full scale, two seeds: every array of students waits (afterok) for the job
    of its own baseline only, so a failed baseline cancels its students and no other; job names
    <suite>:<stage>:<shape>; with max_concurrent_gpus the arrays' tasks at once add up to at most the cap; the
    dry run ends with the GPU-hours requested and estimated."""
    from bench.harness.dryrun import dry_run

    suite = load_suite("oas", ["scale=full", "seeds=[0,1]"])
    cells = {c.id: c for c in expand(suite)}
    capped = _profile(tmp_path, "capped", max_concurrent_gpus=40, array_parallelism=16)
    text = dry_run(suite, root=tmp_path / "runs", cluster=str(capped))
    arrays = parse_dry_run(text)
    assert sorted(c for a in arrays for c in a["cells"]) == sorted(cells)
    students = [a for a in arrays if "(stage 1)" in a["title"]]
    assert len(students) == len({c.depends_on[0] for c in cells.values() if c.depends_on})  # one per baseline
    for array in students:
        (parent,) = {cells[c].depends_on[0] for c in array["cells"]}
        assert f"after its parent cell(s) {parent} only (afterok)" in array["title"]
        assert array["sbatch"]["dependency"] == f"'afterok:<job of cell {parent} (array " \
            f"{next(i for i, a in enumerate(arrays, 1) if parent in a['cells'])})>'"
        assert array["sbatch"]["kill-on-invalid-dep"] == "yes"
    assert all(re.fullmatch(r"oas:[01]:1gpu-\d+cpu-\d+G-\d+m", a["sbatch"]["job-name"]) for a in arrays)
    at_once = [int(a["sbatch"]["array"].rpartition("%")[2]) if "array" in a["sbatch"] else 1 for a in arrays]
    assert sum(at_once) <= 40 and all(n >= 1 for n in at_once) and max(at_once) <= 16
    assert re.search(r"^total: [0-9.]+ GPU-hours requested, [0-9.]+ GPU-hours estimated \(GPU rates of NVIDIA H200, "
                     r"2026-12-04; .*\); at most 40 GPUs at once \(max_concurrent_gpus\)$", text, re.M)
    # the whole script of each array: the setup (this checkout on PYTHONPATH; the profile has no lines of its own)
    # and the command its jobs run
    assert text.count("  # setup") == text.count("  # command") == len(arrays) and "submitit.core._submit" in text
    too_few = _profile(tmp_path, "tiny-cap", max_concurrent_gpus=2)
    with pytest.raises(Exception, match=r"max_concurrent_gpus 2 of cluster profile tiny-cap is below the \d+ GPU"):
        dry_run(suite, root=tmp_path / "runs", cluster=str(too_few))
