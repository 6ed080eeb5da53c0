"""Suite schema, overrides, cell ids and OAS dependencies (bench.harness.config / cells)."""

from pathlib import Path

import pytest
import yaml

from bench.harness.cells import cell_id, expand, topological_order
from bench.harness.config import (
    ConfigError,
    available_suites,
    load_suite,
    valid_matchers,
    valid_strategies,
    validate_suite,
)
from bench.spec import Cell, Schedule

SUITE = {
    "name": "t",
    "datasets": [{"name": "f30k_precomp", "label": "synth", "data_root": "/data/x"}],
    "matchers": [{"name": "vse_infty"}],
    "strategies": [{"name": "baseline"}, {"name": "dbl", "label": "DBL abs", "params": {"loss": "abs", "scenario": "oss"}}],
    "seeds": [0],
    "scales": {"full": {"schedule": {"vse_infty": {"epochs": 25, "lr": "5e-4", "batch_size": 128}}},
               "smoke": {"schedule": {"default": {"epochs": 1, "lr": 1.0e-3, "batch_size": 16}},
                         "matchers": {"vse_infty": {"embed_size": 32}}}},
}


def write(tmp_path: Path, raw: dict, name: str = "suite.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw))
    return p


def with_(raw: dict, **changes) -> dict:
    out = yaml.safe_load(yaml.safe_dump(raw))
    out.update(changes)
    return out


def test_valid_suite_expands_with_resolved_schedule(tmp_path):
    cells = expand(load_suite(write(tmp_path, SUITE)))
    assert [c.strategy.label for c in cells] == ["baseline", "DBL abs"]
    c = cells[1]
    assert c.schedule == Schedule.from_dict({"epochs": 25, "lr": 5e-4, "batch_size": 128})  # "5e-4" read as a float
    assert c.matcher.to_dict() == {"name": "vse_infty"}
    assert c.strategy.params["loss"] == "abs" and c.strategy.params["reduction"] == "max"
    assert c.strategy.scenario == "oss" and c.depends_on == []
    assert c.dataset.to_dict() == {"name": "f30k_precomp", "data_root": "/data/x"} and c.dataset_label == "synth"


def test_unknown_key_names_file_key_path_and_closest_name(tmp_path):
    raw = with_(SUITE)
    raw["scales"]["full"]["schedule"]["vse_infty"]["epoch"] = 3
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as e:
        load_suite(path)
    msg = str(e.value)
    assert str(path) in msg and "scales.full.schedule.vse_infty.epoch" in msg and "Did you mean: epochs" in msg


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'seed'.*Did you mean: seeds"):
        load_suite(write(tmp_path, with_(SUITE, seed=[0])))


def test_wrong_type(tmp_path):
    with pytest.raises(ConfigError, match=r"seeds\[1\]: expected int, got str 'one'"):
        load_suite(write(tmp_path, with_(SUITE, seeds=[0, "one"])))
    raw = with_(SUITE)
    raw["scales"]["full"]["schedule"]["vse_infty"]["epochs"] = 2.5
    with pytest.raises(ConfigError, match="epochs: expected int, got float"):
        load_suite(write(tmp_path, raw))


def test_unknown_matcher_and_strategy_list_valid_names(tmp_path):
    path = write(tmp_path, with_(SUITE, matchers=[{"name": "vse_infinity"}]))
    with pytest.raises(ConfigError) as e:
        load_suite(path)
    msg = str(e.value)
    assert str(path) in msg and "matchers[0].name" in msg and "Did you mean: vse_infty" in msg
    assert all(m in msg for m in valid_matchers())
    with pytest.raises(ConfigError) as e:
        load_suite(write(tmp_path, with_(SUITE, strategies=[{"name": "dbll"}])))
    assert "strategies[0].name" in str(e.value) and "Did you mean: dbl" in str(e.value)
    assert all(s in str(e.value) for s in valid_strategies())


def test_bad_strategy_param_value_and_missing_required(tmp_path):
    with pytest.raises(ConfigError, match=r"params.loss: unknown value 'absolute'.*Valid: abs, rel"):
        load_suite(write(tmp_path, with_(SUITE, strategies=[{"name": "dbl", "params": {"loss": "absolute",
                                                                                      "scenario": "oss"}}])))
    with pytest.raises(ConfigError, match=r"params.scenario: required parameter"):
        load_suite(write(tmp_path, with_(SUITE, strategies=[{"name": "dbl", "params": {"loss": "abs"}}])))
    with pytest.raises(ConfigError, match=r"params.peer.*Did you mean: peers"):
        load_suite(write(tmp_path, with_(SUITE, strategies=[{"name": "dml", "params": {"peer": 3}}])))


def test_overrides_scale_seeds_and_dotted_schedule(tmp_path):
    path = write(tmp_path, SUITE)
    s = load_suite(path, ["scale=smoke", "seeds=[0,1]", "schedule.vse_infty.epochs=2", "datasets.0.data_root=/d2"])
    cells = expand(s)
    assert len(cells) == 4 and {c.seed for c in cells} == {0, 1}
    assert cells[0].schedule == Schedule.from_dict({"epochs": 2, "lr": 1e-3, "batch_size": 16})
    assert cells[0].matcher.to_dict() == {"name": "vse_infty", "embed_size": 32}
    assert cells[0].dataset.data_root == "/d2" and cells[0].scale == "smoke"
    with pytest.raises(ConfigError, match="expected key=value"):
        load_suite(path, ["scale"])
    with pytest.raises(ConfigError, match="scale: unknown value 'tiny'"):
        load_suite(path, ["scale=tiny"])


def test_cell_ids_stable_and_sensitive(tmp_path):
    a = expand(load_suite(write(tmp_path, SUITE)))
    b = expand(load_suite(write(tmp_path, SUITE, "again.yaml"), ["name=other", "resources.default.gpus=4"]))
    assert [c.id for c in a] == [c.id for c in b]  # suite name and resources are not hashed
    assert all(len(c.id) == 12 and c.id == cell_id(c) for c in a)
    c = expand(load_suite(write(tmp_path, SUITE), ["strategies.1.params.alpha=2.0"]))
    assert c[0].id == a[0].id and c[1].id != a[1].id
    d = expand(load_suite(write(tmp_path, SUITE), ["seeds=[1]"]))
    assert {x.id for x in d}.isdisjoint({x.id for x in a})
    # an explicit default equals the implicit one
    e = expand(load_suite(write(tmp_path, SUITE), ["strategies.1.params.reduction=max"]))
    assert e[1].id == a[1].id


def test_oas_dependency_added_once_and_ordered(tmp_path):
    raw = with_(SUITE, strategies=[
        {"name": "kd"}, {"name": "dbl", "label": "DBL oas", "params": {"loss": "rel", "scenario": "oas"}}],
        seeds=[0, 1])
    raw["scales"]["full"]["schedule"]["default"] = {"oas_stage2": {"epochs": 30, "lr": 2e-5, "lr_schedule": "constant"}}
    cells = expand(load_suite(write(tmp_path, raw)))
    baselines = [c for c in cells if c.strategy.name == "baseline"]
    assert len(baselines) == 2 and len(cells) == 6  # one anchor per seed, never duplicated
    for c in cells:
        if c.strategy.name != "baseline":
            (anchor,) = [b for b in baselines if b.id == c.depends_on[0]]
            assert anchor.seed == c.seed and anchor.schedule.epochs == 25
            assert c.schedule == Schedule.from_dict({"epochs": 30, "lr": 2e-5, "batch_size": 128, "lr_schedule": "constant"})
    order = [c.id for c in topological_order(list(reversed(cells)))]
    for c in cells:
        for dep in c.depends_on:
            assert order.index(dep) < order.index(c.id)
    # a suite listing the baseline itself (after the OAS cells) still gets it once, under its own label
    raw["strategies"].append({"name": "baseline", "label": "VSE baseline"})
    cells2 = expand(load_suite(write(tmp_path, raw)))
    assert len(cells2) == 6 and {c.id for c in cells2} == {c.id for c in cells}
    assert sorted({c.strategy.label for c in cells2 if c.strategy.name == "baseline"}) == ["VSE baseline"]


def test_topological_order_rejects_unknown_dependency():
    with pytest.raises(ConfigError, match="depends on unknown cell"):
        topological_order([Cell.from_dict({"id": "a", "depends_on": ["zzz"], "dataset": {"name": "f30k_precomp"},
                                           "matcher": {"name": "sgr"}, "strategy": {"name": "baseline", "label": "x"}})])


def test_sweep_and_duplicate_labels(tmp_path):
    raw = with_(SUITE, strategies=[{"name": "dbl", "label": "RM", "params": {"loss": "rel", "scenario": "oss"},
                                    "sweep": {"beta": [0.5, 2]}}])
    cells = expand(load_suite(write(tmp_path, raw)))
    assert [c.strategy.label for c in cells] == ["RM beta=0.5", "RM beta=2"]
    assert [c.strategy.params["beta"] for c in cells] == [0.5, 2.0]
    raw = with_(SUITE, strategies=[{"name": "baseline"}, {"name": "baseline"}])
    with pytest.raises(ConfigError, match="used twice"):
        expand(load_suite(write(tmp_path, raw)))


@pytest.mark.parametrize("name", available_suites())
def test_shipped_suites_are_valid(name):
    for scale in load_suite(name).spec["scales"]:
        cells = expand(load_suite(name, [f"scale={scale}"]))
        assert cells and len({c.id for c in cells}) == len(cells)
        assert len(topological_order(cells)) == len(cells)


def test_schedule_for_unknown_dataset_is_an_error(tmp_path):
    raw = with_(SUITE)
    raw["scales"]["full"]["schedule"]["vse_infty"]["datasets"] = {"coco": {"epochs": 20}}
    with pytest.raises(ConfigError, match=r"vse_infty.datasets.coco: unknown key 'coco'.*Did you mean: coco_precomp"):
        load_suite(write(tmp_path, raw))


def _matchers(raw, **entry):
    raw["matchers"][0].update(entry)


@pytest.mark.parametrize("change, message", [
    (lambda r: _matchers(r, datasets=["coco_precomp"]),
     "matchers[0].datasets[0]: unknown dataset 'coco_precomp'. Did you mean: f30k_precomp? Valid: f30k_precomp"),
    (lambda r: (r["scales"].pop("smoke"), r.update(scale="smoke")),
     "scales: no entry for the chosen scale 'smoke' (have: full)"),
    (lambda r: r["datasets"][0].update(name="mine"),
     "datasets[0].name: unknown dataset 'mine'. Valid: coco_precomp, f30k_precomp"),
    (lambda r: r["strategies"][1].update(sweep={"alpha": 2}),
     "strategies[1].sweep.alpha: expected a non-empty list of values, got 2"),
    (lambda r: r["strategies"][1].update(sweep={"alpha": [1.0, "two"]}),
     "strategies[1].sweep.alpha[1]: expected float, got str 'two'"),
    (lambda r: r.update(matchers=[{"label": "x"}]), "matchers[0].name: expected a matcher name (str), got None"),
    (lambda r: r.update(strategies=[{"name": 3}]), "strategies[0].name: expected a strategy name (str), got 3"),
    (lambda r: r.update(strategies=[3]), "strategies[0]: expected a mapping, got int 3"),
    # an unknown key is told before the missing or invalid name it may stand for
    (lambda r: r.update(strategies=[{"nam": "dbl"}]),
     "strategies[0].nam: unknown key 'nam'. Did you mean: name? Valid: label, name, params, sweep"),
    (lambda r: r.update(datasets=[{"labl": "x"}]),
     "datasets[0].labl: unknown key 'labl'. Did you mean: label? Valid: data_root, label, name, protocols, vocab_root"),
    (lambda r: r.update(datasets=[{"label": "x"}]), "datasets[0].name: required key missing"),
    (lambda r: r.update(reference=[{"matcher": "vse_infty"}]),
     "reference[0]: needs `matcher` (our label) and `where` (published.csv filters)"),
    (lambda r: r.update(resources={"vse_infty": {"gpus": "two"}}), "resources.vse_infty.gpus: expected int, got str 'two'"),
    (lambda r: r.update(resources={"vse_infinity": {"gpus": 1}}),
     "resources.vse_infinity: unknown key 'vse_infinity'. Did you mean: vse_infty, vse_infty_bert? Valid: clip, default"),
    (lambda r: r.update(name=3, seed=[1]), "seed: unknown key 'seed'. Did you mean: seeds, schedule?"),
    (lambda r: r.update(wandb={"project": 3}), "wandb.project: expected str, got int 3"),
])
def test_schema_rules_name_the_key_path(tmp_path, change, message):
    """The rules without an entry in docs/bad-inputs.md, each with its message (file and key path first)."""
    raw = with_(SUITE)
    change(raw)
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as e:
        load_suite(path)
    assert str(e.value).startswith(f"{path}: {message}")


def test_shorthand_defaults_and_the_keys_given():
    """Names alone for entries, the defaults filled, a swept parameter given by its sweep (DBL's required
    scenario), tables and resources kept as given (keys and order), schedule entries only with the keys given."""
    raw = with_(SUITE, datasets=["f30k_precomp"], matchers=["vse_infty"],
                strategies=["baseline", {"name": "dbl", "params": {"loss": "abs"}, "sweep": {"scenario": ["oss", "oas"]}}],
                resources={"vse_infty": {"time_min": 5, "gpus": 0}, "default": {"cpus": 2}})
    raw["scales"]["full"]["matchers"] = {"vse_infty": {"word_dim": 8, "embed_size": 16}, "default": None}
    spec = validate_suite(raw).spec  # the mapping as given (a YAML dump would sort its keys)
    assert spec["datasets"] == [{"name": "f30k_precomp", "label": "f30k_precomp", "data_root": None,
                                 "vocab_root": None, "protocols": ["f30k_1k"]}]
    assert spec["matchers"] == [{"name": "vse_infty", "label": "vse_infty", "overrides": {}, "datasets": None}]
    assert spec["strategies"][0] == {"name": "baseline", "label": None, "params": {}, "sweep": {}}
    dbl = spec["strategies"][1]
    assert dbl["sweep"] == {"scenario": ["oss", "oas"]} and "scenario" not in dbl["params"]
    assert dbl["params"]["loss"] == "abs" and dbl["params"]["reduction"] == "max"
    assert spec["resources"] == {"vse_infty": {"time_min": 5, "gpus": 0}, "default": {"cpus": 2}}
    assert list(spec["resources"]) == ["vse_infty", "default"] and list(spec["resources"]["vse_infty"]) == ["time_min", "gpus"]
    full = spec["scales"]["full"]
    assert list(full["matchers"]) == ["vse_infty", "default"] and full["matchers"]["default"] == {}
    assert list(full["matchers"]["vse_infty"]) == ["word_dim", "embed_size"]
    assert full["schedule"] == {"vse_infty": {"epochs": 25, "batch_size": 128, "lr": 5e-4}}
    assert spec["eval"] == {"protocols": [], "dev_images": 1000} and spec["reference"] == [] and spec["recipes"] == {}
    assert spec["wandb"] == {"project": None, "entity": None} and spec["scale"] == "full"
