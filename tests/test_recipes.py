"""The shipped recipes (bench/recipes/) as the six paper suites resolve them: each published value as
the reference programs have it, written once."""

import re
from pathlib import Path

import pytest
import yaml

from bench.harness.cells import expand
from bench.harness.config import RECIPES_DIR, available_recipes, load_suite

PAPER_SUITES = ["dbl", "oas", "oss", "mss", "ablation", "cohort"]


def _cells(suite, *overrides):
    return expand(load_suite(suite, ["seeds=[0]", *overrides]))


def _one(cells, matcher, dataset, strategy="baseline"):
    (c,) = [c for c in cells if c.matcher.name == matcher and c.dataset_label == dataset
            and c.strategy.label == strategy]
    return c.schedule


@pytest.mark.parametrize("suite", ["dbl", "oas", "oss", "mss"])
def test_dbl_matcher_follows_dbls_scripts(suite):
    cells = _cells(suite)
    f30k, coco = _one(cells, "xattn", "f30k"), _one(cells, "xattn", "coco")
    assert (f30k.epochs, f30k.lr_decay_epochs, coco.epochs, coco.lr_decay_epochs) == (40, [30], 20, [10])
    # caption augmentation: DBL's OAS program on, its OSS and MSS programs off (both stages in OAS)
    assert {c.schedule.caption_aug for c in cells if c.matcher.name == "xattn"} == {suite == "oas"}


@pytest.mark.parametrize("suite", PAPER_SUITES)
def test_fp32_and_vse_weight_decay_as_the_reference(suite):
    cells = _cells(suite)
    assert all(c.schedule.amp is False for c in cells)
    assert {c.schedule.weight_decay for c in cells if c.matcher.name == "vse_infty"} == {1e-2}
    assert {c.schedule.weight_decay for c in cells if c.matcher.name == "vse_infty_bert"} <= {1e-4}
    assert all(c.recipe["full"].startswith("published@") for c in cells)


def test_oas_stage2_default_and_variant():
    for option, lr in (("lr_2e-5", 2e-5), ("lr_2e-4", 2e-4)):
        cells = _cells("oas", f"recipes.oas_stage2={option}")
        kd = _one(cells, "vse_infty", "f30k", "KD")
        assert (kd.epochs, kd.lr, kd.lr_schedule, kd.lr_decay_epochs) == (30, lr, "constant", [])
        kd = _one(cells, "vse_infty", "coco", "KD")
        assert (kd.epochs, kd.lr, kd.lr_schedule, kd.lr_decay_epochs) == (20, 2e-4, "step", [10])


def test_one_sided_dml_row_in_table3():
    cells = _cells("oss")
    rows = {c.strategy.label: c.strategy.params for c in cells if c.strategy.name == "dml"}
    assert rows["DML"]["symmetric"] is True and rows["DML one-sided (reference)"]["symmetric"] is False


def test_each_published_value_is_written_once():
    """No suite file carries a schedule; every recipe file parses, and each group's options differ."""
    suites_dir = Path(RECIPES_DIR).parent / "suites"
    for name in PAPER_SUITES:
        text = (suites_dir / f"{name}.yaml").read_text()
        assert not re.search(r"^(scales|resources|reference):", text, re.M), name
        assert re.search(r"^recipes: \{full: published, smoke: embedded", text, re.M), name
    for group, options in available_recipes().items():
        bodies = [yaml.safe_load((RECIPES_DIR / group / f"{o}.yaml").read_text()) for o in options]
        assert all(b.get("description") for b in bodies)
        assert len({yaml.safe_dump(b) for b in bodies}) == len(bodies), group
