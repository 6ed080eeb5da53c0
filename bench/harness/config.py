"""Suite files: load, apply ``key=value`` overrides, validate against an explicit schema.

A suite YAML (``bench/suites/<name>.yaml``) declares datasets × matchers × strategies × seeds and the
schedules at two scales (``full`` = published, ``smoke`` = minutes on the embedded data). Every
mistake raises :class:`ConfigError` naming the file, the key path and the closest valid names.

Layout (all keys; ``?`` = optional)::

    name: demo                      # required, also the results folder name
    description?: str
    wandb?: {project: str, entity?: str}
    scale?: full | smoke            # which entry of `scales` to use (default full)
    data_root?: str                 # default data root of every dataset (else $DATA)
    vocab_root?: str                # default vocabulary root (else $VOCAB)
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

    SCHEDULES = {default|<matcher>: {<schedule keys>, datasets?: {<dataset>: {...}}, oas_stage2?: {...}}}
"""

from __future__ import annotations

import copy
import difflib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SUITES_DIR = Path(__file__).resolve().parents[1] / "suites"

# Used only while the registries cannot be imported (see `valid_matchers` / `valid_strategies`).
FALLBACK_MATCHERS = ["clip", "saf", "sgr", "sgraf", "vse_infty", "vse_infty_bert", "xattn"]
FALLBACK_STRATEGIES = ["baseline", "darkrank", "dbl", "dml", "kd", "momentum", "rkd", "sp"]

REQUIRED = object()

# Strategy parameters: name -> {param: (type or tuple of allowed values, default or REQUIRED)}.
# `strategy_params` reads the live vocabulary from the registry's constructor signatures and
# overlays these entries (choices; parameters a suite must state). This table alone is the
# fallback while `strategies` cannot be imported.
STRATEGY_PARAMS: dict[str, dict[str, tuple[Any, Any]]] = {
    "baseline": {},
    "kd": {},
    "rkd": {},
    "sp": {},
    "dml": {"peers": (int, 2)},
    "momentum": {"loss": (("dino", "reverse"), "dino"), "m0": (float, 0.99995)},
    "darkrank": {"order": (("similarity", "distance"), "similarity")},
    "dbl": {
        "loss": (("abs", "rel"), REQUIRED),
        "scenario": (("oas", "oss", "mss"), REQUIRED),
        "reduction": (("max", "sum"), "max"),
        "soft_margin": (("none", "sigmoid", "clip"), "none"),
        "alpha": (float, 1.0),
        "beta": (float, 1.0),
        "split": (float, 0.5),
        "branches": (int, 2),
    },
}
# The training scenario of each strategy (method.md, "The three training scenarios").
STRATEGY_SCENARIO = {"baseline": "none", "kd": "oas", "rkd": "oas", "sp": "oas", "darkrank": "oas",
                     "dml": "oss", "momentum": "mss"}

# The trainer's schedule keys (bench.train.SCHEDULE_DEFAULTS) and their types.
SCHEDULE_KEYS: dict[str, Any] = {
    "epochs": int,
    "batch_size": int,
    "lr": float,
    "lr_schedule": ("step", "constant"),
    "lr_decay_epochs": [int],
    "lr_decay": float,
    "weight_decay": float,
    "grad_clip": float,
    "margin": float,
    "max_violation": bool,
    "hinge_warmup_epochs": int,
    "workers": int,
    "checkpoint_every": int,
    "max_steps_per_epoch": int,
    "log_every": int,
    "amp": bool,
}
SCHEDULE_REQUIRED = ("epochs", "lr", "batch_size")
KNOWN_DATASETS = ["coco_precomp", "f30k_precomp"]  # bench.data.precomp.DATASETS
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

_valid_cache: dict[str, list[str]] = {}


def valid_matchers() -> list[str]:
    """Matcher names from ``models.available()`` (fallback list while it is empty or broken)."""
    return _registry_names("models", FALLBACK_MATCHERS)


def valid_strategies() -> list[str]:
    """Strategy names from ``strategies.available()`` (fallback list until the registry exists)."""
    return _registry_names("strategies", FALLBACK_STRATEGIES)


def _registry_names(module: str, fallback: list[str]) -> list[str]:
    if module not in _valid_cache:
        names: list[str] = []
        try:
            import importlib

            names = list(importlib.import_module(module).available())
        except AttributeError:
            pass  # registry not written yet
        except Exception as e:  # a registered module failed to import: say so, keep going
            warnings.warn(f"{module}.available() failed ({e!r}); using the built-in list of names", stacklevel=2)
        _valid_cache[module] = sorted(names) if names else sorted(fallback)
    return _valid_cache[module]


# Set by the trainer from the schedule (bench.train.build_strategy), not by a suite.
_TRAINER_STRATEGY_ARGS = {"self", "base_loss", "margin", "max_violation", "hinge_warmup_epochs"}


def strategy_params(name: str) -> dict[str, tuple[Any, Any]] | None:
    """Accepted parameters of strategy ``name``: {param: (kind, default)}; None if unknown."""
    key = f"params:{name}"
    if key not in _valid_cache:
        vocab: dict[str, tuple[Any, Any]] = {}
        try:
            import inspect

            import strategies

            cls = strategies.get(name)
            for klass in cls.__mro__:
                if "__init__" not in vars(klass) or klass.__module__ == "strategies.base":
                    continue
                for p in inspect.signature(klass.__init__).parameters.values():
                    if p.name in _TRAINER_STRATEGY_ARGS or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                        continue
                    default = None if p.default is p.empty else p.default
                    kind = type(default) if isinstance(default, (bool, int, float, str)) else object
                    vocab.setdefault(p.name, (float if kind is int and isinstance(default, float) else kind,
                                              default))
        except Exception:  # noqa: BLE001 - registry not importable: use the table
            vocab = {}
        table = STRATEGY_PARAMS.get(name, {})
        if not vocab and name not in STRATEGY_PARAMS:
            _valid_cache[key] = None
            return None
        for p, (kind, default) in table.items():  # overlay choices and required parameters
            sig_default = vocab.get(p, (None, default))[1]
            vocab[p] = (kind, default if default is REQUIRED else sig_default)
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


def load_suite(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Suite:
    """Read a suite by name (``bench/suites/<name>.yaml``) or path, apply overrides, validate."""
    path = suite_path(name_or_path)
    if not path.exists():
        close = difflib.get_close_matches(str(name_or_path), available_suites(), n=3)
        raise ConfigError(f"{path}: no such suite file. Closest suites: {', '.join(close) or '-'}; "
                          f"available: {', '.join(available_suites())}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return validate_suite(apply_overrides(raw, overrides), path)


def validate_suite(raw: dict, path: str | Path = "<suite>") -> Suite:
    """Check ``raw`` against the schema (module docstring) and fill defaults."""
    v = _Validator(str(path))
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
        """Check ``value`` against ``kind``: a type, a tuple of choices, or [type] for a list."""
        if isinstance(kind, list):
            if not isinstance(value, list):
                self.fail(key, f"expected a list, got {type(value).__name__} {value!r}")
            return [self.typed(f"{key}[{i}]", x, kind[0]) for i, x in enumerate(value)]
        if isinstance(kind, tuple):
            if value not in kind:
                self.unknown(key, value, kind, what="value")
            return value
        if kind is float:
            if isinstance(value, str):  # YAML 1.1 reads 5e-4 as a string
                try:
                    return float(value)
                except ValueError:
                    pass
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        elif kind is object:
            return value
        elif kind is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif isinstance(value, kind):
            return value
        self.fail(key, f"expected {kind.__name__}, got {type(value).__name__} {value!r}")

    def name(self, key: str, value, valid: list[str], what: str) -> str:
        if not isinstance(value, str):
            self.fail(key, f"expected a {what} name (str), got {value!r}")
        if value not in valid:
            self.unknown(key, value, valid, what=what)
        return value

    def suite(self, raw) -> dict:
        top = {"name", "description", "wandb", "scale", "data_root", "vocab_root", "datasets", "matchers",
               "strategies", "seeds", "scales", "schedule", "eval", "reference", "resources"}
        raw = self.mapping("", raw, top)
        for req in ("name", "datasets", "matchers", "strategies", "seeds", "scales"):
            if req not in raw:
                self.fail(req, "required key missing")
        matchers = valid_matchers()
        spec: dict = {
            "name": self.typed("name", raw["name"], str),
            "description": self.typed("description", raw.get("description", ""), str),
        }
        wb = self.mapping("wandb", raw.get("wandb"), {"project", "entity"})
        spec["wandb"] = {"project": self.typed("wandb.project", wb.get("project", "itm-coop-bench"), str),
                         "entity": self._opt_str("wandb.entity", wb.get("entity"))}
        spec["scale"] = self.typed("scale", raw.get("scale", "full"), ("full", "smoke"))
        spec["data_root"] = self._opt_str("data_root", raw.get("data_root"))
        spec["vocab_root"] = self._opt_str("vocab_root", raw.get("vocab_root"))
        ev = self.mapping("eval", raw.get("eval"), {"protocols", "dev_images", "batch_size"})
        spec["eval"] = {"protocols": self.typed("eval.protocols", ev.get("protocols", []), [str]),
                        "dev_images": self.typed("eval.dev_images", ev.get("dev_images", 1000), int)}
        if "batch_size" in ev:
            spec["eval"]["batch_size"] = self.typed("eval.batch_size", ev["batch_size"], int)
        spec["datasets"] = [self.dataset(f"datasets[{i}]", d, spec["eval"]["protocols"])
                            for i, d in enumerate(self._list("datasets", raw["datasets"]))]
        dataset_names = [d["name"] for d in spec["datasets"]]
        spec["matchers"] = [self.matcher(f"matchers[{i}]", m, matchers, dataset_names)
                            for i, m in enumerate(self._list("matchers", raw["matchers"]))]
        spec["strategies"] = [self.strategy(f"strategies[{i}]", s)
                              for i, s in enumerate(self._list("strategies", raw["strategies"]))]
        spec["seeds"] = self.typed("seeds", raw["seeds"], [int])
        if not spec["seeds"]:
            self.fail("seeds", "empty list: give at least one seed")
        dupes = sorted({x for x in spec["seeds"] if spec["seeds"].count(x) > 1})
        if dupes:
            self.fail("seeds", f"seed(s) {dupes} listed more than once in {spec['seeds']}; list each seed once")
        scales = self.mapping("scales", raw["scales"], {"full", "smoke"})
        if spec["scale"] not in scales:
            self.fail("scales", f"no entry for the chosen scale {spec['scale']!r} (have: {', '.join(scales)})")
        spec["scales"] = {}
        self.dataset_names = sorted(set(dataset_names) | set(KNOWN_DATASETS))
        for sc, body in scales.items():
            body = self.mapping(f"scales.{sc}", body, {"schedule", "matchers"})
            over = self.mapping(f"scales.{sc}.matchers", body.get("matchers"), matchers + ["default"])
            spec["scales"][sc] = {
                "schedule": self.schedules(f"scales.{sc}.schedule", body.get("schedule"), matchers),
                "matchers": {m: dict(self.mapping(f"scales.{sc}.matchers.{m}", o, None)) for m, o in over.items()},
            }
        spec["schedule"] = self.schedules("schedule", raw.get("schedule"), matchers)
        spec["reference"] = []
        for i, r in enumerate(self._list("reference", raw.get("reference") or [], allow_empty=True)):
            r = self.mapping(f"reference[{i}]", r, {"matcher", "where"})
            if "matcher" not in r or "where" not in r:
                self.fail(f"reference[{i}]", "needs `matcher` (our label) and `where` (published.csv filters)")
            where = self.mapping(f"reference[{i}].where", r["where"], None)
            spec["reference"].append({"matcher": self.typed(f"reference[{i}].matcher", r["matcher"], str),
                                      "where": {k: str(v) for k, v in where.items()}})
        res = self.mapping("resources", raw.get("resources"), matchers + ["default"])
        spec["resources"] = {}
        for m, body in res.items():
            body = self.mapping(f"resources.{m}", body, RESOURCE_KEYS)
            spec["resources"][m] = {k: self.typed(f"resources.{m}.{k}", v, RESOURCE_KEYS[k]) for k, v in body.items()}
        return spec

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
        protocols = self.typed(f"{key}.protocols", d.get("protocols") or default_protocols, [str]) \
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
                "overrides": dict(self.mapping(f"{key}.overrides", m.get("overrides"), None)),
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
        filled = {}
        if vocab is None:  # a strategy registered by the lead that this vocabulary does not know yet
            filled = dict(params)
        else:
            for p, (kind, default) in vocab.items():
                if p in params:
                    filled[p] = self.typed(f"{key}.params.{p}", params[p], kind)
                elif p in sweep:
                    continue
                elif default is REQUIRED:
                    self.fail(f"{key}.params.{p}", f"required parameter of strategy {name!r} missing")
                else:
                    filled[p] = default
        label = s.get("label")
        return {"name": name, "label": None if label is None else self.typed(f"{key}.label", label, str),
                "params": filled, "sweep": dict(sweep)}

    def schedules(self, key, table, matchers) -> dict:
        table = self.mapping(key, table, matchers + ["default"])
        out = {}
        for m, entry in table.items():
            entry = self.mapping(f"{key}.{m}", entry, list(SCHEDULE_KEYS) + ["datasets", "oas_stage2"])
            e = self.schedule_keys(f"{key}.{m}", {k: v for k, v in entry.items() if k in SCHEDULE_KEYS})
            if "oas_stage2" in entry:
                e["oas_stage2"] = self.schedule_keys(f"{key}.{m}.oas_stage2",
                                                     self.mapping(f"{key}.{m}.oas_stage2", entry["oas_stage2"],
                                                                  SCHEDULE_KEYS))
            if "datasets" in entry:
                e["datasets"] = {}
                for dn, sub in self.mapping(f"{key}.{m}.datasets", entry["datasets"], self.dataset_names).items():
                    k2 = f"{key}.{m}.datasets.{dn}"
                    sub = self.mapping(k2, sub, list(SCHEDULE_KEYS) + ["oas_stage2"])
                    se = self.schedule_keys(k2, {k: v for k, v in sub.items() if k in SCHEDULE_KEYS})
                    if "oas_stage2" in sub:
                        se["oas_stage2"] = self.schedule_keys(
                            f"{k2}.oas_stage2", self.mapping(f"{k2}.oas_stage2", sub["oas_stage2"], SCHEDULE_KEYS))
                    e["datasets"][dn] = se
            out[m] = e
        return out

    def schedule_keys(self, key, entry) -> dict:
        return {k: self.typed(f"{key}.{k}", v, SCHEDULE_KEYS[k]) for k, v in entry.items()}


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
