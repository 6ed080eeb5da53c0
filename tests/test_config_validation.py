"""Config-validation entries of docs/bad-inputs.md (C1–C8): one test each. Every one is refused by
``load_suite``, i.e. before any cell exists or trains, with the file, the key path, the value and
the fix in the message."""

import pytest
import yaml

from bench.harness.cells import expand
from bench.harness.config import ConfigError, load_suite
from tests.test_bad_inputs import SUITE  # the minimal valid suite the bad inputs start from


def config_error(tmp_path, change=None, text=None, overrides=()) -> str:
    raw = yaml.safe_load(yaml.safe_dump(SUITE))
    if change:
        change(raw)
    path = tmp_path / "suite.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        expand(load_suite(path, list(overrides)))
    msg = str(info.value)
    assert str(path) in msg  # every suite error names the file
    return msg


def test_a_duplicate_key_names_both_lines(tmp_path):
    text = yaml.safe_dump(SUITE, sort_keys=False).replace(
        "      vse_infty:\n        epochs: 25\n", "      vse_infty:\n        epochs: 25\n        epochs: 40\n")
    assert text.count("epochs:") == 2
    lines = text.splitlines()
    first, second = (i + 1 for i, line in enumerate(lines) if "epochs:" in line)
    msg = config_error(tmp_path, text=text)
    assert "duplicate key 'epochs'" in msg
    assert f"first at line {first}, again at line {second}" in msg and "keep one" in msg


@pytest.mark.parametrize("where", ["epochs", "batch_size", "max_steps_per_epoch", "dev_images"])
def test_a_count_of_zero_or_less(tmp_path, where):
    def change(raw):
        if where == "dev_images":
            raw["eval"] = {"dev_images": 0}
        else:
            raw["scales"]["full"]["schedule"]["vse_infty"][where] = 0 if where != "batch_size" else -8

    msg = config_error(tmp_path, change)
    key = "eval.dev_images" if where == "dev_images" else f"scales.full.schedule.vse_infty.{where}"
    got = -8 if where == "batch_size" else 0
    if where == "dev_images":
        assert f"{key}: must be at least 1, got {got}" in msg
    else:  # a schedule key's range and why, from bench.spec.Schedule
        assert f"{key}: must be >= 1, got {got}: a count of 0 or less trains nothing" in msg


def test_a_seed_outside_numpys_range(tmp_path):
    msg = config_error(tmp_path, lambda r: r.update(seeds=[0, 2**32]))
    assert "seeds[1]: seed 4294967296 is outside [0, 2**32)" in msg and "0 … 4294967295" in msg
    assert "seeds[0]: seed -1 is outside" in config_error(tmp_path, lambda r: r.update(seeds=[-1]))


def test_an_unknown_protocol(tmp_path):
    msg = config_error(tmp_path, lambda r: r["datasets"][0].update(protocols=["f30k_5k"]))
    assert "datasets[0].protocols[0]: unknown protocol 'f30k_5k'. Did you mean: f30k_1k" in msg
    assert "Valid: coco_1k, coco_5k, f30k_1k" in msg
    msg = config_error(tmp_path, lambda r: r.update(eval={"protocols": ["coco_10k"]}))
    assert "eval.protocols[0]: unknown protocol 'coco_10k'" in msg


def test_a_matcher_override_that_is_not_a_constructor_argument(tmp_path):
    msg = config_error(tmp_path, lambda r: r["matchers"][0].update(overrides={"embed_sise": 256}))
    assert "matchers[0].overrides.embed_sise: unknown vse_infty argument 'embed_sise'. Did you mean: embed_size" in msg
    assert "word_dim" in msg  # the valid ones are listed
    msg = config_error(tmp_path, overrides=["scales.full.matchers.vse_infty.word_dims=64"])
    assert "scales.full.matchers.vse_infty.word_dims: unknown vse_infty argument" in msg and "word_dim" in msg


def test_a_number_that_is_nan_or_inf(tmp_path):
    text = yaml.safe_dump(SUITE, sort_keys=False).replace("loss: abs", "loss: abs\n    alpha: .nan")
    msg = config_error(tmp_path, text=text)
    assert "strategies[1].params.alpha: expected a finite number, got nan" in msg
    msg = config_error(tmp_path, overrides=["schedule.vse_infty.lr=.inf"])
    assert "schedule.vse_infty.lr: expected a finite number, got inf" in msg


def test_two_datasets_with_one_label(tmp_path):
    msg = config_error(tmp_path, lambda r: r["datasets"].append({"name": "coco_precomp", "label": "synth"}))
    assert "datasets[1].label: datasets datasets[0] (f30k_precomp) and datasets[1] (coco_precomp) have the " \
           "same label 'synth'; give each dataset a distinct `label`" in msg
    assert "strateg" not in msg


def test_an_unknown_recipe(tmp_path):
    msg = config_error(tmp_path, lambda r: r.update(recipes={"oas_stage2": "lr_2e-3"}))
    assert "recipes.oas_stage2: unknown oas_stage2 recipe 'lr_2e-3'. Did you mean: lr_2e-5, lr_2e-4?" in msg
    assert "Valid: lr_2e-4, lr_2e-5" in msg
    msg = config_error(tmp_path, lambda r: r.update(recipes={"oas_stage": "lr_2e-5"}))
    assert "recipes.oas_stage: unknown recipe group 'oas_stage'. Did you mean: oas_stage2?" in msg


def test_shipped_recipes_compose_and_the_suite_wins(tmp_path):
    """Not a bad input: the contract the entries above rely on (recipes under the suite's own keys)."""
    raw = yaml.safe_load(yaml.safe_dump(SUITE))
    raw["recipes"] = {"full": "published", "oas_stage2": "lr_2e-5"}
    raw["scales"]["full"]["schedule"] = {"vse_infty": {"epochs": 3}}  # the suite's own value wins
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(raw))
    suite = load_suite(path)
    assert set(suite.spec["recipes"]) == {"full", "oas_stage2"}
    (cell, *_) = expand(suite)
    assert cell.schedule.epochs == 3 and cell.schedule.weight_decay == 1e-2
    assert cell.recipe["full"].startswith("published@") and len(cell.recipe["full"]) == len("published@") + 8
    variant = expand(load_suite(path, ["recipes.oas_stage2=lr_2e-4", "strategies.1.params.scenario=oas"]))
    stage2 = [c for c in variant if c.strategy.name == "dbl"][0]
    assert stage2.schedule.lr == 2e-4 and stage2.schedule.lr_schedule == "constant"
    assert stage2.recipe["oas_stage2"].startswith("lr_2e-4@")
