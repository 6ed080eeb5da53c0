"""W&B tracking: a real offline run written by WandbTracker and read back; provoked failures."""

import json
import re
import warnings
from dataclasses import replace
from pathlib import Path

import pytest

from bench.harness.store import RunOptions, run_cell_in_store, run_dir_for
from bench.harness.tracking import WandbTracker, log_suite_summary, offline_runs, read_offline_run
from bench.provenance import git_info
from bench.spec import Cell, Wandb
from tests.test_harness_collect import verdicts  # noqa: F401 - the fixture
from tests.test_harness_store import RankTrainer, make_cell


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def test_offline_round_trip(tmp_path):
    cell = make_cell("dbl").replace(wandb=Wandb(project="itm-test"))
    cell = cell.replace(strategy=replace(cell.strategy, scenario="oss", params={"loss": "abs", "alpha": 1.0}))
    tracker = WandbTracker(cell, tmp_path)
    assert tracker.active
    logged = []
    for step in range(3):
        row = {"train/loss/target": 10.0 / (step + 1), "lr/target": 2e-4}
        if step == 2:
            row |= {"dev/rsum": 321.5, "epoch": 0}
        tracker.log(row, step=step)
        logged.append(row)
    metrics = {"i2t_r1": 50.0, "i2t_r5": 80.0, "i2t_r10": 90.0, "t2i_r1": 40.0, "t2i_r5": 70.0,
               "t2i_r10": 85.0, "rsum": 415.0}
    tracker.finish({"metrics": {"f30k_1k": metrics}, "best_epoch": 0, "cost": {"steps": 3}})

    (run,) = offline_runs(tmp_path)
    back = read_offline_run(run)
    assert Cell.from_dict(back["config"]) == cell  # the cell's plain form (W&B drops empty mappings)
    assert back["project"] == "itm-test" and back["state"] == "finished"
    # name = dataset/matcher/strategy label/seed, tags: suite, scale, data kind, code version, and the parts
    assert back["name"] == "f30k/vse_infty/dbl/s0"
    commit = (git_info()["commit"] or "none")[:10]
    assert set(back["tags"]) == {"suite:t", "scale:None", "data:real", f"code:{commit}", "vse_infty", "f30k", "oss"}
    assert run.name.endswith(f"-{cell.id}-1")  # the run id: the cell id and its generation
    for k, v in metrics.items():
        assert back["summary"][f"test/f30k_1k/{k}"] == v
    assert back["summary"]["best_epoch"] == 0 and back["summary"]["cost/steps"] == 3
    assert back["summary"]["test/metrics"]["_type"] == "table-file" and back["summary"]["test/metrics"]["nrows"] == 1
    history = [h for h in back["history"] if "test/metrics" not in h and not any(k.startswith("test/") for k in h)]
    assert [h["_step"] for h in history] == [0, 1, 2]
    assert [{k: v for k, v in h.items() if k != "_step"} for h in history] == logged


def test_invalid_mode_warns_once_and_training_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "bogus")
    cell = make_cell()
    with pytest.warns(RuntimeWarning, match="W&B init failed") as record:
        out = run_cell_in_store(cell, tmp_path, train_fn=RankTrainer())  # default tracker: WandbTracker
    assert out["state"] == "done" and len([w for w in record if "W&B" in str(w.message)]) == 1
    assert offline_runs(run_dir_for(cell, tmp_path)) == []


def test_log_failure_warns_once_and_later_logs_still_land(tmp_path):
    tracker = WandbTracker(make_cell(), tmp_path)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        tracker.log({"bad": object()}, step=0)
        tracker.log({"bad": object()}, step=1)
        tracker.log({"train/loss/target": 1.0}, step=2)
        tracker.finish(None)
    assert len([w for w in record if "W&B log failed" in str(w.message)]) == 1
    history = read_offline_run(tmp_path)["history"]
    assert [h["train/loss/target"] for h in history if "train/loss/target" in h] == [1.0]


def test_store_run_with_tracker_writes_one_offline_run(tmp_path):
    cell = make_cell()
    run_cell_in_store(cell, tmp_path, train_fn=RankTrainer())
    (run,) = offline_runs(tmp_path)
    assert run.is_relative_to(run_dir_for(cell, tmp_path))
    back = read_offline_run(run)
    assert back["summary"]["test/f30k_1k/rsum"] > 0 and back["config"]["id"] == cell.id


def test_collect_writes_a_suite_summary_run_with_the_verdicts(verdicts):  # noqa: F811 - the fixture
    """`collect` logs the suite's verdicts to one W&B run next to its cells' runs; read back offline."""
    import pandas as pd

    from bench.__main__ import main
    from bench.harness import collect as collect_mod

    suite, root, tmp = verdicts
    main(["collect", str(tmp / "tv.yaml"), "--root", str(root), "--tables", str(tmp / "tables"),
          "--figures", str(tmp / "figures"), "--n-boot", "100"])
    first = offline_runs(root)
    # collecting again replaces the summary run, it does not add a second one
    log_suite_summary(suite, collect_mod.summarize(collect_mod.collect(suite, root), suite, n_boot=100), root,
                      n_boot=100)
    (run,) = offline_runs(root)
    assert len(first) == 1 and run != first[0]
    assert run.is_relative_to(root / "_summary" / "tv")
    back = read_offline_run(run)
    assert back["state"] == "finished" and "suite-summary" in back["tags"]
    summary = pd.read_csv(tmp / "tables" / "tv.csv")
    dbl = summary[(summary["strategy"] == "DBL") & (summary["protocol"] == "f30k_1k")].iloc[0]
    key = "f30k/f30k_1k/VSE/DBL"
    for stat in ("delta_rsum", "ci_low", "ci_high", "p_improve", "p_value", "rsum_mean"):
        assert back["summary"][f"{key}/{stat}"] == pytest.approx(dbl[stat]), stat
    assert back["summary"][f"{key}/holm_5pct"] is True
    assert back["summary"][f"{key}/per_seed_delta"] == pytest.approx(json.loads(dbl["per_seed_deltas"]))
    from bench.harness import stats

    own = summary[~summary["published"].astype(bool) & (summary["strategy_name"] != "baseline")]
    f30k = own[own["protocol"] == "f30k_1k"]
    sd = stats.pooled_sd(f30k["seed_sd_delta"].to_numpy(dtype=float), f30k["delta_seeds"].to_numpy(dtype=int))
    assert back["summary"]["f30k/f30k_1k/seeds_needed_for_delta_1"] == stats.seeds_needed(sd)
    assert back["summary"]["f30k/f30k_1k/min_detectable_delta"] == pytest.approx(stats.min_detectable_effect(sd, 3))
    assert back["summary"]["verdicts"]["_type"] == "table-file"
    assert back["summary"]["verdicts"]["nrows"] == len(summary[~summary["published"].astype(bool)])


def test_group_job_type_project_and_a_forced_rerun_gets_a_new_generation(tmp_path):
    """Group = the table row (suite, dataset, matcher, strategy label) so W&B averages its seeds; job type = the
    strategy label; project per suite; a cell trained again from scratch is a new run (generation 2), a resumed
    one continues its run (tests/test_harness_tracking.py::test_sigterm_then_resume_…)."""
    import subprocess
    import sys

    cell = make_cell("dbl").replace(strategy=Cell.from_dict({"dataset": {"name": "f30k"}, "matcher": {
        "name": "vse_infty"}, "strategy": {"name": "dbl", "label": "DBL abs", "params": {"loss": "abs"}}}).strategy)
    run_cell_in_store(cell, tmp_path, train_fn=RankTrainer())
    run_cell_in_store(cell, tmp_path, RunOptions(force=True), train_fn=RankTrainer())
    folder = run_dir_for(cell, tmp_path)
    assert json.loads((folder / "wandb-run.json").read_text()) == {"run_id": f"{cell.id}-2", "generation": 2}
    (run,) = offline_runs(tmp_path)  # the swapped-in folder holds generation 2's run only
    assert run.name.endswith(f"-{cell.id}-2")
    inspect = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(next(run.glob("*.wandb")))],
                             capture_output=True, text=True, check=True).stdout
    header = next(json.loads(line)["run"] for line in inspect.splitlines() if '"type":"run"' in line)
    assert header["run_group"] == "t/f30k/vse_infty/DBL abs" and header["job_type"] == "DBL abs"
    assert header["project"] == "itm-coop-bench-t" and header["resume"] is True


@pytest.mark.slow
def test_sigterm_then_resume_is_one_wandb_run_with_both_parts_and_test_metrics(tiny_data, tmp_path):
    """Done-when (2) and (7): a cell of 3 epochs x 6 steps (log_every 10: one line per epoch) stopped by SIGTERM
    after its first epoch, then resumed by a local sweep: one offline W&B run holds the history of both parts and
    the test metrics; each part's progress line with the loss is in log.txt and on the job's stdout (.out)."""
    import signal
    import subprocess
    import sys

    import yaml

    from bench.harness.cells import expand
    from bench.harness.config import load_suite

    suite = tmp_path / "resume.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "resume", "data_root": str(tiny_data), "scale": "smoke", "seeds": [0],
        "datasets": [{"name": "f30k_precomp", "label": "f30k"}], "matchers": ["vse_infty"],
        "strategies": [{"name": "baseline"}], "eval": {"dev_images": 10},
        "scales": {"smoke": {"schedule": {"default": {"epochs": 3, "batch_size": 16, "lr": 2e-3,
                                                      "max_steps_per_epoch": 6, "log_every": 10}},
                             "matchers": {"vse_infty": {"embed_size": 32, "word_dim": 16}}}}}))
    (cell,) = expand(load_suite(suite))
    root = tmp_path / "runs"
    command = [sys.executable, "-m", "bench", "run", str(suite), "--cell", cell.id, "--root", str(root)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in first.stdout:  # the job's own output: one line per epoch
        lines.append(line)
        if line.startswith("epoch 1/3 dev rsum"):
            first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=300) == 1, "".join(lines) + first.stderr.read()
    assert re.match(r"epoch 1/3 \[6/6\] loss \d+\.\d{4} lr 2\.00e-03 s/step \d+\.\d{3} eta \d+:\d\d:\d\d$", lines[0])
    folder = run_dir_for(cell, root)
    stopped = json.loads((folder / "interrupted").read_text())
    assert stopped["signal"] == "SIGTERM" and 6 <= stopped["step"] < 18
    out = subprocess.run([sys.executable, "-m", "bench", "sweep", str(suite), "--executor", "local", "--root", str(root)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "suite resume: 1 cells: done 1" in out.stdout, out.stdout + out.stderr
    (job_out,) = (root / ".jobs").glob("*_log.out")  # the local job's stdout
    assert "epoch 3/3 [6/6] loss " in job_out.read_text() and "resumed " in job_out.read_text()
    log = (folder / "log.txt").read_text()
    assert "epoch 1/3 [6/6] loss " in log and "epoch 3/3 [6/6] loss " in log  # both parts, one log
    (run,) = offline_runs(root)  # one run to sync: the resumed part's, holding the first part too
    assert len(list((folder / "wandb").glob("offline-run-*"))) == 2
    back = read_offline_run(run)
    assert back["state"] == "finished" and back["name"] == "f30k/vse_infty/baseline/s0"
    steps = {h["_step"]: h for h in back["history"]}
    assert {6, 12, 18} <= set(steps)  # epoch ends of both parts
    assert all("train/loss/target" in steps[s] and "dev/rsum" in steps[s] for s in (6, 12, 18))
    assert [h["_step"] for h in back["history"]] == sorted(h["_step"] for h in back["history"])
    result = json.loads((folder / "result.json").read_text())
    assert back["summary"]["test/f30k_1k/rsum"] == pytest.approx(result["metrics"]["f30k_1k"]["rsum"])
    # every metric the documented panel set (docs/wandb.md) plots is in such a run
    doc = (Path(__file__).resolve().parents[1] / "docs" / "wandb.md").read_text()
    named = set(re.findall(r"`((?:dev|train/loss|lr|test/f30k_1k)/[a-z0-9_]+|best_epoch|cost/gpu_hours)`", doc))
    logged = {k for h in back["history"] for k in h} | set(back["summary"])
    assert {"dev/rsum", "train/loss/target", "test/f30k_1k/rsum", "cost/gpu_hours"} <= named
    assert named <= logged, named - logged
