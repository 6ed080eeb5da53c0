"""The trainer: every strategy runs end to end, checkpoints are complete, resume is bitwise equal."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from bench import checkpoint as ckpt
from bench.spec import Cell, Schedule, resolve
from bench.train import TrainingDiverged, run_cell

SMALL_VSE = {"name": "vse_infty", "embed_size": 32, "word_dim": 16}


def _cell(data, strategy="baseline", params=None, matcher=None, epochs=2, **sched) -> Cell:
    return Cell.from_dict({
        "dataset": {"name": "f30k_precomp", "data_root": str(data), "vocab_root": str(data / "vocab")},
        "matcher": dict(matcher or SMALL_VSE),
        "strategy": {"name": strategy, "params": dict(params or {})},
        "schedule": {"epochs": epochs, "batch_size": 32, "lr": 2e-3, "log_every": 1, "max_steps_per_epoch": 6,
                     **sched},
        "eval": {"dev_images": 1000, "batch_size": 64},
        "seed": 0,
    })


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


# ----------------------------------------------------------------------------- recipe defects (issue 11)

TINY_BERT = {"name": "vse_infty_bert", "embed_size": 32,
             "bert_config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                             "intermediate_size": 64, "max_position_embeddings": 64}}


def _built(cell):
    """The resolved cell, its data, and the optimiser of one matcher, as ``run_cell`` builds them."""
    import models
    from bench.train import _make_optimizer, build_matcher, open_data

    cell = resolve(cell)
    data = open_data(cell, models.input_kind(cell.matcher.name))
    model = build_matcher(cell, data)
    return cell, data, model, _make_optimizer(model, cell.schedule)


@pytest.mark.parametrize("matcher, published", [(SMALL_VSE, 1e-2), (TINY_BERT, 1e-4),
                                                ({"name": "xattn", "embed_size": 32, "word_dim": 16}, 0.0)])
def test_optimiser_groups_equal_the_recorded_weight_decay(tiny_data, matcher, published):
    cell, _, _, opt = _built(_cell(tiny_data, matcher=matcher))
    assert cell.schedule.weight_decay == published  # recorded: the matcher's published value
    assert {g["weight_decay"] for g in opt.param_groups} == {published}
    cell, _, _, opt = _built(_cell(tiny_data, matcher=matcher, weight_decay=3e-3))
    assert cell.schedule.weight_decay == 3e-3 and {g["weight_decay"] for g in opt.param_groups} == {3e-3}


def test_clip_decay_groups_follow_the_recorded_weight_decay(tiny_data):
    from bench.train import Data, _make_optimizer, build_matcher

    cell = resolve(_cell(tiny_data, matcher={"name": "clip", "preset": "tiny"}, weight_decay=0.05))
    model = build_matcher(cell, Data("pixels", None, None, build_kwargs={"vocab_words": ["a", "dog"]}))
    groups = {g["name"]: g["weight_decay"] for g in _make_optimizer(model, cell.schedule).param_groups}
    assert {v for k, v in groups.items() if k.endswith("_decay") and "no_decay" not in k} == {0.05}
    assert {v for k, v in groups.items() if "no_decay" in k} == {0.0}
    assert resolve(_cell(tiny_data, matcher={"name": "clip"})).schedule.weight_decay == 0.2


def test_amp_is_opt_in():
    from bench.train import use_amp

    cell = Cell.from_dict({"dataset": {"name": "f30k_precomp"}, "matcher": {"name": "vse_infty"},
                           "strategy": {"name": "baseline"}})
    sched = resolve(cell).schedule
    assert sched.amp is False  # fp32, as the three reference programs
    assert not use_amp(sched, torch.device("cuda")) and not use_amp(sched, torch.device("cpu"))
    amp = replace(sched, amp=True)
    assert use_amp(amp, torch.device("cuda")) and not use_amp(amp, torch.device("cpu"))


@pytest.mark.parametrize("strategy, params, warmup", [
    ("baseline", {}, 1), ("dml", {}, 1), ("dbl", {"scenario": "oss"}, 1), ("dbl", {"scenario": "mss"}, 1),
    ("kd", {}, 0), ("darkrank", {}, 0), ("dbl", {"scenario": "oas", "loss": "abs"}, 0)])
def test_oas_stage2_starts_with_the_hardest_negative(strategy, params, warmup):
    from bench.train import build_strategy
    from strategies import StepContext
    from strategies import losses as L

    cell = resolve(Cell.from_dict({"dataset": {"name": "f30k_precomp"}, "matcher": {"name": "vse_infty"},
                                   "strategy": {"name": strategy, "params": params}}))
    assert cell.schedule.hinge_warmup_epochs == warmup
    import models

    s = build_strategy(cell, models.build("vse_infty", vocab_size=10, embed_size=8, word_dim=4, img_dim=4))
    S = torch.rand(5, 5, generator=torch.Generator().manual_seed(0))
    first = s.base(S, StepContext(epoch=0, step=0, total_steps=10), s.reported)
    assert torch.allclose(first, L.triplet(S, max_violation=not warmup))
    # a schedule that asks for a warm-up still gets it
    explicit = resolve(cell.replace(schedule=Schedule(hinge_warmup_epochs=1)))
    assert explicit.schedule.hinge_warmup_epochs == 1


@pytest.mark.parametrize("matcher, caption_aug, resolved, extra_row, ends", [
    (SMALL_VSE, None, True, 1, True),   # VSE∞: always the <mask> row; its augmentation may touch <start>/<end>
    (SMALL_VSE, False, False, 1, True),
    ({"name": "xattn", "embed_size": 32, "word_dim": 16}, None, False, 0, False),  # DBL OSS/MSS
    ({"name": "xattn", "embed_size": 32, "word_dim": 16}, True, True, 1, False),   # DBL OAS
])
def test_caption_augmentation_setting_and_mask_word(tiny_data, matcher, caption_aug, resolved, extra_row, ends):
    from bench.data.vocab import load_vocab
    from bench.train import train_augment

    vocab_file = tiny_data / "vocab" / "f30k_precomp_vocab.json"
    before = vocab_file.read_bytes()
    sched = {} if caption_aug is None else {"caption_aug": caption_aug}
    cell, data, model, _ = _built(_cell(tiny_data, matcher=matcher, **sched))
    assert cell.schedule.caption_aug is resolved
    n_file = len(load_vocab(vocab_file))
    assert data.build_kwargs["vocab_size"] == len(data.vocab) == n_file + extra_row
    assert model.txt_enc.embed.num_embeddings == n_file + extra_row
    assert vocab_file.read_bytes() == before  # the SCAN file is unchanged; the row exists in memory only
    augment = train_augment(model, cell.schedule)
    dataset = data.train_dataset(augment, seed=0, one_caption_per_image=False)
    assert dataset.token_aug is resolved and dataset.token_aug_ends is ends
    caps = [dataset[i]["caption"] for i in range(300)]
    mask = data.vocab.word2idx.get("<mask>")
    assert any(mask in c.tolist() for c in caps) is resolved
    ends_touched = any(c[0] != 1 or c[-1] != 2 for c in caps)
    assert ends_touched is (resolved and ends)


def test_xattn_trains_with_caption_augmentation(tiny_data, tmp_path):
    xattn = {"name": "xattn", "embed_size": 32, "word_dim": 16, "sim_dim": 16}
    res = run_cell(_cell(tiny_data, matcher=xattn, epochs=1, caption_aug=True, max_steps_per_epoch=2,
                         batch_size=16), tmp_path / "x")
    assert res["status"] == "done" and res["resolved_cell"]["schedule"]["caption_aug"] is True
    from bench.data.vocab import load_vocab

    n_file = len(load_vocab(tiny_data / "vocab" / "f30k_precomp_vocab.json"))
    assert ckpt.load(tmp_path / "x" / "best.pt")["vocab_size"] == n_file + 1  # with the learned <mask> row
