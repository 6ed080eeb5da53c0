"""The typed spec of a run (``bench.spec``): plain files in and out, one result key for id and resume."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from bench import spec
from bench.harness.cells import expand
from bench.harness.config import load_suite, validate_suite


def _cells(suite: str, scale: str = "smoke") -> list[spec.Cell]:
    return expand(load_suite(suite, [f"scale={scale}", "data_root=/nonexistent/data-root"]))


def _cell(**parts) -> spec.Cell:
    return spec.Cell.from_dict({"dataset": {"name": "f30k_precomp"}, "matcher": {"name": "vse_infty"},
                                "strategy": {"name": "baseline"}, **parts})


def test_importing_the_spec_loads_no_harness_trainer_or_torch():
    code = ("import sys, bench.spec; bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pydantic') "
            "or m.startswith(('bench.harness', 'bench.train'))); print(bad); assert not bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("suite", ["demo", "oas", "dbl"])
def test_a_cell_survives_its_config_yaml_and_keeps_its_id(suite):
    for cell in _cells(suite):
        assert isinstance(cell, spec.Cell) and isinstance(cell.resources, spec.Resources)
        written = yaml.safe_dump(cell.to_dict(), sort_keys=False)  # as the store writes config.yaml
        assert spec.Cell.from_dict(yaml.safe_load(written)) == cell
        assert spec.cell_id(cell) == spec.cell_id(spec.Cell.from_dict(cell.to_dict())) == cell.id


def test_resolving_keeps_the_result_key():
    for cell in _cells("demo") + _cells("oas")[:6] + _cells("dbl")[:40]:
        resolved = spec.resolve(cell)
        assert resolved.schedule.weight_decay is not None and resolved.schedule.caption_aug is not None
        assert resolved.dataset.captions_per_image == 5 and resolved.device == "auto"
        assert resolved.matcher.defaults and resolved.to_dict()["matcher"] == cell.to_dict()["matcher"]
        assert spec.result_key(resolved) == spec.result_key(cell)
        assert resolved.cell_id() == cell.id
        assert spec.resolve(resolved) == resolved  # idempotent


def _matcher_entries():
    import models

    return sorted(models.available())


@pytest.mark.parametrize("name", _matcher_entries())
def test_a_matcher_with_its_defaults_written_out_is_the_same_cell(name, tmp_path):
    """``matchers: [X]`` and ``matchers: [{name: X, overrides: <X's declared defaults>}]`` train the same run,
    so they have one id: every registered matcher, a class or a preset (sgr, saf) alike."""
    import models

    defaults = spec.declared_defaults(models.parameters(name).values())
    assert defaults, f"{name} declares no argument with a default"
    base = {"name": "s", "datasets": ["f30k_precomp"], "strategies": ["baseline"], "seeds": [0],
            "data_root": "/nonexistent/data-root",
            "scales": {"full": {"schedule": {"default": {"epochs": 1, "lr": 1e-3, "batch_size": 8}}}}}
    bare = expand(validate_suite({**base, "matchers": [name]}, tmp_path / "bare.yaml"))
    written = expand(validate_suite({**base, "matchers": [{"name": name, "overrides": defaults}]},
                                    tmp_path / "written.yaml"))
    assert [c.id for c in bare] == [c.id for c in written]
    changed = {k: v + 1 for k, v in defaults.items() if type(v) is int and v >= 1}
    if changed:  # and a value that is not the default is another run
        k, v = next(iter(changed.items()))
        other = expand(validate_suite({**base, "matchers": [{"name": name, "overrides": {k: v}}]},
                                      tmp_path / "other.yaml"))
        assert other[0].id != bare[0].id


def test_a_preset_declares_its_class_arguments_and_answers_as_its_class():
    import models
    from models.sgraf import SGRAF

    for name in ("sgr", "saf"):
        assert models.matcher_class(name) is SGRAF
        assert "module" not in models.parameters(name) and "sim_dim" in models.parameters(name)
        assert models.matcher_attribute(name, "optimizer") == SGRAF.optimizer
        assert spec.resolve(_cell(matcher={"name": name})).matcher.defaults["sim_dim"] == 256


def test_the_matcher_owns_its_hinge_warm_up():
    assert spec.resolve(_cell()).schedule.hinge_warmup_epochs == 1
    assert spec.resolve(_cell(matcher={"name": "sgr"})).schedule.hinge_warmup_epochs == 0
    oas = _cell(strategy={"name": "kd"})
    assert spec.resolve(oas).schedule.hinge_warmup_epochs == 0  # from a trained checkpoint


def test_a_changed_result_decides_the_key_and_a_free_key_does_not():
    (cell, *_) = _cells("demo")
    key = spec.result_key(cell)

    def with_schedule(**changes):
        return cell.replace(schedule=cell.schedule.__class__(**{**cell.schedule.to_dict(), **changes}))

    for free in ({"workers": 3}, {"log_every": 1}, {"checkpoint_every": 5}):
        assert spec.result_key(with_schedule(**free)) == key
    assert spec.result_key(cell.replace(resources=spec.Resources(gpus=4), suite="other", device="cpu")) == key
    assert spec.result_key(with_schedule(lr=1e-3)) != key
    other_cpi = cell.replace(dataset=cell.dataset.__class__(**{**cell.dataset.__dict__, "captions_per_image": 4}))
    assert spec.result_key(other_cpi) != key


@pytest.mark.parametrize("bad, message", [
    ({"schedule": {"lrr": 1}}, r"unknown schedule keys \['lrr'\]; valid: .*'lr'"),
    ({"eval": {"dev_image": 1}}, r"unknown eval keys \['dev_image'\]; valid: .*'dev_images'"),
    ({"dataset": {"name": "f30k_precomp", "root": "x"}}, r"unknown dataset keys \['root'\]; valid: .*'data_root'"),
    ({"sed": 1}, r"unknown cell keys \['sed'\]; valid: .*'seed'"),
    ({"matcher": {}}, r"cell is missing 'matcher.name'"),
])
def test_bad_cell_keys_are_named(bad, message):
    cell = {"dataset": {"name": "f30k_precomp"}, "matcher": {"name": "vse_infty"}, "strategy": {"name": "baseline"}}
    with pytest.raises(ValueError, match=message):
        spec.Cell.from_dict({**cell, **bad})


def test_schedule_defaults_are_the_dataclass_fields():
    assert list(spec.SCHEDULE_DEFAULTS) == [f.name for f in spec.dataclasses.fields(spec.Schedule)]
    assert spec.Schedule().to_dict() == spec.SCHEDULE_DEFAULTS
    assert spec.Resources().to_dict() == spec.DEFAULT_RESOURCES


def test_each_schedule_fact_is_written_once_and_read_by_the_schema():
    """Type, range, choices and default of a schedule key stand in ``bench.spec.Schedule`` alone; the suite
    schema is built from them."""
    from bench.harness.schema import schedule_fields

    fields = schedule_fields()
    assert set(fields) == set(spec.SCHEDULE_DEFAULTS)
    assert set(spec.SCHEDULE_LIMITS) < set(spec.SCHEDULE_DEFAULTS) and spec.SCHEDULE_REQUIRED == ("epochs", "batch_size", "lr")
    assert spec.SCHEDULE_CHOICES["precision"] == ("fp32", "tf32", "bf16")
    assert set(spec.NOT_RESULT_KEYS) == {"workers", "checkpoint_every", "log_every"}
    assert spec.ADDED_SCHEDULE_DEFAULTS == {"precision": "fp32", "compile": False}
    assert spec.schedule_limit_problem("epochs", 0) == "must be >= 1, got 0: a count of 0 or less trains nothing"
