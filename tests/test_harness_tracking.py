"""W&B tracking: a real offline run written by WandbTracker and read back; provoked failures."""

import json
import warnings
from dataclasses import replace

import pytest

from bench.harness.store import run_cell_in_store, run_dir_for
from bench.harness.tracking import WandbTracker, log_suite_summary, offline_runs, read_offline_run
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
    assert set(back["tags"]) == {"vse_infty", "f30k", "oss"}
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
