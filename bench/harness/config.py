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
``bench.train.SCHEDULE_DEFAULTS``. Values are checked by pydantic (strict types, finite floats,
counts >= 1; models built from those owners), structure and names by the walker below, and
pydantic's errors are re-worded with the key path and the closest valid names.

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
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    create_model,
)

SUITES_DIR = Path(__file__).resolve().parents[1] / "suites"
RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"

REQUIRED = object()

# Strategy parameters a suite must state (their constructor defaults exist for direct use). Every
# other fact about a parameter (name, type, default, choices) comes from the constructor's
# signature (`typing.Literal` annotations give the choices): see `strategy_params`.
SUITE_REQUIRED_PARAMS = {"dbl": ("loss", "scenario")}
# What a schedule key's default in bench.train.SCHEDULE_DEFAULTS cannot tell about its type (a None
# or empty default, a closed set of strings); every other key's type is its default's.
_SCHEDULE_TYPE_HINTS: dict[str, Any] = {
    "lr_schedule": ("step", "constant"),
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
RESOURCE_KEYS = {"gpus": int, "cpus": int, "mem_gb": int, "time_min": int, "partition": str}
DEFAULT_RESOURCES = {"gpus": 1, "cpus": 8, "mem_gb": 64, "time_min": 24 * 60}


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
    """The trainer's schedule keys (``bench.train.SCHEDULE_DEFAULTS``) -> their kind (see ``typed``)."""
    if "schedule" not in _valid_cache:
        from bench.train import SCHEDULE_DEFAULTS

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


def _adapter(kind) -> TypeAdapter:
    key = f"adapter:{kind!r}"
    if key not in _valid_cache:
        _valid_cache[key] = TypeAdapter(_annotation(kind), config=ConfigDict(strict=True))
    return _valid_cache[key]


def _schedule_model():
    """The pydantic model of one schedule entry, made from ``schedule_keys()`` (every key optional;
    counts >= 1; a key whose trainer default is None may be given as null)."""
    if "schedule_model" not in _valid_cache:
        nullable = _nullable_schedule_keys()
        fields = {}
        for k, kind in schedule_keys().items():
            ann = _annotation(kind)
            if k in POSITIVE_KEYS:
                ann = Annotated[ann, Field(ge=1)]
            fields[k] = (Optional[ann] if k in nullable else ann, None)  # noqa: UP045 - a runtime annotation
        _valid_cache["schedule_model"] = create_model("Schedule", __config__=_STRICT, **fields)
    return _valid_cache["schedule_model"]


def _params_model(name: str):
    """The pydantic model of strategy ``name``'s parameters, made from ``strategy_params(name)``."""
    key = f"params_model:{name}"
    if key not in _valid_cache:
        fields = {p: (_annotation(kind), ... if default is REQUIRED else default)
                  for p, (kind, default) in strategy_params(name).items()}
        _valid_cache[key] = create_model(f"Params_{name}", __config__=_STRICT, **fields)
    return _valid_cache[key]


def _nullable_schedule_keys() -> set[str]:
    from bench.train import SCHEDULE_DEFAULTS

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
_TRAINER_STRATEGY_ARGS = {"self", "base_loss", "margin", "max_violation", "hinge_warmup_epochs"}


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

def parse_override(text: str) -> tuple[list[str], Any]:
    """``"schedule.vse_infty.epochs=2"`` -> (["schedule", "vse_infty", "epochs"], 2); value read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. scale=smoke or seeds=[0,1]")
    key, value = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {text!r}: empty key")
    return path, yaml.safe_load(value) if value.strip() else None


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Set each dotted ``key=value`` in a copy of ``raw`` (integer segments index lists)."""
    raw = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            if isinstance(node, list):
                node = _list_item(node, part, text)
                continue
            if not isinstance(node.get(part), (dict, list)):
                node[part] = {}
            node = node[part]
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
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None


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
                          f"got {chosen!r}")
    groups = available_recipes()
    merged: dict = {}
    record: dict = {}
    v = _Validator(str(path))
    for group, option in chosen.items():
        if group not in groups:
            v.unknown(f"recipes.{group}", group, groups, what="recipe group")
        if option is None:  # `recipes.<group>=null` drops a group
            continue
        if option not in groups[group]:
            v.unknown(f"recipes.{group}", option, groups[group], what=f"{group} recipe")
        file = RECIPES_DIR / group / f"{option}.yaml"
        body = read_yaml(file) or {}
        fragment = _Validator(str(file)).mapping("", body, {"description", "scales", "resources", "reference"})
        _Validator(str(file)).recipe(fragment)
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
    v = _Validator(str(path))
    if isinstance(raw, dict):
        raw = compose_recipes(raw, Path(path))
    spec = v.suite(raw)
    return Suite(name=spec["name"], path=Path(path), spec=spec)


# ----------------------------------------------------------------------------- schema

class _Validator:
    def __init__(self, file: str):
        self.file = file

    def fail(self, key: str, msg: str) -> None:
        raise ConfigError(f"{self.file}: {key}: {msg}")

    def unknown(self, key: str, name: str, valid, what: str = "key") -> None:
        valid = sorted(valid)
        close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        self.fail(key, f"unknown {what} {name!r}.{hint} Valid: {', '.join(valid)}")

    def mapping(self, key: str, value, allowed) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(key, f"expected a mapping, got {type(value).__name__} {value!r}")
        for k in value:
            if allowed is not None and k not in allowed:
                self.unknown(f"{key}.{k}" if key else k, k, allowed)
        return value

    def typed(self, key: str, value, kind):
        """Check ``value`` against ``kind`` (a type, a tuple of choices, or [type] for a list) with
        pydantic (strict: no bool for a number, no "3" for an int; floats finite, "5e-4" read)."""
        try:
            return _adapter(kind).validate_python(value)
        except ValidationError as e:
            self.pydantic_error(key, e, {None: kind})

    def pydantic_error(self, key: str, e: ValidationError, kinds: dict, valid=None, what: str = "") -> None:
        """Raise the first of pydantic's errors as a ConfigError: ``key`` + its location, the value,
        the expected kind (``kinds`` by field name; None: the value itself) and the closest names."""
        err = e.errors(include_url=False)[0]
        loc, kind_, value = list(err["loc"]), err["type"], err.get("input")
        field = loc.pop(0) if loc and isinstance(loc[0], str) else None
        path = key + (f".{field}" if field is not None else "") + "".join(f"[{p}]" for p in loc)
        kind = kinds.get(field, object)
        if loc and isinstance(kind, list):
            kind = kind[0]
        if kind_ == "extra_forbidden":
            self.unknown(path, field, valid if valid is not None else kinds)
        if kind_ == "missing":
            self.fail(path, f"required parameter{what} missing")
        if kind_ == "literal_error":
            self.unknown(path, value, kind, what="value")
        if kind_ == "finite_number":
            self.fail(path, f"expected a finite number, got {value!r} (YAML reads .nan and .inf as floats); "
                            "give a number, e.g. 1.0")
        if kind_ == "greater_than_equal":
            self.positive(path, value)
        if kind_ == "list_type":
            self.fail(path, f"expected a list, got {type(value).__name__} {value!r}")
        name = kind.__name__ if isinstance(kind, type) else str(kind)
        self.fail(path, f"expected {name}, got {type(value).__name__} {value!r}")

    def name(self, key: str, value, valid: list[str], what: str) -> str:
        if not isinstance(value, str):
            self.fail(key, f"expected a {what} name (str), got {value!r}")
        if value not in valid:
            self.unknown(key, value, valid, what=what)
        return value

    def suite(self, raw) -> dict:
        top = {"name", "description", "wandb", "scale", "data_root", "vocab_root", "datasets", "matchers",
               "strategies", "seeds", "scales", "schedule", "eval", "reference", "resources", "recipes",
               "anchor_checkpoint"}
        raw = self.mapping("", raw, top)
        for req in ("name", "datasets", "matchers", "strategies", "seeds", "scales"):
            if req not in raw:
                self.fail(req, "required key missing")
        matchers = valid_matchers()
        spec: dict = {
            "name": self.typed("name", raw["name"], str),
            "description": self.typed("description", raw.get("description", ""), str),
        }
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", spec["name"]) or ".." in spec["name"]:  # a folder name
            self.fail("name", f"{spec['name']!r} would write run folders and tables outside --root: use a plain "
                              "name of letters, digits, '.', '_', '+' or '-', without '/' or '..'")
        wb = self.mapping("wandb", raw.get("wandb"), {"project", "entity"})
        spec["wandb"] = {"project": self.typed("wandb.project", wb.get("project", "itm-coop-bench"), str),
                         "entity": self._opt_str("wandb.entity", wb.get("entity"))}
        spec["scale"] = self.typed("scale", raw.get("scale", "full"), ("full", "smoke"))
        spec["data_root"] = self._opt_str("data_root", raw.get("data_root"))
        spec["vocab_root"] = self._opt_str("vocab_root", raw.get("vocab_root"))
        spec["anchor_checkpoint"] = self.anchor_checkpoint(raw.get("anchor_checkpoint"))
        ev = self.mapping("eval", raw.get("eval"), {"protocols", "dev_images", "batch_size"})
        spec["eval"] = {"protocols": self.protocols("eval.protocols", ev.get("protocols", [])),
                        "dev_images": self.typed("eval.dev_images", ev.get("dev_images", 1000), int)}
        self.positive("eval.dev_images", spec["eval"]["dev_images"])
        if "batch_size" in ev:
            spec["eval"]["batch_size"] = self.typed("eval.batch_size", ev["batch_size"], int)
            self.positive("eval.batch_size", spec["eval"]["batch_size"])
        spec["datasets"] = [self.dataset(f"datasets[{i}]", d, spec["eval"]["protocols"])
                            for i, d in enumerate(self._list("datasets", raw["datasets"]))]
        dataset_names = [d["name"] for d in spec["datasets"]]
        self.distinct_labels("datasets", spec["datasets"], "dataset")
        spec["matchers"] = [self.matcher(f"matchers[{i}]", m, matchers, dataset_names)
                            for i, m in enumerate(self._list("matchers", raw["matchers"]))]
        self.distinct_labels("matchers", spec["matchers"], "matcher")
        spec["strategies"] = [self.strategy(f"strategies[{i}]", s)
                              for i, s in enumerate(self._list("strategies", raw["strategies"]))]
        spec["seeds"] = self.typed("seeds", raw["seeds"], [int])
        if not spec["seeds"]:
            self.fail("seeds", "empty list: give at least one seed")
        lo, hi = SEED_RANGE
        for i, seed in enumerate(spec["seeds"]):
            if not lo <= seed < hi:
                self.fail(f"seeds[{i}]", f"seed {seed} is outside [0, 2**32) (numpy's seed range); use a seed "
                                         f"in 0 … {hi - 1}")
        dupes = sorted({x for x in spec["seeds"] if spec["seeds"].count(x) > 1})
        if dupes:
            self.fail("seeds", f"seed(s) {dupes} listed more than once in {spec['seeds']}; list each seed once")
        scales = self.mapping("scales", raw["scales"], {"full", "smoke"})
        if spec["scale"] not in scales:
            self.fail("scales", f"no entry for the chosen scale {spec['scale']!r} (have: {', '.join(scales)})")
        self.dataset_names = sorted(set(dataset_names) | set(known_datasets()))
        spec["scales"] = self.scales(scales, matchers)
        spec["recipes"] = raw.get("recipes") or {}
        spec["schedule"] = self.schedules("schedule", raw.get("schedule"), matchers)
        spec["reference"] = []
        for i, r in enumerate(self._list("reference", raw.get("reference") or [], allow_empty=True)):
            r = self.mapping(f"reference[{i}]", r, {"matcher", "where"})
            if "matcher" not in r or "where" not in r:
                self.fail(f"reference[{i}]", "needs `matcher` (our label) and `where` (published.csv filters)")
            where = self.mapping(f"reference[{i}].where", r["where"], None)
            spec["reference"].append({"matcher": self.typed(f"reference[{i}].matcher", r["matcher"], str),
                                      "where": {k: str(v) for k, v in where.items()}})
        spec["resources"] = self.resources(raw.get("resources"), matchers)
        return spec

    def scales(self, scales: dict, matchers: list[str]) -> dict:
        out = {}
        for sc, body in scales.items():
            body = self.mapping(f"scales.{sc}", body, {"schedule", "matchers"})
            over = self.mapping(f"scales.{sc}.matchers", body.get("matchers"), matchers + ["default"])
            out[sc] = {
                "schedule": self.schedules(f"scales.{sc}.schedule", body.get("schedule"), matchers),
                "matchers": {m: self.matcher_overrides(f"scales.{sc}.matchers.{m}", o, m) for m, o in over.items()},
            }
        return out

    def resources(self, raw, matchers: list[str]) -> dict:
        res = self.mapping("resources", raw, matchers + ["default"])
        out = {}
        for m, body in res.items():
            body = self.mapping(f"resources.{m}", body, RESOURCE_KEYS)
            out[m] = {k: self.typed(f"resources.{m}.{k}", v, RESOURCE_KEYS[k]) for k, v in body.items()}
        return out

    def recipe(self, body: dict) -> None:
        """Check a recipe file's ``scales`` and ``resources`` (bench/recipes/<group>/<option>.yaml)."""
        matchers = valid_matchers()
        self.dataset_names = known_datasets()
        self.scales(self.mapping("scales", body.get("scales"), {"full", "smoke"}), matchers)
        self.resources(body.get("resources"), matchers)

    def matcher_overrides(self, key: str, overrides, matcher: str) -> dict:
        """Overrides of ``matcher``'s constructor: every key must be one of its keyword arguments."""
        overrides = dict(self.mapping(key, overrides, None))
        if matcher == "default":
            return overrides
        args = matcher_args(matcher)
        if args is not None:
            for k in overrides:
                if k not in args:
                    self.unknown(f"{key}.{k}", k, args, what=f"{matcher} argument")
        return overrides

    def protocols(self, key: str, value) -> list[str]:
        from bench.protocols import PROTOCOLS

        names = self.typed(key, value, [str])
        for i, p in enumerate(names):
            if p not in PROTOCOLS:
                self.unknown(f"{key}[{i}]", p, PROTOCOLS, what="protocol")
        return names

    def distinct_labels(self, key: str, entries: list[dict], what: str) -> None:
        seen: dict[str, int] = {}
        for i, e in enumerate(entries):
            if e["label"] in seen:
                j = seen[e["label"]]
                self.fail(f"{key}[{i}].label", f"{what}s {key}[{j}] ({entries[j]['name']}) and {key}[{i}] "
                                               f"({e['name']}) have the same label {e['label']!r}; give each "
                                               f"{what} a distinct `label`")
            seen[e["label"]] = i

    def anchor_checkpoint(self, value):
        """A trained checkpoint (this suite's best.pt or an official release) that replaces the OAS baseline."""
        path = self._opt_str("anchor_checkpoint", value)
        if path is not None and not Path(path).is_file():
            self.fail("anchor_checkpoint", f"{path!r} is not a file; give the path of a best.pt of this suite or "
                      "of an official checkpoint (model_best.pth / model_best.pth.tar)")
        return path

    def _opt_str(self, key, value):
        return None if value is None else self.typed(key, value, str)

    def _list(self, key, value, allow_empty=False) -> list:
        if not isinstance(value, list) or (not value and not allow_empty):
            self.fail(key, f"expected a non-empty list, got {value!r}")
        return value

    def dataset(self, key, d, default_protocols) -> dict:
        if isinstance(d, str):
            d = {"name": d}
        d = self.mapping(key, d, {"name", "label", "data_root", "vocab_root", "protocols"})
        if "name" not in d:
            self.fail(f"{key}.name", "required key missing")
        name = self.typed(f"{key}.name", d["name"], str)
        protocols = self.protocols(f"{key}.protocols", d.get("protocols") or default_protocols) \
            or default_protocols_for(name)
        if not protocols:
            self.fail(f"{key}.protocols", f"no evaluation protocol known for dataset {name!r}: set "
                                          "`protocols` here or in eval.protocols")
        return {"name": name, "label": self.typed(f"{key}.label", d.get("label", name), str),
                "data_root": self._opt_str(f"{key}.data_root", d.get("data_root")),
                "vocab_root": self._opt_str(f"{key}.vocab_root", d.get("vocab_root")),
                "protocols": protocols}

    def matcher(self, key, m, valid, dataset_names) -> dict:
        if isinstance(m, str):
            m = {"name": m}
        m = self.mapping(key, m, {"name", "label", "overrides", "datasets"})
        name = self.name(f"{key}.name", m.get("name"), valid, "matcher")
        only = m.get("datasets")
        if only is not None:
            for j, dn in enumerate(self.typed(f"{key}.datasets", only, [str])):
                if dn not in dataset_names:
                    self.unknown(f"{key}.datasets[{j}]", dn, dataset_names, what="dataset")
        return {"name": name, "label": self.typed(f"{key}.label", m.get("label", name), str),
                "overrides": self.matcher_overrides(f"{key}.overrides", m.get("overrides"), name),
                "datasets": only}

    def strategy(self, key, s) -> dict:
        if isinstance(s, str):
            s = {"name": s}
        s = self.mapping(key, s, {"name", "label", "params", "sweep"})
        name = self.name(f"{key}.name", s.get("name"), valid_strategies(), "strategy")
        vocab = strategy_params(name)
        params = self.mapping(f"{key}.params", s.get("params"), vocab)
        sweep = self.mapping(f"{key}.sweep", s.get("sweep"), vocab)
        for k, values in sweep.items():
            if not isinstance(values, list) or not values:
                self.fail(f"{key}.sweep.{k}", f"expected a non-empty list of values, got {values!r}")
            if vocab is not None:
                sweep[k] = [self.typed(f"{key}.sweep.{k}[{i}]", x, vocab[k][0]) for i, x in enumerate(values)]
        given = dict(params) | {k: v[0] for k, v in sweep.items()}  # a swept parameter counts as given
        try:
            filled = _params_model(name).model_validate(given).model_dump()
        except ValidationError as e:
            self.pydantic_error(f"{key}.params", e, {p: k for p, (k, _) in vocab.items()},
                                what=f" of strategy {name!r}")
        filled = {p: v for p, v in filled.items() if p not in sweep}
        label = s.get("label")
        return {"name": name, "label": None if label is None else self.typed(f"{key}.label", label, str),
                "params": filled, "sweep": dict(sweep)}

    def schedules(self, key, table, matchers) -> dict:
        table = self.mapping(key, table, matchers + ["default"])
        keys = schedule_keys()
        out = {}
        for m, entry in table.items():
            entry = self.mapping(f"{key}.{m}", entry, list(keys) + ["datasets", "oas_stage2"])
            e = self.schedule_keys(f"{key}.{m}", {k: v for k, v in entry.items() if k in keys})
            if "oas_stage2" in entry:
                e["oas_stage2"] = self.schedule_keys(f"{key}.{m}.oas_stage2",
                                                     self.mapping(f"{key}.{m}.oas_stage2", entry["oas_stage2"], keys))
            if "datasets" in entry:
                e["datasets"] = {}
                for dn, sub in self.mapping(f"{key}.{m}.datasets", entry["datasets"], self.dataset_names).items():
                    k2 = f"{key}.{m}.datasets.{dn}"
                    sub = self.mapping(k2, sub, list(keys) + ["oas_stage2"])
                    se = self.schedule_keys(k2, {k: v for k, v in sub.items() if k in keys})
                    if "oas_stage2" in sub:
                        se["oas_stage2"] = self.schedule_keys(
                            f"{k2}.oas_stage2", self.mapping(f"{k2}.oas_stage2", sub["oas_stage2"], keys))
                    e["datasets"][dn] = se
            out[m] = e
        return out

    def schedule_keys(self, key, entry) -> dict:
        """One schedule entry through the pydantic model of ``bench.train.SCHEDULE_DEFAULTS``."""
        try:
            return _schedule_model().model_validate(entry).model_dump(exclude_unset=True)
        except ValidationError as e:
            self.pydantic_error(key, e, schedule_keys())

    def positive(self, key, value) -> None:
        if value < 1:
            self.fail(key, f"must be at least 1, got {value!r}; a count of 0 or less trains or evaluates "
                           "nothing (leave the key out for the default)")


def default_protocols_for(dataset: str) -> list[str]:
    """The protocols ``bench.protocols`` names for a dataset (f30k -> f30k_1k; coco -> coco_1k, coco_5k)."""
    try:
        from bench.protocols import protocols_for

        return [p.name for p in protocols_for(dataset)]
    except Exception:  # noqa: BLE001 - unknown dataset or module not importable: the suite must say
        return []


def resolve_root(explicit: str | None, suite_default: str | None, env: str) -> str | None:
    """A dataset's root: its own entry, else the suite's, else the environment variable ``env``."""
    return explicit or suite_default or os.environ.get(env) or None
