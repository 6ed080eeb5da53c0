"""The typed spec of a run (``bench.spec``): plain files in and out, one result key for id and resume."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from bench import spec
from bench.harness.cells import expand
from bench.harness.config import load_suite


def _cells(suite: str, scale: str = "smoke") -> list[dict]:
    return expand(load_suite(suite, [f"scale={scale}", "data_root=/nonexistent/data-root"]))


def test_importing_the_spec_loads_no_harness_trainer_or_torch():
    code = ("import sys, bench.spec; bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pydantic') "
            "or m.startswith(('bench.harness', 'bench.train'))); print(bad); assert not bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("suite", ["demo", "oas", "dbl"])
def test_a_cell_survives_its_config_yaml_and_keeps_its_id(suite):
    for cell in _cells(suite):
        typed = spec.Cell.from_dict(cell)
        written = yaml.safe_dump(cell, sort_keys=False)  # as the store writes config.yaml
        assert spec.Cell.from_dict(yaml.safe_load(written)) == typed
        assert spec.cell_id(typed) == spec.cell_id(typed.to_dict()) == cell["id"]
        assert typed.to_dict()["strategy"] == cell["strategy"] and typed.to_dict()["matcher"] == cell["matcher"]


def test_resolving_keeps_the_result_key():
    for cell in _cells("demo") + _cells("oas")[:6]:
        resolved = spec.resolve(cell)
        assert resolved.schedule.weight_decay is not None and resolved.schedule.caption_aug is not None
        assert resolved.dataset.captions_per_image == 5 and resolved.device == "auto"
        assert spec.result_key(resolved) == spec.result_key(cell)
        assert resolved.cell_id() == cell["id"]
        assert spec.resolve(resolved) == resolved  # idempotent


def test_the_matcher_owns_its_hinge_warm_up():
    base = {"dataset": {"name": "f30k_precomp"}, "strategy": {"name": "baseline"}}
    assert spec.resolve({**base, "matcher": {"name": "vse_infty"}}).schedule.hinge_warmup_epochs == 1
    assert spec.resolve({**base, "matcher": {"name": "sgr"}}).schedule.hinge_warmup_epochs == 0
    oas = {**base, "matcher": {"name": "vse_infty"}, "strategy": {"name": "kd"}}
    assert spec.resolve(oas).schedule.hinge_warmup_epochs == 0  # from a trained checkpoint


def test_a_changed_result_decides_the_key_and_a_free_key_does_not():
    (cell, *_) = _cells("demo")
    key = spec.result_key(cell)
    for free in ({"workers": 3}, {"log_every": 1}, {"checkpoint_every": 5}):
        assert spec.result_key({**cell, "schedule": {**cell["schedule"], **free}}) == key
    assert spec.result_key({**cell, "resources": {"gpus": 4}, "suite": "other", "device": "cpu"}) == key
    assert spec.result_key({**cell, "schedule": {**cell["schedule"], "lr": 1e-3}}) != key
    other_cpi = {**cell, "dataset": {**cell["dataset"], "captions_per_image": 4}}
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
