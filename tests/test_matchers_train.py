"""Every matcher trains with the baseline strategy on the embedded data: loss falls, RSUM rises far above chance."""

import numpy as np
import pytest

from bench.spec import Cell
from bench.train import run_cell

SMALL = {
    "vse_infty": {"embed_size": 128, "word_dim": 64},
    "sgr": {"embed_size": 64, "word_dim": 32, "sim_dim": 32},
    "saf": {"embed_size": 64, "word_dim": 32, "sim_dim": 32},
    "xattn": {"embed_size": 64, "word_dim": 32, "sim_dim": 32},
    "clip": {"preset": "tiny"},
    # a randomly initialised tiny BERT tower, tokenised with the data's vocabulary (no download)
    "vse_infty_bert": {"embed_size": 128, "bert_config": {"hidden_size": 64, "num_hidden_layers": 2,
                                                          "num_attention_heads": 2, "intermediate_size": 128}},
}
LR = {"vse_infty": 1e-3, "sgr": 2e-3, "saf": 2e-3, "xattn": 2e-3, "clip": 2e-3, "vse_infty_bert": 1e-3}


def chance_rsum(n_images, cpi=5):
    """Expected RSUM of random scores: i2t R@K = 1 − C(n_c − cpi, K)/C(n_c, K), t2i R@K = K / n_images."""
    n_c = n_images * cpi
    total = 0.0
    for k in (1, 5, 10):
        miss = np.prod([(n_c - cpi - j) / (n_c - j) for j in range(k)])
        total += 100 * (1 - miss) + 100 * k / n_images
    return total


N_TEST = 50


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """A little more training data than `tiny` (400 images), so a few epochs show real learning."""
    from bench.data.synth import Preset, generate

    preset = Preset(regions=12, dim=64, f30k={"train": 400, "dev": N_TEST, "test": N_TEST},
                    coco_train=20, coco_dev=10, coco_fold=4, image_size=32)
    return generate(tmp_path_factory.mktemp("synth") / "small", preset=preset, seed=0)


class Losses:
    def __init__(self):
        self.values = []

    def log(self, row, step):
        self.values += [v for k, v in row.items() if k.startswith("train/loss/")]


@pytest.mark.slow
@pytest.mark.parametrize("matcher", sorted(SMALL))
def test_matcher_trains_far_above_chance(small_data, tmp_path, matcher):
    cell = Cell.from_dict({
        "dataset": {"name": "f30k_precomp", "data_root": str(small_data)},
        "matcher": {"name": matcher, **SMALL[matcher]},
        "strategy": {"name": "baseline"},
        # sum over negatives throughout: the hardest-negative hinge from scratch needs far more steps
        "schedule": {"epochs": 4, "batch_size": 50, "lr": LR[matcher], "log_every": 1, "hinge_warmup_epochs": 4},
        "seed": 0,
    })
    losses = Losses()
    res = run_cell(cell, tmp_path / matcher, tracker=losses)
    curve = [row["rsum"] for row in res["dev_curve"]]
    chance = chance_rsum(N_TEST)
    first, last = np.mean(losses.values[:5]), np.mean(losses.values[-5:])
    assert last < first, f"{matcher}: loss did not fall ({first:.3f} → {last:.3f})"
    assert max(curve) > curve[0], f"{matcher}: dev RSUM never rose above its first epoch {curve}"
    rsum = res["metrics"]["f30k_1k"]["rsum"]
    assert rsum > 1.5 * chance, f"{matcher}: test RSUM {rsum:.1f} not far above chance {chance:.1f}"
