"""Suite files: load, apply ``key=value`` overrides, compose recipes, validate.

A suite YAML (``bench/suites/<name>.yaml``) declares datasets × matchers × strategies × seeds and the
schedules at two scales (``full`` = published, ``smoke`` = minutes on the embedded data), usually by
composing recipes: ``recipes: {group: option}`` merges ``bench/recipes/<group>/<option>.yaml`` (each
published schedule written once) under the suite's own keys. Every mistake raises
:class:`ConfigError` naming the file, the key path, the value and the closest valid names.

The schema's facts have one owner each: matcher and strategy names come from the registries
(``models.available()``, ``strategies.available()``), matcher overrides must be declared constructor
arguments (``models.parameters``), strategy parameters (names, types, defaults, ``Literal`` choices) come
from the constructors' signatures (``bench.harness.registry``), each schedule key's type, range, choices and
default from ``bench.spec.Schedule``. The layout below is a set of pydantic models built at runtime from
those owners (``bench.harness.schema``): strict types, finite floats, counts >= 1, unknown keys forbidden,
names as ``Literal`` vocabularies, each strategy's ``params``/``sweep`` checked by that strategy's own model
(entries are a union picked by ``name``), the cross-key rules (distinct labels, seeds once, the chosen scale
present, ...) as validators. One translator (``bench.harness.schema_errors.config_error``) turns pydantic's
first error into the ConfigError with the key path and the closest valid names. Overrides are read by
``bench.overrides`` (the grammar of every command and the trainer), files by ``bench.config_files``, recipes
composed by ``bench.harness.recipes``.

Layout (all keys; ``?`` = optional)::

    name: demo                      # required, also the results folder name
    description?: str
    wandb?: {project: str, entity?: str}
    scale?: full | smoke            # which entry of `scales` to use (default full)
    data_root?: str                 # default data root of every dataset (else $DATA)
    vocab_root?: str                # default vocabulary root (else $VOCAB)
    anchor_checkpoint?: str         # OAS cells start from this checkpoint (ours or official), no baseline
    weights?: {clip?: DIR, bert?: DIR}   # local pretrained folders (bench.weights.KINDS), for every matcher
                                    # that reads one (clip: pretrained_path, vse_infty_bert: bert_path)
    rehearsal?: {steps?, epochs?, eval_images?, batch_size?}   # a dress rehearsal of the table (sweep
                                    # --rehearse; bench.harness.rehearsal, bench.spec.Rehearsal)
    datasets: [{name, label?, data_root?, vocab_root?, protocols?: [str]}]   # name: f30k | coco (SCAN
                                    # layout); label names the data source (synth-demo), default = name
    matchers: [{name, label?, overrides?: {...}, datasets?: [str]}]
    strategies: [{name, label?, params?: {...}, sweep?: {param: [values]}}]
    only?: {datasets?: [str], matchers?: [str], strategies?: [str]}   # keep only these cells (by name or
                                    # label), labels and ids unchanged (CLI: only.datasets=[f30k_precomp])
    seeds: [int]
    scales: {full|smoke: {schedule: SCHEDULES, matchers?: {matcher: {overrides}}}}
    schedule?: SCHEDULES            # applied on top of the chosen scale (CLI: schedule.vse_infty.epochs=2)
    eval?: {protocols?: [str], dev_images?: int, batch_size?: int, eccv?: bool}
    reference?: [{matcher: <our matcher label>, where: {<published.csv column>: value}}]
    resources?: {default|<matcher>: {gpus, cpus, mem_gb, time_min, partition?}}
    recipes?: {<group>: <option>}   # bench/recipes/<group>/<option>.yaml: scales, resources, reference

    SCHEDULES = {default|<matcher>: {<schedule keys>, datasets?: {<dataset>: {...}}, oas_stage2?: {...}}}
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from bench.config_files import ConfigError, read_yaml  # noqa: F401 - re-exported
from bench.harness.recipes import (  # noqa: F401 - re-exported
    RECIPES_DIR,
    available_recipes,
    compose_recipes,
    recipe_label,
    shadowed,
)
from bench.harness.registry import (  # noqa: F401 - re-exported
    REQUIRED,
    known_datasets,
    matcher_args,
    strategy_params,
    valid_matchers,
    valid_strategies,
)
from bench.harness.schema import schema, validate
from bench.overrides import OVERRIDE_FIX, apply_overrides, parse_override  # noqa: F401 - re-exported
from bench.values import expand_path

SUITES_DIR = Path(__file__).resolve().parents[1] / "suites"


@dataclass
class Suite:
    """A validated suite: ``spec`` is the YAML with overrides applied and defaults filled."""

    name: str
    path: Path
    spec: dict


def suite_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    return SUITES_DIR / f"{name_or_path}.yaml"


def available_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def load_suite(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = (), rehearse: bool = False) -> Suite:
    """Read a suite by name (``bench/suites/<name>.yaml``) or path, apply overrides, compose its
    recipes, validate. ``rehearse`` (``--rehearse``): its dress rehearsal (``rehearsal:`` with its defaults,
    unless the file or an override gives one; ``bench.harness.rehearsal``)."""
    if rehearse:
        suite = load_suite(name_or_path, overrides)
        return suite if suite.spec.get("rehearsal") is not None else load_suite(name_or_path, ["rehearsal={}", *overrides])
    path = suite_path(name_or_path)
    if not path.exists():
        close = difflib.get_close_matches(str(name_or_path), available_suites(), n=3)
        raise ConfigError(f"{path}: no such suite file. Closest suites: {', '.join(close) or '-'}; "
                          f"available: {', '.join(available_suites())}")
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of suite keys, got {type(raw).__name__}")
    return validate_suite(apply_overrides(raw, overrides), path)


def validate_suite(raw: dict, path: str | Path = "<suite>") -> Suite:
    """Check ``raw`` against the schema (module docstring) and fill defaults."""
    own = raw
    if isinstance(raw, dict):
        raw = compose_recipes(raw, Path(path))
    spec = validate(schema()["suite"], raw, path, context={})
    if isinstance(own, dict) and (hidden := shadowed(own, spec, Path(path))):  # a key of the suite a recipe hides
        raise ConfigError(f"{path}: {hidden[0]}" + (f" (and {len(hidden) - 1} more)" if len(hidden) > 1 else ""))
    if spec.get("rehearsal") is not None:  # a dress rehearsal of the suite's table (bench.harness.rehearsal)
        from bench.harness.rehearsal import rehearsal_spec

        spec = rehearsal_spec(spec)
    return Suite(name=spec["name"], path=Path(path), spec=spec)


def resolve_root(explicit: str | None, suite_default: str | None, env: str) -> str | None:
    """A dataset's root: its own entry, else the suite's, else the environment variable ``env`` (``~`` and
    ``$VARS`` expanded: the cell records the expanded path)."""
    return expand_path(explicit or suite_default or os.environ.get(env) or None)
