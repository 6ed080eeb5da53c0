"""The typed spec of one training run: what a cell is, its defaults, and what decides its result.

This module imports nothing of the harness or the trainer (``bench.train``): both import it. The
registries (``models``, ``strategies``) and the protocol table are read inside the functions that need
them, so importing the spec stays cheap (no torch).

- :class:`Cell` and its parts (:class:`Dataset`, :class:`MatcherSpec`, :class:`StrategySpec`,
  :class:`Schedule`, :class:`Eval`, :class:`Resources`) are frozen dataclasses; files on disk
  (``config.yaml``, ``result.json``, W&B config, job pickles) stay plain YAML/JSON through
  :meth:`Cell.to_dict` / :meth:`Cell.from_dict`.
- :func:`resolve` fills every default, the code's included (the matcher's published weight decay,
  augmentation and hinge warm-up): the resolved cell is what the run used and records.
- :func:`result_key` is the one definition of what decides a result: the cell id is its hash
  (:func:`cell_id`) and a resumed run must have the same key as the run that wrote its checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bench.schedule_limits import schedule_limit_problem


@dataclass(frozen=True)
class Schedule:
    """How a cell trains. Suites override these per matcher/dataset (published values live in the suites)."""

    epochs: int = 2
    batch_size: int = 128
    lr: float = 2e-4
    lr_schedule: str = "step"  # "step": ×lr_decay at each epoch in lr_decay_epochs; "constant"
    lr_decay_epochs: list = field(default_factory=list)
    lr_decay: float = 0.1
    weight_decay: float | None = None  # None: the matcher's published value (its class attribute weight_decay)
    grad_clip: float = 2.0
    margin: float = 0.2
    max_violation: bool = True
    hinge_warmup_epochs: int | None = None  # None: the matcher's own (its hinge_warmup_epochs); 0 from a checkpoint
    caption_aug: bool | None = None  # caption-token augmentation; None: the matcher's own (on for VSE∞, else off)
    workers: int = 0
    checkpoint_every: int = 0  # also checkpoint every N steps inside an epoch (0: at epoch ends only)
    max_steps_per_epoch: int | None = None
    log_every: int = 10
    amp: bool = False  # legacy: True = precision bf16 on CUDA (ignored on CPU); kept so existing cell ids stay
    precision: str = "fp32"  # fp32 | tf32 | bf16 (bench.precision; the reference programs train in fp32)
    compile: bool = False  # torch.compile the pairwise matchers' tile scoring (bench.precision)

    @classmethod
    def from_dict(cls, d: dict | None) -> Schedule:
        d = dict(d or {})
        unknown = set(d) - set(SCHEDULE_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown schedule keys {sorted(unknown)}; valid: {sorted(SCHEDULE_DEFAULTS)}")
        return cls(**copy.deepcopy({**SCHEDULE_DEFAULTS, **d}))

    def to_dict(self) -> dict:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}


def _defaults(cls) -> dict:
    return {f.name: (f.default_factory() if f.default is dataclasses.MISSING else f.default) for f in fields(cls)}


#: The schedule's keys and defaults (read at call time: a test may change one and see the ids move).
SCHEDULE_DEFAULTS: dict[str, Any] = _defaults(Schedule)
#: Schedule keys added after results existed: at their default they stay out of a cell's result key,
#: so every existing id is unchanged.
ADDED_SCHEDULE_DEFAULTS = {"precision": "fp32", "compile": False}
#: Schedule keys that do not change a result (free to change between a run and its resume).
NOT_RESULT_KEYS = ("workers", "checkpoint_every", "log_every")
#: Strategy constructor arguments the trainer sets from the matcher and the schedule, never a suite.
TRAINER_STRATEGY_ARGS = ("base_loss", "margin", "max_violation", "hinge_warmup_epochs")
#: Captions per image of every dataset the readers know (a different value enters the result key).
DEFAULT_CAPTIONS_PER_IMAGE = 5
#: Where the trainer looks for data when a cell names none (``make data`` writes it).
DEFAULT_DATA_ROOT = "data/synth-demo"


@dataclass(frozen=True)
class Eval:
    dev_images: int = 1000  # dev images evaluated after every epoch (model selection)
    batch_size: int = 128
    protocols: list | None = None  # None: every protocol of the dataset (bench.protocols)

    @classmethod
    def from_dict(cls, d: dict | None) -> Eval:
        d = dict(d or {})
        _no_unknown("eval", d, EVAL_DEFAULTS)
        return cls(**copy.deepcopy({**EVAL_DEFAULTS, **d}))

    def to_dict(self) -> dict:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}


EVAL_DEFAULTS: dict[str, Any] = _defaults(Eval)


@dataclass(frozen=True)
class Dataset:
    """The data a cell reads; paths left None take the trainer's defaults (:func:`resolve`)."""

    name: str
    data_root: str | None = None
    vocab_root: str | None = None
    captions_per_image: int | None = None
    karpathy_json: str | None = None  # pixel matchers: the Karpathy split file (default <data_root>/karpathy/...)
    image_root: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> Dataset:
        _no_unknown("dataset", d, {f.name: None for f in fields(cls)})
        return cls(**d)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class MatcherSpec:
    """``models.build(name, **overrides)``."""

    name: str
    overrides: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> MatcherSpec:
        d = dict(d)
        return cls(name=d.pop("name"), overrides=copy.deepcopy(d))

    def to_dict(self) -> dict:
        return {"name": self.name, **copy.deepcopy(self.overrides)}


@dataclass(frozen=True)
class StrategySpec:
    """``strategies.build(name, **params)``; ``label`` names it in tables, ``scenario`` as the suite expanded it."""

    name: str
    label: str | None = None
    scenario: str | None = None
    params: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> StrategySpec:
        _no_unknown("strategy", d, {f.name: None for f in fields(cls)})
        return cls(**copy.deepcopy(d))

    def to_dict(self) -> dict:
        out = {"name": self.name, "label": self.label, "scenario": self.scenario, "params": copy.deepcopy(self.params)}
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class Resources:
    """What one cell asks a cluster for (SLURM); never part of its result."""

    gpus: int = 1
    cpus: int = 8
    mem_gb: int = 64
    time_min: int = 24 * 60
    partition: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> Resources:
        _no_unknown("resources", d, RESOURCE_KEYS)
        return cls(**{**DEFAULT_RESOURCES, **d})

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


#: Resource keys and their types (the suite schema reads them), and the defaults a suite overrides.
RESOURCE_KEYS = {"gpus": int, "cpus": int, "mem_gb": int, "time_min": int, "partition": str}
DEFAULT_RESOURCES = {k: v for k, v in _defaults(Resources).items() if v is not None}


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def is_plain_name(text: str) -> bool:
    """A suite name or cell id names one folder inside a results folder: letters, digits, '.', '_', '+', '-',
    starting with a letter or digit, no '..' (the suite schema and the store both ask)."""
    return bool(_PLAIN_NAME.fullmatch(text)) and ".." not in text


def _no_unknown(where: str, d: dict, valid) -> None:
    unknown = set(d) - set(valid)
    if unknown:
        raise ValueError(f"unknown {where} keys {sorted(unknown)}; valid: {sorted(valid)}")


_PARTS = {"dataset": Dataset, "matcher": MatcherSpec, "strategy": StrategySpec, "schedule": Schedule,
          "eval": Eval, "resources": Resources}


@dataclass(frozen=True)
class Cell:
    """One training run: (dataset, matcher, strategy, seed, schedule) plus where it belongs in a suite.

    The optional fields (``id``, ``suite``, labels, ``resources``, ``wandb``, ``recipe``,
    ``anchor_checkpoint``, ``device``) are left out of :meth:`to_dict` when None.
    """

    dataset: Dataset
    matcher: MatcherSpec
    strategy: StrategySpec
    schedule: Schedule = field(default_factory=Schedule)
    eval: Eval = field(default_factory=Eval)
    seed: int = 0
    depends_on: list | None = None  # ids of the cells it starts from (an OAS baseline); None: not given
    id: str | None = None
    suite: str | None = None
    scale: str | None = None
    dataset_label: str | None = None
    matcher_label: str | None = None
    resources: Resources | None = None
    wandb: dict | None = None
    recipe: dict | None = None  # {group: "option@version"} of the suite's recipes (not hashed: the schedule is)
    anchor_checkpoint: dict | None = None  # a released OAS anchor {"path", "sha256", "source"}
    device: str | None = None  # "auto" | "cpu" | "cuda" | "cuda:N" (resolved: "auto")

    @classmethod
    def from_dict(cls, d: dict) -> Cell:
        for key in ("dataset", "matcher", "strategy"):
            if not isinstance(d.get(key), dict) or "name" not in d[key]:
                raise ValueError(f"cell is missing '{key}.name' (got keys {sorted(d)})")
        _no_unknown("cell", d, {f.name: None for f in fields(cls)})
        kw = {k: (_PARTS[k].from_dict(v) if k in _PARTS and v is not None else copy.deepcopy(v)) for k, v in d.items()}
        return cls(**kw)

    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            out[f.name] = v.to_dict() if hasattr(v, "to_dict") else copy.deepcopy(v)
        return out

    def replace(self, **changes) -> Cell:
        return dataclasses.replace(self, **changes)

    def resolve(self) -> Cell:
        return resolve(self)

    def result_key(self) -> dict:
        return result_key(self)

    def cell_id(self) -> str:
        return cell_id(self)


# ----------------------------------------------------------------------------- defaults


def fill_schedule(sched: dict, matcher: str, strategy: str, params: dict) -> dict:
    """The schedule's None defaults made concrete for this matcher and strategy (what :func:`resolve`
    records): ``hinge_warmup_epochs`` the matcher's (0 for a strategy that starts from a trained
    checkpoint, OAS stage 2: straight to the hardest negative), ``weight_decay`` the matcher's published
    value, ``caption_aug`` the matcher's own augmentation."""
    import models
    import strategies

    sched = dict(sched)
    if sched.get("hinge_warmup_epochs") is None:
        from_checkpoint = strategies.build(strategy, **params).needs_anchor_checkpoint
        sched["hinge_warmup_epochs"] = 0 if from_checkpoint else int(
            models.matcher_attribute(matcher, "hinge_warmup_epochs", 0))
    if sched.get("weight_decay") is None:
        sched["weight_decay"] = float(models.matcher_attribute(matcher, "weight_decay", 0.0))
    if sched.get("caption_aug") is None:
        sched["caption_aug"] = bool(models.matcher_attribute(matcher, "augment", {}).get("token_aug", False))
    return sched


def without_added_defaults(sched: dict) -> dict:
    """``sched`` without the keys of ``ADDED_SCHEDULE_DEFAULTS`` that hold their default."""
    return {k: v for k, v in sched.items()
            if not (k in ADDED_SCHEDULE_DEFAULTS and v == ADDED_SCHEDULE_DEFAULTS[k])}


def _check_protocols(names, dataset: str) -> None:
    """Each protocol evaluates one dataset's split: another dataset's would title the table with a lie."""
    from bench.protocols import PROTOCOLS, get_protocol, protocols_for

    own = [p.name for p in protocols_for(dataset)] if dataset in {p.dataset for p in PROTOCOLS.values()} else None
    for name in names or []:
        p = get_protocol(name)
        if own is not None and p.name not in own:
            raise ValueError(f"eval.protocols: protocol {p.name!r} evaluates {p.dataset}, not this cell's dataset "
                             f"{dataset}; give {' or '.join(own)}")


def resolve(cell: Cell | dict) -> Cell:
    """Every default of ``cell`` filled (the code's included): what the run actually uses and records.
    Raises ValueError naming the key for an unknown key or a value out of range."""
    from bench.precision import RunMode
    from bench.values import expand_path

    cell = cell if isinstance(cell, Cell) else Cell.from_dict(cell)
    ds = cell.dataset
    data_root = expand_path(ds.data_root) if ds.data_root is not None else DEFAULT_DATA_ROOT  # ~, $VARS
    ds = dataclasses.replace(
        ds, data_root=data_root,
        vocab_root=expand_path(ds.vocab_root) if ds.vocab_root is not None else str(Path(data_root) / "vocab"),
        captions_per_image=ds.captions_per_image if ds.captions_per_image is not None else DEFAULT_CAPTIONS_PER_IMAGE)
    sched = cell.schedule.to_dict()
    for key, value in sched.items():
        problem = schedule_limit_problem(key, value)
        if problem:
            raise ValueError(f"schedule.{key} {problem}")
    sched = fill_schedule(sched, cell.matcher.name, cell.strategy.name, cell.strategy.params)
    RunMode.of(sched, "cpu")  # a bad precision/compile (or amp contradicting it) fails here
    _check_protocols(cell.eval.protocols, ds.name)
    return dataclasses.replace(cell, dataset=ds, schedule=Schedule.from_dict(sched),
                               device=cell.device if cell.device is not None else "auto")


# ----------------------------------------------------------------------------- what decides a result


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _jsonable(v) -> bool:
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    if isinstance(v, (list, tuple)):
        return all(_jsonable(x) for x in v)
    return isinstance(v, dict) and all(isinstance(k, str) and _jsonable(x) for k, x in v.items())


def _constructor_defaults(fn) -> dict:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params
            if p.name != "self" and p.default is not inspect.Parameter.empty and _jsonable(p.default)}


def code_defaults(cell: Cell | dict) -> dict:
    """The result-deciding parts of ``cell`` resolved over the code's defaults: the matcher's and the
    strategy's constructor defaults, ``SCHEDULE_DEFAULTS`` / ``EVAL_DEFAULTS`` (schedule keys that do not
    change a result, ``NOT_RESULT_KEYS``, left out). A default changed in the code thus changes the id of
    every cell it reaches, and an override equal to the default does not."""
    import models
    import strategies

    cell = cell.to_dict() if isinstance(cell, Cell) else cell
    m = dict(cell["matcher"])
    try:
        models.input_kind(m["name"])  # imports the registry; KeyError for an unknown matcher
        m = {**_constructor_defaults(models._REGISTRY[m["name"]].__init__), **m}
    except KeyError:  # an unknown matcher: validation names it; the id still exists
        pass
    params = dict(cell["strategy"].get("params", {}))
    try:
        ctor = _constructor_defaults(strategies.get(cell["strategy"]["name"]).__init__)
    except KeyError:
        ctor = {}
    for k in TRAINER_STRATEGY_ARGS:  # set from the schedule
        ctor.pop(k, None)
    sched = {k: v for k, v in {**SCHEDULE_DEFAULTS, **cell.get("schedule", {})}.items() if k not in NOT_RESULT_KEYS}
    try:  # the values the trainer will record (fill_schedule)
        sched = fill_schedule(sched, m["name"], cell["strategy"]["name"], params)
    except (KeyError, TypeError, ValueError):  # an invalid cell: validation names the problem
        pass
    if sched.get("hinge_warmup_epochs") is None:
        try:
            sched["hinge_warmup_epochs"] = int(models.matcher_attribute(m["name"], "hinge_warmup_epochs", 0))
        except KeyError:
            sched["hinge_warmup_epochs"] = 0
    sched = without_added_defaults(sched)  # keys added later (precision, compile) at their default: ids unchanged
    return {"matcher": m, "strategy": [cell["strategy"]["name"], {**ctor, **params}], "schedule": sched,
            "eval": {**EVAL_DEFAULTS, **cell.get("eval", {})}}


def result_key(cell: Cell | dict) -> dict:
    """What decides a cell's result, over the code's defaults: dataset name and label, matcher + overrides,
    strategy + params, schedule (less ``NOT_RESULT_KEYS``), eval, seed, the cells it depends on and a
    released anchor's content. Not: suite, scale, labels of matcher and strategy, data paths, resources,
    W&B, device (the data itself is checked by its fingerprint). The same for a cell and its
    :func:`resolve`\\ d form: the id names both, and a resume compares it."""
    d = cell.to_dict() if isinstance(cell, Cell) else cell
    key = {
        "dataset": [d["dataset"]["name"], d.get("dataset_label", d["dataset"]["name"])],
        **code_defaults(d),  # matcher, strategy params, schedule, eval: over the code's defaults
        "seed": d.get("seed", 0),
        "depends_on": sorted(d.get("depends_on", [])),
    }
    cpi = d["dataset"].get("captions_per_image")
    if cpi is not None and cpi != DEFAULT_CAPTIONS_PER_IMAGE:  # the readers' default is left out: ids unchanged
        key["captions_per_image"] = cpi
    if d.get("anchor_checkpoint"):  # a released anchor instead of a baseline cell: its content decides
        key["anchor_checkpoint"] = d["anchor_checkpoint"]["sha256"]
    return key


def cell_id(cell: Cell | dict) -> str:
    """sha1 (12 hex digits) of the canonical JSON of :func:`result_key` (DomainBed style)."""
    return hashlib.sha1(canonical_json(result_key(cell)).encode()).hexdigest()[:12]
