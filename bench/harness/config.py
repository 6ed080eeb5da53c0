"""Suite files: load, apply ``key=value`` overrides, compose recipes, validate.

A suite YAML (``bench/suites/<name>.yaml``) declares datasets × matchers × strategies × seeds and the
schedules at two scales (``full`` = published, ``smoke`` = minutes on the embedded data), usually by
composing recipes: ``recipes: {group: option}`` merges ``bench/recipes/<group>/<option>.yaml`` (each
published schedule written once) under the suite's own keys. Every mistake raises
:class:`ConfigError` naming the file, the key path, the value and the closest valid names.

The schema's facts have one owner each: matcher and strategy names come from the registries
(``models.available()``, ``strategies.available()``), matcher overrides must be constructor
arguments (``models.constructor_args``), strategy parameters (names, types, defaults, ``Literal``
choices) come from the constructors' signatures, schedule keys and their types from
``bench.spec.SCHEDULE_DEFAULTS``. The whole layout below is a set of pydantic models built at
runtime from those owners (section "schema"): strict types, finite floats, counts >= 1, unknown keys
forbidden, names as ``Literal`` vocabularies, each strategy's ``params``/``sweep`` checked by that
strategy's own model (entries are a union picked by ``name``), the cross-key rules (distinct labels,
seeds once, the chosen scale present, ...) as validators. One translator (``_config_error``) turns
pydantic's first error into the ConfigError with the key path and the closest valid names.

Layout (all keys; ``?`` = optional)::

    name: demo                      # required, also the results folder name
    description?: str
    wandb?: {project: str, entity?: str}
    scale?: full | smoke            # which entry of `scales` to use (default full)
    data_root?: str                 # default data root of every dataset (else $DATA)
    vocab_root?: str                # default vocabulary root (else $VOCAB)
    anchor_checkpoint?: str         # OAS cells start from this checkpoint (ours or official), no baseline
    datasets: [{name, label?, data_root?, vocab_root?, protocols?: [str]}]   # name: f30k | coco (SCAN
                                    # layout); label names the data source (synth-demo), default = name
    matchers: [{name, label?, overrides?: {...}, datasets?: [str]}]
    strategies: [{name, label?, params?: {...}, sweep?: {param: [values]}}]
    seeds: [int]
    scales: {full|smoke: {schedule: SCHEDULES, matchers?: {matcher: {overrides}}}}
    schedule?: SCHEDULES            # applied on top of the chosen scale (CLI: schedule.vse_infty.epochs=2)
    eval?: {protocols?: [str], dev_images?: int, batch_size?: int}
    reference?: [{matcher: <our matcher label>, where: {<published.csv column>: value}}]
    resources?: {default|<matcher>: {gpus, cpus, mem_gb, time_min, partition?}}
    recipes?: {<group>: <option>}   # bench/recipes/<group>/<option>.yaml: scales, resources, reference

    SCHEDULES = {default|<matcher>: {<schedule keys>, datasets?: {<dataset>: {...}}, oas_stage2?: {...}}}
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import os
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError, PydanticKnownError

from bench import yamlsafe
from bench.spec import (  # noqa: F401 - DEFAULT_RESOURCES: read here by the harness
    DEFAULT_RESOURCES,
    EVAL_DEFAULTS,
    RESOURCE_KEYS,
    SCHEDULE_DEFAULTS,
    TRAINER_STRATEGY_ARGS,
    is_plain_name,
)
from bench.values import expand_path, shown

SUITES_DIR = Path(__file__).resolve().parents[1] / "suites"
RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"

REQUIRED = object()

# Strategy parameters a suite must state (their constructor defaults exist for direct use). Every
# other fact about a parameter (name, type, default, choices) comes from the constructor's
# signature (`typing.Literal` annotations give the choices): see `strategy_params`.
SUITE_REQUIRED_PARAMS = {"dbl": ("loss", "scenario")}
# What a schedule key's default in bench.spec.SCHEDULE_DEFAULTS cannot tell about its type (a None
# or empty default, a closed set of strings); every other key's type is its default's.
_SCHEDULE_TYPE_HINTS: dict[str, Any] = {
    "lr_schedule": ("step", "constant"),
    "precision": ("fp32", "tf32", "bf16"),  # bench.precision.PRECISIONS
    "lr_decay_epochs": [int],
    "hinge_warmup_epochs": int,
    "max_steps_per_epoch": int,
    "caption_aug": bool,
    "weight_decay": float,
}
# Schedule keys that count something and must be >= 1 (a None default stays allowed: "no limit").
POSITIVE_KEYS = ("epochs", "batch_size", "max_steps_per_epoch")
SEED_RANGE = (0, 2**32)  # numpy's seed range
SCHEDULE_REQUIRED = ("epochs", "lr", "batch_size")


class ConfigError(ValueError):
    """A suite file or override is invalid; the message names the file, key path and fix."""


@dataclass
class Suite:
    """A validated suite: ``spec`` is the YAML with overrides applied and defaults filled."""

    name: str
    path: Path
    spec: dict


# ----------------------------------------------------------------------------- registries

_valid_cache: dict[str, Any] = {}


def valid_matchers() -> list[str]:
    """Matcher names: the registry's (``models.available()``)."""
    if "models" not in _valid_cache:
        import models

        _valid_cache["models"] = sorted(models.available())
    return _valid_cache["models"]


def valid_strategies() -> list[str]:
    """Strategy names: the registry's (``strategies.available()``)."""
    if "strategies" not in _valid_cache:
        import strategies

        _valid_cache["strategies"] = sorted(strategies.available())
    return _valid_cache["strategies"]


def known_datasets() -> list[str]:
    """Dataset names the readers know (``bench.data.precomp.DATASETS``)."""
    from bench.data.precomp import DATASETS

    return sorted(DATASETS)


def matcher_args(name: str) -> set[str] | None:
    """Keyword arguments of matcher ``name``'s constructor (None: it takes ``**kwargs``)."""
    key = f"margs:{name}"
    if key not in _valid_cache:
        import models

        _valid_cache[key] = models.constructor_args(name)
    return _valid_cache[key]


def schedule_keys() -> dict[str, Any]:
    """The trainer's schedule keys (``bench.spec.SCHEDULE_DEFAULTS``) -> their kind (see ``_annotation``)."""
    if "schedule" not in _valid_cache:
        kinds: dict[str, Any] = {}
        for k, default in SCHEDULE_DEFAULTS.items():
            if k in _SCHEDULE_TYPE_HINTS:
                kinds[k] = _SCHEDULE_TYPE_HINTS[k]
            elif isinstance(default, list):
                kinds[k] = [type(default[0]) if default else float]
            elif default is None:
                kinds[k] = object
            else:
                kinds[k] = type(default)
        _valid_cache["schedule"] = kinds
    return _valid_cache["schedule"]


def _yaml11_float(v):
    """YAML 1.1 (PyYAML) reads ``5e-4`` as a string: read it as the number it means."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


_STRICT = ConfigDict(strict=True, extra="forbid")
_ANNOTATIONS: dict[Any, Any] = {
    float: Annotated[float, BeforeValidator(_yaml11_float), Field(allow_inf_nan=False)],
    int: StrictInt, bool: StrictBool, str: StrictStr, object: Any,
}


def _annotation(kind) -> Any:
    """A kind of this module (type, tuple of choices, [type]) as a pydantic annotation."""
    if isinstance(kind, list):
        return list[_annotation(kind[0])]
    if isinstance(kind, tuple):
        return Literal[kind]
    return _ANNOTATIONS.get(kind, kind)


def _nullable_schedule_keys() -> set[str]:
    return {k for k, v in SCHEDULE_DEFAULTS.items() if v is None}


def strategy_scenario(name: str, params: dict) -> str:
    """The training scenario of a strategy variant (method.md, "The three training scenarios"): its
    ``scenario`` parameter where it has one (DBL), else the class attribute ``scenario``."""
    vocab = strategy_params(name) or {}
    if "scenario" in vocab:
        default = vocab["scenario"][1]
        return params.get("scenario", "oss" if default is REQUIRED else default)
    import strategies

    return getattr(strategies.get(name), "scenario", "none")


# Set by the trainer from the schedule (bench.train.build_strategy), not by a suite.
_TRAINER_STRATEGY_ARGS = {"self", *TRAINER_STRATEGY_ARGS}


def strategy_params(name: str) -> dict[str, tuple[Any, Any]] | None:
    """Accepted parameters of strategy ``name``: {param: (kind, default)}; None if unknown.

    Read from the constructors' signatures along the class's MRO: the kind is the ``Literal``
    choices when annotated so, else the default's type; ``SUITE_REQUIRED_PARAMS`` marks the
    parameters a suite must state (default ``REQUIRED``).
    """
    key = f"params:{name}"
    if key not in _valid_cache:
        import inspect
        import typing

        import strategies

        if name not in strategies.available():
            _valid_cache[key] = None
            return None
        vocab: dict[str, tuple[Any, Any]] = {}
        for klass in strategies.get(name).__mro__:
            if "__init__" not in vars(klass) or klass.__module__ == "strategies.base":
                continue
            try:
                hints = typing.get_type_hints(klass.__init__)
            except Exception:  # noqa: BLE001 - an unresolvable annotation: fall back to the defaults' types
                hints = {}
            for p in inspect.signature(klass.__init__).parameters.values():
                if p.name in _TRAINER_STRATEGY_ARGS or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                    continue
                default = None if p.default is p.empty else p.default
                hint = hints.get(p.name)
                if typing.get_origin(hint) is typing.Literal:
                    kind: Any = tuple(typing.get_args(hint))
                elif isinstance(default, bool):
                    kind = bool
                elif isinstance(default, float) or hint is float:
                    kind = float
                elif isinstance(default, (int, str)):
                    kind = type(default)
                else:
                    kind = object
                vocab.setdefault(p.name, (kind, default))
        for p in SUITE_REQUIRED_PARAMS.get(name, ()):
            vocab[p] = (vocab[p][0], REQUIRED)
        _valid_cache[key] = vocab
    return _valid_cache[key]


# ----------------------------------------------------------------------------- overrides

OVERRIDE_FIX = "expected key=value with a dotted key and a YAML value, e.g. scale=smoke, seeds=[0,1] or " \
               "schedule.vse_infty.epochs=2 (quote the whole override in the shell)"


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"schedule.vse_infty.epochs=2"`` -> (["schedule", "vse_infty", "epochs"], 2); value read as YAML
    (safely: no tags, no key twice). ConfigError naming the override, the problem and the fix."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: no '=' in it; {OVERRIDE_FIX}")
    key, value = text.split("=", 1)
    path = key.strip().split(".")
    if not key.strip():
        raise ConfigError(f"override {text!r}: empty key before '='; {OVERRIDE_FIX}")
    if any(not p.strip() or p != p.strip() for p in path):
        raise ConfigError(f"override {text!r}: key {key!r} has an empty or blank-padded part between dots; "
                          f"{OVERRIDE_FIX}")
    if not value.strip():
        return path, None
    try:
        parsed = yamlsafe.load(value, Loader=_UniqueKeyLoader)  # bounded; a SafeLoader subclass
    except yaml.YAMLError as e:
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        if "tag" in problem:
            problem += " (YAML tags are not read from overrides)"
        raise ConfigError(f"override {text!r}: the value {shown(value)} is not valid YAML ({problem}); close every "
                          "bracket and quote, or give a plain value, e.g. seeds=[0,1] or "
                          "datasets.0.label='my data'") from None
    return path, parsed


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Set each dotted ``key=value`` in a copy of ``raw`` (integer segments index lists). A key given
    twice, or a path through a value that is neither a mapping nor a list, is a ConfigError."""
    raw = copy.deepcopy(raw)
    seen: dict[tuple[str, ...], str] = {}
    for text in overrides:
        path, value = parse_override(text)
        if tuple(path) in seen:
            raise ConfigError(f"override {text!r}: key {'.'.join(path)} is already set by {seen[tuple(path)]!r} "
                              "(the last would silently win); give each key once")
        seen[tuple(path)] = text
        node = raw
        for depth, part in enumerate(path[:-1]):
            if isinstance(node, list):
                node = _list_item(node, part, text)
            elif isinstance(node, dict):
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
            if not isinstance(node, (dict, list)):
                where = ".".join(path[:depth + 1])
                raise ConfigError(f"override {text!r}: {where} is {type(node).__name__} {shown(node)}, not a mapping "
                                  f"or a list, so it has no key {path[depth + 1]!r}; set {where}=… itself")
        last = path[-1]
        if isinstance(node, list):
            idx = _list_index(node, last, text)
            node[idx] = value
        else:
            node[last] = value
    return raw


def _list_index(node: list, part: str, text: str) -> int:
    try:
        idx = int(part)
        node[idx]
        return idx
    except (ValueError, IndexError):
        raise ConfigError(f"override {text!r}: {part!r} is not an index of a list of {len(node)}") from None


def _list_item(node: list, part: str, text: str):
    return node[_list_index(node, part, text)]


# ----------------------------------------------------------------------------- loading

def suite_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    return SUITES_DIR / f"{name_or_path}.yaml"


def available_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last)."""


def _no_duplicate_keys(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: PyYAML's own error follows
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}: first at line {first + 1}, again at line "
                            f"{key_node.start_mark.line + 1} (the last would silently win); keep one of them",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicate_keys)


def read_yaml(path: Path) -> Any:
    """A YAML file's content; ConfigError naming the file (and both lines of a duplicate key)."""
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a suite file; give a suite name (bench/suites/<name>.yaml) "
                          "or the path of a YAML file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[:e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 (byte 0x{path.read_bytes()[e.start]:02x}); re-save the file as "
                          "UTF-8") from None
    try:
        return yamlsafe.load(text, Loader=_UniqueKeyLoader)  # bounded; a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(e)}") from None


def _yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's error on one line: the problem and where (its multi-line excerpt left out)."""
    problem = getattr(e, "problem", None)
    if not problem:
        return " ".join(str(e).split())
    mark = getattr(e, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    context = getattr(e, "context", None)
    return f"{context + ': ' if context else ''}{problem}{where}"


# ----------------------------------------------------------------------------- recipes

def available_recipes() -> dict[str, list[str]]:
    """Recipe groups (``bench/recipes/<group>/``) -> their options (``<option>.yaml``)."""
    return {g.name: sorted(p.stem for p in g.glob("*.yaml"))
            for g in sorted(RECIPES_DIR.iterdir()) if g.is_dir() and any(g.glob("*.yaml"))}


def recipe_hash(content: Any) -> str:
    """8 hex digits of sha1 over a recipe's parsed values (comments, layout, description do not count)."""
    return hashlib.sha1(json.dumps(content, sort_keys=True, separators=(",", ":"),
                                   default=str).encode()).hexdigest()[:8]


def _deep_merge(base: dict, top: dict) -> dict:
    """``top`` over ``base``: mappings merge key by key, anything else (lists too) is replaced."""
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def compose_recipes(raw: dict, path: Path) -> dict:
    """The suite ``raw`` over its recipes (``recipes: {group: option}``, composed in that order).

    Each recipe (``bench/recipes/<group>/<option>.yaml``) holds ``scales``, ``resources`` and/or
    ``reference`` entries (and a ``description``); the suite's own keys win over every recipe. The result
    carries ``recipes: {group: {"option", "version", "description", "file"}}``.
    """
    chosen = raw.get("recipes")
    if chosen is None or (isinstance(chosen, dict) and all(isinstance(x, dict) for x in chosen.values())):
        return raw  # no recipes, or already composed
    if not isinstance(chosen, dict):
        raise ConfigError(f"{path}: recipes: expected a mapping group: option, e.g. {{full: published}}, "
                          f"got {shown(chosen)}")
    groups = available_recipes()
    merged: dict = {}
    record: dict = {}
    for group, option in chosen.items():
        if group not in groups:
            raise ConfigError(f"{path}: recipes.{group}: {_unknown(group, groups, 'recipe group')}")
        if option is None:  # `recipes.<group>=null` drops a group
            continue
        if option not in groups[group]:
            raise ConfigError(f"{path}: recipes.{group}: {_unknown(option, groups[group], f'{group} recipe')}")
        file = RECIPES_DIR / group / f"{option}.yaml"
        fragment = read_yaml(file) or {}
        # its scales and resources as a suite's (schedule `datasets`: the ones the readers know)
        _validate(_schema()["recipe"], fragment, file, {"schedule_datasets": known_datasets()})
        record[group] = {"option": option, "version": recipe_hash({k: x for k, x in fragment.items()
                                                                   if k != "description"}),
                         "description": str(fragment.get("description", "")),
                         "file": str(file.relative_to(RECIPES_DIR.parents[1]))}
        merged = _deep_merge(merged, {k: copy.deepcopy(x) for k, x in fragment.items() if k != "description"})
    own = {k: x for k, x in raw.items() if k != "recipes"}
    out = _deep_merge(merged, own)
    out["recipes"] = record
    return out


def recipe_label(recipes: dict | None) -> str:
    """``full=published@1a2b3c4d, oas_stage2=lr_2e-5@…`` (``-`` for a suite without recipes)."""
    if not recipes:
        return "-"
    return ", ".join(f"{g}={r['option']}@{r['version']}" for g, r in recipes.items())


def load_suite(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Suite:
    """Read a suite by name (``bench/suites/<name>.yaml``) or path, apply overrides, compose its
    recipes, validate."""
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
    if isinstance(raw, dict):
        raw = compose_recipes(raw, Path(path))
    spec = _validate(_schema()["suite"], raw, path, context={})
    return Suite(name=spec["name"], path=Path(path), spec=spec)


# ----------------------------------------------------------------------------- schema
#
# The layout of the module docstring as pydantic models, built once at runtime (`_schema`) from the
# owners of the names. Every model is strict and forbids unknown keys; a rule pydantic has no
# constraint for is a validator raising `_fail`, and `_config_error` turns pydantic's first error
# into the ConfigError a user reads.

@dataclass(frozen=True)
class _Called:
    """``Annotated`` metadata of a vocabulary (a ``Literal``): what one of its names is called in
    messages ("matcher", "protocol", "vse_infty argument"; else "value")."""

    what: str


def _unknown(name, valid, what: str = "key") -> str:
    """``unknown <what> 'x'. Did you mean: …? Valid: …`` with the closest valid names (difflib)."""
    valid = sorted(valid)
    close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"unknown {what} {name!r}.{hint} Valid: {', '.join(valid)}"


def _fail(message: str) -> PydanticCustomError:
    """A rule of this schema broken: pydantic reports it at its key path, with this message."""
    return PydanticCustomError("suite_rule", "{message}", {"message": message})


def _fail_at(loc: tuple, message: str, value) -> ValidationError:
    """``_fail`` at ``loc`` below the field a validator checks (for rules over a whole list)."""
    return ValidationError.from_exception_data("suite", [{"type": _fail(message), "loc": loc, "input": value}])


def _null_is_empty(value):
    """``key:`` with nothing after it (YAML null) is an empty mapping."""
    return {} if value is None else value


def _by_name_alone(value):
    """An entry given by its name alone: ``- dbl`` means ``- {name: dbl}``."""
    return {"name": value} if isinstance(value, str) else value


def _non_empty_list(value):
    if not isinstance(value, list) or not value:
        raise _fail(f"expected a non-empty list, got {shown(value)}")
    return value


def _list_or_nothing(value):
    """``reference``: left out, null or empty means none."""
    return _non_empty_list(value) if value else []


def _sweep_values(value):
    if not isinstance(value, list) or not value:
        raise _fail(f"expected a non-empty list of values, got {shown(value)}")
    return value


def _a_string(value):
    """A protocol name is a string first (``expected str``), then one of the protocols."""
    if not isinstance(value, str):
        raise PydanticKnownError("string_type")
    return value


def _name_of(what: str) -> BeforeValidator:
    """A matcher or strategy ``name`` is a string first, then one of the registry's."""
    def check(value):
        if not isinstance(value, str):
            raise _fail(f"expected a {what} name (str), got {shown(value)}")
        return value
    return BeforeValidator(check)


def _in_range(seed: int) -> int:
    lo, hi = SEED_RANGE
    if not lo <= seed < hi:
        raise _fail(f"seed {seed} is outside [0, 2**32) (numpy's seed range); use a seed in 0 … {hi - 1}")
    return seed


def _defined_by_suite(scope: str, what: str) -> AfterValidator:
    """A name the suite defines itself (its datasets): one of ``context[scope]``, which ``SuiteFile``
    fills as its earlier keys pass."""
    def check(value, info: ValidationInfo):
        valid = (info.context or {}).get(scope, [])
        if value not in valid:
            raise _fail(_unknown(value, valid, what))
        return value
    return AfterValidator(check)


class _Strict(BaseModel):
    """A mapping of the suite layout: strict types, no unknown keys; null (``key:`` alone) is empty."""

    model_config = _STRICT
    missing_message: ClassVar[str] = "required key missing"  # what a required key left out is told

    @model_validator(mode="before")
    @classmethod
    def _null(cls, data):
        return _null_is_empty(data)


class _Given(_Strict):
    """A mapping of optional keys whose spec keeps only the keys given: in the order given (a scale's
    matcher overrides, a sweep, a resource entry) or, ``in_given_order = False``, in the schema's
    (a schedule entry: the trainer's defaults fill the rest)."""

    in_given_order: ClassVar[bool] = True
    _given: list = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_keys(cls, data, handler):
        model = handler(data)
        model._given = list(data) if isinstance(data, dict) else []
        return model

    @model_serializer
    def _given_only(self):
        keys = self._given
        if not self.in_given_order:
            given = set(keys)
            keys = [k for k in type(self).model_fields if k in given]
        return {k: getattr(self, k) for k in keys}


class _Schedule(_Given):
    in_given_order: ClassVar[bool] = False


class _Labelled(_Strict):
    """A dataset or matcher entry: ``label`` (how tables name it) defaults to its name."""

    @model_validator(mode="after")
    def _label_defaults_to_name(self):
        if self.label is None:
            self.label = self.name
        return self


class _StrategyEntry(_Strict):
    """A ``strategies`` entry of one strategy (``_strategy_model`` adds name, label, sweep, params).
    A swept parameter counts as given: its first value stands in while ``params`` is checked against
    the strategy's own parameters; the spec keeps it in ``sweep`` only."""

    @field_validator("params", mode="before", check_fields=False)
    @classmethod
    def _swept_count_as_given(cls, params, info: ValidationInfo):
        sweep = info.data.get("sweep")
        if sweep is None or (params is not None and not isinstance(params, dict)):
            return params
        return {**(params or {}), **{k: values[0] for k, values in sweep.model_dump().items()}}

    @model_validator(mode="after")
    def _the_strategy_accepts_them(self):
        """The strategy's constructor (the owner of its parameters' ranges) accepts every variant."""
        import itertools

        import strategies

        params = {k: getattr(self.params, k) for k in type(self.params).model_fields}
        swept = {k: v for k, v in self.sweep.model_dump().items()}
        for combo in itertools.product(*swept.values()):
            variant = {**params, **dict(zip(swept, combo))}
            try:
                strategies.build(self.name, **variant)
            except (ValueError, TypeError) as e:
                at = f" (sweep {dict(zip(swept, combo))})" if swept else ""
                raise _fail(f"params{at}: {e}") from None
        return self

    @model_serializer(mode="wrap")
    def _spec(self, handler):
        out = handler(self)
        params = {k: v for k, v in out["params"].items() if k not in out["sweep"]}
        return {"name": out["name"], "label": out["label"], "params": params, "sweep": out["sweep"]}


class _Wandb(_Strict):
    project: StrictStr = "itm-coop-bench"
    entity: StrictStr | None = None


class _Reference(_Strict):
    matcher: StrictStr = None  # left out: the rule below says what is needed
    where: Annotated[dict[Any, Any], BeforeValidator(_null_is_empty),
                     AfterValidator(lambda where: {k: str(v) for k, v in where.items()})] = None

    @model_validator(mode="after")
    def _both_given(self):
        if self.matcher is None or self.where is None:
            raise _fail("needs `matcher` (our label) and `where` (published.csv filters)")
        return self


def _schedule_fields() -> dict[str, tuple[Any, None]]:
    """The keys of one schedule entry, from ``schedule_keys()``: every key optional; counts >= 1; a key
    whose trainer default is None may be given as null."""
    from bench.schedule_limits import SCHEDULE_LIMITS

    nullable = _nullable_schedule_keys()
    fields = {}
    for k, kind in schedule_keys().items():
        ann = _annotation(kind)
        if k in POSITIVE_KEYS:
            ann = Annotated[ann, Field(ge=1)]
        if k in SCHEDULE_LIMITS:
            ann = Annotated[ann, AfterValidator(_within_limits(k))]
        fields[k] = (Optional[ann] if k in nullable else ann, None)  # noqa: UP045 - a runtime annotation
    return fields


def _within_limits(key: str):
    """The check of schedule ``key`` against ``bench.schedule_limits.SCHEDULE_LIMITS`` (the value is kept as given)."""
    def check(value):
        from bench.schedule_limits import schedule_limit_problem

        problem = schedule_limit_problem(key, value)
        if problem:
            raise _fail(problem)
        return value
    return check


def _params_model(name: str):
    """The pydantic model of strategy ``name``'s parameters, made from ``strategy_params(name)``."""
    key = f"params_model:{name}"
    if key not in _valid_cache:
        fields = {p: (_annotation(kind), ... if default is REQUIRED else default)
                  for p, (kind, default) in strategy_params(name).items()}
        _valid_cache[key] = create_model(
            f"Params_{name}", __base__=_Strict,
            missing_message=(ClassVar[str], f"required parameter of strategy {name!r} missing"), **fields)
    return _valid_cache[key]


def _strategy_model(name: str):
    """A ``strategies`` entry of strategy ``name``: its params model, and a sweep of its parameters."""
    sweep = create_model(f"Sweep_{name}", __base__=_Given, **{
        p: (Annotated[list[_annotation(kind)], BeforeValidator(_sweep_values)], None)
        for p, (kind, _) in strategy_params(name).items()})
    return create_model(f"Strategy_{name}", __base__=_StrategyEntry, name=(Literal[name], ...),
                        label=(StrictStr | None, None), sweep=(sweep, Field(default_factory=sweep)),
                        params=(_params_model(name), Field(None, validate_default=True)))


def _overrides(matcher: str) -> Any:
    """Overrides of ``matcher``'s constructor: its keyword arguments (any key for ``default`` or a
    matcher taking ``**kwargs``), in the order given."""
    args = None if matcher == "default" else matcher_args(matcher)
    key = Any if args is None else Annotated[Literal[tuple(sorted(args))], _Called(f"{matcher} argument")]
    return Annotated[dict[key, Any], BeforeValidator(_null_is_empty), AfterValidator(_argument_values(matcher))]


def matcher_arg_kinds(name: str) -> dict[str, tuple[type, Any]]:
    """{argument: (int | float | bool | str, default)} of matcher ``name``'s constructor: the annotation
    where it is a plain type, else the default's type (arguments of neither are not checked)."""
    key = f"mkinds:{name}"
    if key not in _valid_cache:
        import inspect
        import typing

        import models

        models.constructor_args(name)  # registers every matcher
        ctor = models._REGISTRY[name]
        fn = ctor.__init__ if inspect.isclass(ctor) else ctor
        try:
            hints = typing.get_type_hints(fn)
        except Exception:  # noqa: BLE001 - an unresolvable annotation: the defaults' types
            hints = {}
        kinds = {}
        for p in inspect.signature(fn).parameters.values():
            default = None if p.default is p.empty else p.default
            kind = hints.get(p.name)
            if kind not in (int, float, bool, str):
                kind = type(default) if isinstance(default, (int, float, bool, str)) else None
            if kind is not None:
                kinds[p.name] = (kind, default)
        _valid_cache[key] = kinds
    return _valid_cache[key]


def _argument_problem(arg: str, kind: type, default, value) -> str | None:
    """What is wrong with ``value`` for a matcher argument of type ``kind`` (None: nothing). Sizes and
    counts (an int argument whose default is >= 1, or without a default) must be >= 1, dropouts in [0, 1)."""
    if value is None:
        return None
    got = f"got {type(value).__name__} {shown(value)}"
    if kind is bool and not isinstance(value, bool):
        return f"expected true or false, {got}"
    if kind is str and not isinstance(value, str):
        return f"expected str, {got}"
    if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
        return f"expected int, {got}; write it without quotes or a decimal point, e.g. {arg}: {default or 1}"
    if kind is float and (not isinstance(value, (int, float)) or isinstance(value, bool)):
        return f"expected a number, {got}; write it without quotes, e.g. {arg}: {default}"
    if kind is float and not math.isfinite(value):
        return f"expected a finite number, {got}"
    if kind is int and (default is None or default >= 1) and value < 1:
        return f"must be at least 1, got {shown(value)}: a size or count of 0 or less builds no model"
    if kind is float and "dropout" in arg and not 0 <= value < 1:
        return f"must be in [0, 1), got {shown(value)}: a dropout probability"
    return None


def _argument_values(matcher: str):
    """The check of a matcher's override values against its constructor's argument types (``default``:
    against every matcher that has the argument); the mapping is kept as given (cell ids are unchanged)."""
    def check(overrides: dict) -> dict:
        names = valid_matchers() if matcher == "default" else [matcher]
        for arg, value in overrides.items():
            for name in names:
                kind = matcher_arg_kinds(name).get(arg)
                problem = kind and _argument_problem(arg, *kind, value)
                if problem:
                    raise _fail_at((arg,), f"{problem}" + (f" (an argument of {name})" if matcher == "default" else ""),
                                   value)
        return overrides
    return check


def _matcher_model(name: str):
    in_suite = Annotated[StrictStr, _defined_by_suite("datasets", "dataset")]
    return create_model(f"Matcher_{name}", __base__=_Labelled, name=(Literal[name], ...),
                        label=(StrictStr, None), overrides=(_overrides(name), Field(default_factory=dict)),
                        datasets=(list[in_suite] | None, None))


def _by_name(models: dict[str, type[BaseModel]], what: str) -> Any:
    """An entry whose ``name`` picks its model (a discriminated union; the name alone is shorthand);
    an entry without a known name goes to a fallback that reports the name (``expected a <what> name``,
    ``unknown <what>``) after its unknown keys, as for any entry."""
    keys = next(iter(models.values())).model_fields
    name = Annotated[Literal[tuple(models)], _Called(what), _name_of(what)]
    fallback = create_model(f"Unknown_{what}", __base__=_Strict, **{k: (Any, None) for k in keys} | {
        "name": (name, Field(None, validate_default=True))})

    def tag(entry) -> str:
        name = entry.get("name") if isinstance(entry, dict) else getattr(entry, "name", None)
        return name if isinstance(name, str) and name in models else "?"

    members = tuple(Annotated[m, Tag(n)] for n, m in models.items()) + (Annotated[fallback, Tag("?")],)
    return Annotated[Union[members], Discriminator(tag), BeforeValidator(_by_name_alone)]  # noqa: UP007


def _schema() -> dict[str, type[BaseModel]]:
    """The models of a suite file (``suite``) and of a recipe file (``recipe``), built once."""
    if "schema" in _valid_cache:
        return _valid_cache["schema"]
    from bench.protocols import PROTOCOLS

    per_matcher = ("default", *valid_matchers())

    def table(entry, keys=per_matcher) -> Any:
        """``{key: entry}``: checked, and kept, in the order given."""
        key = Annotated[Literal[keys], _Called("key")]
        return Annotated[dict[key, entry], BeforeValidator(_null_is_empty)]

    sched = _schedule_fields()
    Stage2 = create_model("OasStage2", __base__=_Schedule, **sched)
    DatasetSchedule = create_model("DatasetSchedule", __base__=_Schedule, **sched, oas_stage2=(Stage2, None))
    dataset_key = Annotated[Any, _defined_by_suite("schedule_datasets", "key")]
    Schedules = table(create_model(
        "Schedule", __base__=_Schedule, **sched, oas_stage2=(Stage2, None),
        datasets=(Annotated[dict[dataset_key, DatasetSchedule], BeforeValidator(_null_is_empty)], None)))
    ScaleMatchers = create_model("ScaleMatchers", __base__=_Given,
                                 **{m: (_overrides(m), None) for m in per_matcher})
    Scale = create_model("Scale", __base__=_Strict, schedule=(Schedules, Field(default_factory=dict)),
                         matchers=(ScaleMatchers, Field(default_factory=ScaleMatchers)))
    Scales = table(Scale, ("full", "smoke"))
    Resources = table(create_model("Resource", __base__=_Given, **{
        k: (Annotated[_annotation(kind), Field(ge=0 if k == "gpus" else 1)] if kind is int else _annotation(kind),
            None) for k, kind in RESOURCE_KEYS.items()}))
    Protocol = Annotated[Literal[tuple(PROTOCOLS)], _Called("protocol"), BeforeValidator(_a_string)]
    Count = Annotated[StrictInt, Field(ge=1)]
    Matcher = _by_name({m: _matcher_model(m) for m in valid_matchers()}, "matcher")
    Strategy = _by_name({s: _strategy_model(s) for s in valid_strategies()}, "strategy")

    class Eval(_Strict):
        protocols: list[Protocol] = Field(default_factory=list)
        dev_images: Count = EVAL_DEFAULTS["dev_images"]
        batch_size: Count = Field(None, exclude_if=lambda v: v is None)

    class Dataset(_Labelled):
        name: Annotated[Literal[tuple(known_datasets())], _Called("dataset"), BeforeValidator(_a_string)]
        label: StrictStr = None
        data_root: StrictStr | None = None
        vocab_root: StrictStr | None = None
        protocols: list[Protocol] = Field(None, validate_default=True)

        @field_validator("protocols", mode="before")
        @classmethod
        def _else_the_suites(cls, protocols, info: ValidationInfo):
            return protocols or (info.context or {}).get("protocols", [])

        @field_validator("protocols")
        @classmethod
        def _else_the_datasets(cls, protocols, info: ValidationInfo):
            name = info.data.get("name")
            if name is None:  # reported already
                return protocols
            protocols = protocols or default_protocols_for(name)
            if not protocols:
                raise _fail(f"no evaluation protocol known for dataset {name!r}: set `protocols` here or in "
                            "eval.protocols")
            own = default_protocols_for(name)
            for p in protocols:  # a protocol reads one dataset's split: on another it would title a lie
                if p not in own:
                    from_eval = " (from eval.protocols, which applies to every dataset)" \
                        if info.context.get("protocols") == protocols else ""
                    raise _fail(f"protocol {p!r}{from_eval} evaluates {PROTOCOLS[p].dataset}, not this dataset's "
                                f"{name}; give {' or '.join(own)}, or leave `protocols` out for the dataset's own")
            return protocols

    class SuiteFile(_Strict):
        """A suite, its keys in the order they are checked. The names a suite defines for its later
        keys go to the validation context as they pass: eval.protocols (the datasets' default), the
        dataset names (``matchers[i].datasets``, a schedule's ``datasets``)."""

        name: StrictStr
        description: StrictStr = ""
        wandb: _Wandb = Field(default_factory=_Wandb)
        scale: Literal["full", "smoke"] = "full"
        data_root: StrictStr | None = None
        vocab_root: StrictStr | None = None
        anchor_checkpoint: StrictStr | None = None
        eval: Eval = Field(default_factory=Eval)
        datasets: Annotated[list[Annotated[Dataset, BeforeValidator(_by_name_alone)]],
                            BeforeValidator(_non_empty_list)]
        matchers: Annotated[list[Matcher], BeforeValidator(_non_empty_list)]
        strategies: Annotated[list[Strategy], BeforeValidator(_non_empty_list)]
        seeds: list[Annotated[StrictInt, AfterValidator(_in_range)]]
        scales: Scales
        recipes: Annotated[Any, AfterValidator(lambda recipes: recipes or {})] = Field(None, validate_default=True)
        schedule: Schedules = Field(default_factory=dict)
        reference: Annotated[list[_Reference], BeforeValidator(_list_or_nothing)] = Field(default_factory=list)
        resources: Resources = Field(default_factory=dict)

        @field_validator("name")
        @classmethod
        def _a_folder_name(cls, name: str) -> str:
            if not is_plain_name(name):
                raise _fail(f"{name!r} would write run folders and tables outside --root: use a plain name of "
                            "letters, digits, '.', '_', '+' or '-', without '/' or '..'")
            return name

        @field_validator("anchor_checkpoint")
        @classmethod
        def _a_file(cls, path: str | None) -> str | None:
            """A trained checkpoint (this suite's best.pt or an official one) that replaces the OAS baseline."""
            path = expand_path(path)  # ~ and $VARS, as every path of a suite
            if path is not None and not Path(path).is_file():
                raise _fail(f"{path!r} is not a file; give the path of a best.pt of this suite or of an official "
                            "checkpoint (model_best.pth / model_best.pth.tar)")
            return path

        @field_validator("eval")
        @classmethod
        def _share_protocols(cls, ev, info: ValidationInfo):
            info.context["protocols"] = ev.protocols
            return ev

        @field_validator("datasets")
        @classmethod
        def _share_dataset_names(cls, datasets, info: ValidationInfo):
            _distinct_labels(datasets, "datasets", "dataset")
            names = [d.name for d in datasets]
            info.context.update(datasets=names, schedule_datasets=sorted(set(names) | set(known_datasets())))
            return datasets

        @field_validator("matchers")
        @classmethod
        def _distinct_matcher_labels(cls, matchers):
            _distinct_labels(matchers, "matchers", "matcher", tagged=True)
            return matchers

        @field_validator("seeds")
        @classmethod
        def _each_seed_once(cls, seeds: list[int]) -> list[int]:
            if not seeds:
                raise _fail("empty list: give at least one seed")
            dupes = sorted({x for x in seeds if seeds.count(x) > 1})
            if dupes:
                raise _fail(f"seed(s) {dupes} listed more than once in {seeds}; list each seed once")
            return seeds

        @field_validator("scales")
        @classmethod
        def _the_chosen_scale(cls, scales, info: ValidationInfo):
            scale = info.data.get("scale")
            if scale is not None and scale not in scales:
                raise _fail(f"no entry for the chosen scale {scale!r} (have: {', '.join(scales)})")
            return scales

    Recipe = create_model("Recipe", __base__=_Strict, description=(Any, None), reference=(Any, None),
                          scales=(Scales, Field(default_factory=dict)),
                          resources=(Resources, Field(default_factory=dict)))
    _valid_cache["schema"] = {"suite": SuiteFile, "recipe": Recipe}
    return _valid_cache["schema"]


def _distinct_labels(entries: list, key: str, what: str, tagged: bool = False) -> None:
    """Two datasets (matchers) of one label would share a table row. ``tagged``: the entries are a
    union by name, whose member (tag) is part of pydantic's location."""
    seen: dict[str, int] = {}
    for i, e in enumerate(entries):
        if e.label in seen:
            j = seen[e.label]
            raise _fail_at((i, e.name, "label") if tagged else (i, "label"),
                           f"{what}s {key}[{j}] ({entries[j].name}) and {key}[{i}] ({e.name}) have the same label "
                           f"{e.label!r}; give each {what} a distinct `label`", e.label)
        seen[e.label] = i


# ----------------------------------------------------------------------------- errors

_EXPECTED = {"int_type": "int", "float_type": "float", "string_type": "str", "bool_type": "bool",
             "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping"}


def _config_error(file, error: ValidationError, schema: type[BaseModel]) -> ConfigError:
    """The ConfigError of pydantic's first error (``_first``): the file, the key path, what is wrong
    with the value and, for a name, the closest valid ones."""
    err = _first(error.errors(include_url=False))
    path, node, owner = _locate(schema, err["loc"])
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        text = _unknown(err["loc"][-1], owner.model_fields)
    elif kind == "missing":
        text = owner.missing_message
    elif kind == "literal_error":
        text = _unknown(value, *_vocabulary(node))
    elif kind in _EXPECTED:
        text = f"expected {_EXPECTED[kind]}, got {type(value).__name__} {shown(value)}"
    elif kind == "finite_number":
        text = (f"expected a finite number, got {shown(value)} (YAML reads .nan and .inf as floats); "
                "give a number, e.g. 1.0")
    elif kind == "greater_than_equal":
        least = (err.get("ctx") or {}).get("ge", 1)
        text = f"must be at least {least}, got {shown(value)}" + (
            "; a count of 0 or less trains or evaluates nothing (leave the key out for the default)"
            if least == 1 else "")
    elif kind == "suite_rule":  # raised by this schema's validators (`_fail`): the message says it all
        text = err["msg"]
    else:
        text = f"{err['msg']}, got {type(value).__name__} {shown(value)}"
    return ConfigError(f"{file}: {path}: {text}")


def _first(errors: list[dict]) -> dict:
    """The error a reader meets first. Pydantic lists a mapping's unknown and missing keys after the
    errors of its values; read top-down, a mapping's unknown keys come first, then its missing ones."""
    loc = errors[0]["loc"]
    keys = [(problem, e) for e in errors if (problem := _key_problem(e))]
    for depth in range(len(loc)):
        for kind in ("unknown", "missing"):
            for (problem, mapping), e in keys:
                if problem == kind and mapping == loc[:depth]:
                    return e
    return errors[0]


def _key_problem(err: dict) -> tuple[str, tuple] | None:
    """("unknown" or "missing", the location of the mapping) for an error about a key, else None."""
    loc = err["loc"]
    if err["type"] == "extra_forbidden":
        return "unknown", loc[:-1]
    if loc[-1:] == ("[key]",):  # a key of a table: pydantic locates it as (..., key, "[key]")
        return "unknown", loc[:-2]
    if err["type"] == "missing":
        return "missing", loc[:-1]
    return None


def _locate(schema: type[BaseModel], loc: tuple) -> tuple[str, Any, type[BaseModel]]:
    """Follow pydantic's error location through the schema: the key path as the file spells it
    (``strategies[1].params.scenario``), the annotation found there and the model holding its key."""
    path, node, owner = "", schema, schema
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        node = _bare(node)
        origin = get_origin(node)
        if origin in (Union, types.UnionType):  # an entry picked by name (`_by_name`): `part` is its tag
            node = next(m for m in get_args(node) if _tag(m) == part)
            continue
        if isinstance(node, type) and issubclass(node, BaseModel):
            owner, field = node, node.model_fields.get(part)
            node = field.rebuild_annotation() if field else None
        elif origin is dict:
            key = parts[:1] == ["[key]"]
            parts = parts[1:] if key else parts
            node = get_args(node)[0 if key else 1]
        elif origin is list or isinstance(part, int):
            node = get_args(node)[0] if origin is list else None
            path += f"[{part}]"
            continue
        else:
            node = None
        path += f".{part}" if path else str(part)
    return path, node, owner


def _bare(node):
    """``node`` without its ``Annotated`` metadata and without ``| None``."""
    while True:
        if get_origin(node) is Annotated:
            node = get_args(node)[0]
        elif get_origin(node) in (Union, types.UnionType) and type(None) in get_args(node):
            node = next(a for a in get_args(node) if a is not type(None))
        else:
            return node


def _tag(member) -> str | None:
    return next((m.tag for m in get_args(member)[1:] if isinstance(m, Tag)), None)


def _vocabulary(node) -> tuple[tuple, str]:
    """The names of a ``Literal`` annotation and what one is called (``_Called``, else "value")."""
    what = "value"
    while get_origin(node) is Annotated:
        node, *meta = get_args(node)
        what = next((m.what for m in meta if isinstance(m, _Called)), what)
    return get_args(node), what


def _validate(schema: type[BaseModel], raw, file, context: dict) -> dict:
    """``raw`` checked against ``schema`` and dumped with defaults filled; ConfigError naming ``file``."""
    try:
        return schema.model_validate(raw, context=context).model_dump()
    except ValidationError as e:
        raise _config_error(file, e, schema) from None


def default_protocols_for(dataset: str) -> list[str]:
    """The protocols ``bench.protocols`` names for a dataset (f30k -> f30k_1k; coco -> coco_1k, coco_5k)."""
    try:
        from bench.protocols import protocols_for

        return [p.name for p in protocols_for(dataset)]
    except Exception:  # noqa: BLE001 - unknown dataset or module not importable: the suite must say
        return []


def resolve_root(explicit: str | None, suite_default: str | None, env: str) -> str | None:
    """A dataset's root: its own entry, else the suite's, else the environment variable ``env`` (``~`` and
    ``$VARS`` expanded: the cell records the expanded path)."""
    return expand_path(explicit or suite_default or os.environ.get(env) or None)
