"""The trainer: every strategy runs end to end, checkpoints are complete, resume is bitwise equal."""

import json

import numpy as np
import pytest
import torch

from bench import checkpoint as ckpt
from bench.train import TrainingDiverged, run_cell

SMALL_VSE = {"name": "vse_infty", "embed_size": 32, "word_dim": 16}


def _cell(data, strategy="baseline", params=None, matcher=None, epochs=2, **sched):
    return {
        "dataset": {"name": "f30k_precomp", "data_root": str(data), "vocab_root": str(data / "vocab")},
        "matcher": dict(matcher or SMALL_VSE),
        "strategy": {"name": strategy, "params": dict(params or {})},
        "schedule": {"epochs": epochs, "batch_size": 32, "lr": 2e-3, "log_every": 1, "max_steps_per_epoch": 6,
                     **sched},
        "eval": {"dev_images": 1000, "batch_size": 64},
        "seed": 0,
    }


class Recorder:
    """A tracker that keeps what the trainer logs (the W&B tracker has the same two methods)."""

    def __init__(self):
        self.rows = []

    def log(self, row, step):
        self.rows.append((step, dict(row)))


def test_baseline_run_writes_result_checkpoints_and_ranks(tiny_data, tmp_path):
    tracker = Recorder()
    res = run_cell(_cell(tiny_data), tmp_path / "run", tracker=tracker)
    assert res["status"] == "done"
    m = res["metrics"]["f30k_1k"]
    assert set(m) >= {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum"}
    assert len(res["dev_curve"]) == 2 and res["best_epoch"] in (0, 1)
    assert (tmp_path / "run" / "best.pt").exists() and (tmp_path / "run" / "last.pt").exists()
    ranks = np.load(tmp_path / "run" / "ranks.npz")
    n_test = 30
    assert ranks["f30k_1k/i2t"].shape == (n_test,) and ranks["f30k_1k/t2i"].shape == (5 * n_test,)
    # recall recomputed from the saved ranks equals the reported one
    assert m["i2t_r1"] == pytest.approx(100 * np.mean(ranks["f30k_1k/i2t"] < 1))
    assert res["cost"]["forward_passes_per_step"] == 1 and res["cost"]["steps"] > 0
    logged = {k for _, row in tracker.rows for k in row}
    assert {"train/loss/target", "lr/target", "dev/rsum"} <= logged
    json.dumps(res)  # the result body is JSON-serialisable


def _weights(path):
    return ckpt.load(path)["weights"]


@pytest.mark.parametrize("strategy,params,stop", [
    ("baseline", {}, 3),
    ("dbl", {"loss": "abs", "scenario": "oss"}, 5),
    ("momentum", {"loss": "dino", "m0": 0.9}, 4),
])
def test_resume_from_a_checkpoint_is_bitwise_equal(tiny_data, tmp_path, strategy, params, stop):
    cell = _cell(tiny_data, strategy, params)
    full = run_cell(cell, tmp_path / "full")
    # interrupted mid-epoch (a clean preemption), then resumed until the end
    part = run_cell(cell, tmp_path / "part", stop_after_steps=stop)
    assert part["status"] == "interrupted"
    resumed = run_cell(cell, tmp_path / "part")
    assert resumed["metrics"] == full["metrics"]
    assert resumed["dev_curve"] == full["dev_curve"]
    a, b = _weights(tmp_path / "full" / "best.pt"), _weights(tmp_path / "part" / "best.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_oas_starts_from_the_baseline_checkpoint_and_checks_it(tiny_data, tmp_path):
    base = run_cell(_cell(tiny_data), tmp_path / "base")
    best = tmp_path / "base" / "best.pt"
    with pytest.raises(ValueError, match="needs the trained baseline"):
        run_cell(_cell(tiny_data, "dbl", {"scenario": "oas"}), tmp_path / "no-anchor")
    res = run_cell(_cell(tiny_data, "dbl", {"scenario": "oas", "loss": "rel"}, epochs=1), tmp_path / "oas",
                   anchor_checkpoint=best)
    assert res["status"] == "done" and res["cost"]["forward_passes_per_step"] == 2
    assert res["cost"]["backward_passes_per_step"] == 1
    assert base["status"] == "done"
    other = dict(SMALL_VSE, embed_size=48)
    with pytest.raises(ckpt.CheckpointError, match="use the baseline run of the same matcher"):
        run_cell(_cell(tiny_data, "kd", matcher=other, epochs=1), tmp_path / "bad", anchor_checkpoint=best)


def test_a_corrupted_last_checkpoint_falls_back_to_the_previous_one(tiny_data, tmp_path):
    cell = _cell(tiny_data, checkpoint_every=1)
    full = run_cell(cell, tmp_path / "full")
    run_cell(cell, tmp_path / "part", stop_after_steps=2)
    last = tmp_path / "part" / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])  # torn file
    with pytest.warns(UserWarning, match="corrupted or truncated"):
        resumed = run_cell(cell, tmp_path / "part")
    assert resumed["metrics"] == full["metrics"]


def test_non_finite_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tiny_data, tmp_path):
    cell = _cell(tiny_data, lr=1e30, checkpoint_every=1)
    with pytest.raises(TrainingDiverged, match="non-finite loss"):
        run_cell(cell, tmp_path / "run")
    ckpt.verify(tmp_path / "run" / "last.pt")
    assert not (tmp_path / "run" / "ranks.npz").exists()
