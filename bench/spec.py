"""The typed spec of one training run: what a cell is, its defaults, and what decides its result.

This module imports nothing of the harness or the trainer (``bench.train``): both import it. The
registries (``models``, ``strategies``) and the protocol table are read inside the functions that need
them, so importing the spec stays cheap (no torch).

- :class:`Cell` and its parts (:class:`Dataset`, :class:`MatcherSpec`, :class:`StrategySpec`,
  :class:`Schedule`, :class:`Eval`, :class:`Resources`, :class:`Wandb`, :class:`Anchor`) are frozen
  dataclasses, from the suite's expansion (``bench.harness.cells.expand``) to the trainer; files on disk
  (``config.yaml``, ``result.json``, W&B config, job pickles) stay plain YAML/JSON through
  :meth:`Cell.to_dict` / :meth:`Cell.from_dict`.
- :class:`Schedule` writes each schedule fact once: a key's type (its annotation), default, range
  (:class:`Limit`) and choices; the suite schema is built from them.
- :func:`resolve`, the one resolver, fills every default, the code's included (the matcher's published
  weight decay, augmentation and hinge warm-up; the matcher's and the strategy's declared constructor
  defaults): the resolved cell is what the run used and records.
- :func:`result_key` is the one definition of what decides a result: the cell id is its hash
  (:func:`cell_id`) and a resumed run must have the same key as the run that wrote its checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import math
import re
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bench.precision import PRECISIONS
from bench.values import expand_path, shown


@dataclass(frozen=True)
class Limit:
    """The values a numeric schedule key may take: ``low`` (allowed itself when ``low_ok``) up to ``high``
    (None: no bound); ``why`` says what a value outside means. A list key's items are checked one by one."""

    low: float
    low_ok: bool = True
    high: float | None = None
    why: str = ""

    def problem(self, value) -> str | None:
        """What is wrong with ``value`` (None: nothing; a value of another type is the schema's to name)."""
        for v in value if isinstance(value, list) else [value]:
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            if v < self.low or (v == self.low and not self.low_ok) or (self.high is not None and v > self.high):
                rng = f"{'>=' if self.low_ok else '>'} {self.low}" + (f" and <= {self.high}" if self.high is not None else "")
                item = f" (item {shown(v)})" if isinstance(value, list) else ""
                return f"must be {rng}, got {shown(value)}{item}: {self.why}"
        return None


def _key(default, *, limit: Limit | None = None, choices: tuple | None = None, required: bool = False,
         result: bool = True, added: bool = False):
    """A schedule (or eval) key: its default, range (``limit``) or ``choices``; its type is the field's
    annotation. ``required``: a suite must give it (per matcher and dataset); ``result=False``: it does not
    change a result (free to change between a run and its resume; not in the cell id); ``added``: added after
    results existed, so at its default it stays out of the cell id (every earlier id unchanged;
    :func:`without_added_defaults`)."""
    meta = {"limit": limit, "choices": choices, "required": required, "result": result, "added": added}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


_COUNT = "a count of 0 or less trains nothing"


@dataclass(frozen=True)
class Schedule:
    """How a cell trains: every schedule fact once (type: the annotation; default, range, choices: ``_key``).
    The suite schema (``bench.harness.schema``) and :func:`resolve` both read it; the published values live
    in the recipes (``bench/recipes/``)."""

    epochs: int = _key(2, limit=Limit(1, why=_COUNT), required=True)
    batch_size: int = _key(128, limit=Limit(1, why=_COUNT), required=True)
    lr: float = _key(2e-4, limit=Limit(0, False, why="an lr of 0 learns nothing and one below 0 climbs the loss"),
                     required=True)
    lr_schedule: str = _key("step", choices=("step", "constant"))  # step: ×lr_decay at each of lr_decay_epochs
    lr_decay_epochs: list[int] = _key([], limit=Limit(0, why="epoch numbers (0-based) at which the lr decays"))
    lr_decay: float = _key(0.1, limit=Limit(0, False, 1, "the lr is multiplied by it at each of lr_decay_epochs: 1 keeps "
                                                        "it, 0 or less stops or reverses learning, above 1 grows it"))
    # None: the matcher's published value (its class attribute weight_decay)
    weight_decay: float | None = _key(None, limit=Limit(0, why="a weight decay below 0 pushes the weights to grow"))
    grad_clip: float = _key(2.0, limit=Limit(0, why="the largest gradient norm (0 turns clipping off); below 0 it "
                                                    "flips the gradient into an ascent"))
    margin: float = _key(0.2, limit=Limit(0, why="the hinge margin; below 0 the loss is satisfied by ranking a "
                                                 "negative first"))
    max_violation: bool = _key(True)
    # None: the matcher's own (its hinge_warmup_epochs); 0 for a strategy that starts from a checkpoint
    hinge_warmup_epochs: int | None = _key(None, limit=Limit(0, why="a count of epochs"))
    # caption-token augmentation; None: the matcher's own (on for VSE∞, else off)
    caption_aug: bool | None = _key(None)
    workers: int = _key(0, limit=Limit(0, why="a count of data-loader processes (0: in the training process)"),
                        result=False)
    # also checkpoint every N steps inside an epoch (0: at epoch ends only)
    checkpoint_every: int = _key(0, limit=Limit(0, why="a count of steps (0: at epoch ends only)"), result=False)
    max_steps_per_epoch: int | None = _key(None, limit=Limit(1, why=_COUNT + " (null: no limit)"))
    log_every: int = _key(10, limit=Limit(1, why="log every N steps: 0 would divide by zero at the first step"),
                          result=False)
    amp: bool = _key(False)  # legacy: True = precision bf16 on CUDA (ignored on CPU); kept so existing cell ids stay
    # fp32 | tf32 | bf16 (bench.precision; the reference programs train in fp32)
    precision: str = _key("fp32", choices=PRECISIONS, added=True)
    compile: bool = _key(False, added=True)  # torch.compile the pairwise matchers' tile scoring (bench.precision)

    @classmethod
    def from_dict(cls, d: dict | None) -> Schedule:
        if d is not None and not isinstance(d, dict):
            raise ValueError(f"schedule: expected a mapping of schedule keys, got {type(d).__name__} {shown(d)}")
        d = dict(d or {})
        unknown = set(d) - set(SCHEDULE_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown schedule keys {sorted(unknown)}; valid: {sorted(SCHEDULE_DEFAULTS)}")
        return cls(**copy.deepcopy({**SCHEDULE_DEFAULTS, **d}))

    def to_dict(self) -> dict:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}


def _defaults(cls) -> dict:
    return {f.name: (f.default_factory() if f.default is dataclasses.MISSING else f.default) for f in fields(cls)}


def _facts(part, fact: str) -> dict:
    """``{key: fact}`` of the fields of ``part`` (``Schedule``, ``Eval``) declared with ``_key(..., fact=...)``."""
    return {f.name: f.metadata[fact] for f in fields(part) if f.metadata.get(fact)}


def _schedule_facts(fact: str) -> dict:
    return _facts(Schedule, fact)


def added_defaults(part) -> dict:
    """``{key: default}`` of the keys of ``part`` (``Schedule``, ``Eval``) added after results existed."""
    defaults = _defaults(part)
    return {k: defaults[k] for k in _facts(part, "added")}


#: The schedule's keys and defaults (read at call time: a test may change one and see the ids move).
SCHEDULE_DEFAULTS: dict[str, Any] = _defaults(Schedule)
#: The values each numeric schedule key may take (``Schedule``'s ``limit``s).
SCHEDULE_LIMITS: dict[str, Limit] = _schedule_facts("limit")
#: The closed sets of values of the string keys (``Schedule``'s ``choices``).
SCHEDULE_CHOICES: dict[str, tuple] = _schedule_facts("choices")
#: Keys a suite must give for every matcher and dataset.
SCHEDULE_REQUIRED = tuple(_schedule_facts("required"))
#: Schedule keys added after results existed: at their default they stay out of a cell's result key,
#: so every existing id is unchanged.
ADDED_SCHEDULE_DEFAULTS = added_defaults(Schedule)
#: Schedule keys that do not change a result (free to change between a run and its resume).
NOT_RESULT_KEYS = tuple(f.name for f in fields(Schedule) if not f.metadata["result"])


@functools.cache
def _schedule_types() -> dict[str, Any]:
    return typing.get_type_hints(Schedule)


def schedule_types() -> dict[str, Any]:
    """Each schedule key's type, from ``Schedule``'s annotations (``int``, ``float | None``, ``list[int]`` …)."""
    return dict(_schedule_types())


def schedule_type_problem(key: str, value) -> str | None:
    """What is wrong with the type of ``value`` for schedule ``key`` under its annotation (``int``, ``float | None``,
    ``list[int]`` …; a float finite, a bool no number), or None: what the suite schema checks, for a cell that
    reaches :func:`resolve` another way (``python -m bench.train CONFIG key=value``, a cell built in code)."""
    kind = _schedule_types().get(key)
    if kind is None:
        return None
    args = typing.get_args(kind)
    if value is None:
        return None if type(None) in args else f"expected {_type_name(kind)}, got None"
    if typing.get_origin(kind) is list:
        if not isinstance(value, (list, tuple)):
            return f"expected a list, got {type(value).__name__} {shown(value)}"
        return next((p for v in value if (p := _plain_type_problem(args[0], v))), None)
    plain = next((a for a in args if a is not type(None)), kind) if args else kind
    return _plain_type_problem(plain, value)


def _type_name(kind) -> str:
    return getattr(kind, "__name__", str(kind))


def _plain_type_problem(kind, value) -> str | None:
    got = f"got {type(value).__name__} {shown(value)}"
    if kind is bool:
        return None if isinstance(value, bool) else f"expected true or false, {got}"
    if isinstance(value, bool) or (kind is int and not isinstance(value, int)):
        return f"expected {_type_name(kind)}, {got}"
    if kind is float and not isinstance(value, (int, float)):
        return f"expected a number, {got}"
    if kind is float and not math.isfinite(value):
        return f"expected a finite number, {got}"
    if kind is str and not isinstance(value, str):
        return f"expected str, {got}"
    return None


def schedule_limit_problem(key: str, value) -> str | None:
    """What is wrong with ``value`` for schedule ``key`` under ``SCHEDULE_LIMITS`` (None: nothing)."""
    if key not in SCHEDULE_LIMITS or value is None or isinstance(value, bool):
        return None
    return SCHEDULE_LIMITS[key].problem(value)


#: Strategy constructor arguments the trainer sets from the matcher and the schedule, never a suite.
TRAINER_STRATEGY_ARGS = ("base_loss", "margin", "max_violation", "hinge_warmup_epochs")
#: Captions per image of every dataset the readers know (a different value enters the result key).
DEFAULT_CAPTIONS_PER_IMAGE = 5
#: Where the trainer looks for data when a cell names none (``make data`` writes it).
DEFAULT_DATA_ROOT = "data/synth-demo"
#: The vocabulary folder inside a data root, when a cell names no ``vocab_root``.
VOCAB_DIR = "vocab"


def default_vocab_root(data_root: str | Path) -> str:
    """A data root's vocabulary folder (``<data_root>/vocab``): where every reader looks when none is named."""
    return str(Path(data_root) / VOCAB_DIR)


@dataclass(frozen=True)
class Eval:
    dev_images: int = 1000  # dev images evaluated after every epoch (model selection)
    batch_size: int = 128
    protocols: list | None = None  # None: every protocol of the dataset (bench.protocols)
    # coco_5k also reports ECCV Caption and CxC (bench.eccv; needs the split's COCO ids); added after results
    # existed and changes no training: at its default it stays out of the cell id, and a result without it is whole
    eccv: bool = _key(True, added=True)

    @classmethod
    def from_dict(cls, d: dict | None) -> Eval:
        d = dict(d or {})
        _no_unknown("eval", d, EVAL_DEFAULTS)
        return cls(**copy.deepcopy({**EVAL_DEFAULTS, **d}))

    def to_dict(self) -> dict:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}


EVAL_DEFAULTS: dict[str, Any] = _defaults(Eval)
#: Eval keys added after results existed (``_key(added=True)``, as ``ADDED_SCHEDULE_DEFAULTS``).
ADDED_EVAL_DEFAULTS = added_defaults(Eval)


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
    """``models.build(name, **overrides)``. ``defaults``: the constructor's declared defaults (``models.parameters``),
    filled by :func:`resolve` for the result key and never written (``to_dict`` keeps what was given)."""

    name: str
    overrides: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> MatcherSpec:
        d = dict(d)
        return cls(name=d.pop("name"), overrides=copy.deepcopy(d))

    def to_dict(self) -> dict:
        return {"name": self.name, **copy.deepcopy(self.overrides)}

    @property
    def arguments(self) -> dict:
        """What the matcher is built with, less the sizes the data gives: its defaults, then the overrides."""
        return {**self.defaults, **self.overrides}


@dataclass(frozen=True)
class StrategySpec:
    """``strategies.build(name, **params)``; ``label`` names it in tables, ``scenario`` as the suite expanded it.
    ``defaults``: the constructor's declared defaults less the trainer's arguments, filled by :func:`resolve`
    for the result key and never written."""

    name: str
    label: str | None = None
    scenario: str | None = None
    params: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> StrategySpec:
        _no_unknown("strategy", d, ("name", "label", "scenario", "params"))
        return cls(**copy.deepcopy(d))

    def to_dict(self) -> dict:
        out = {"name": self.name, "label": self.label, "scenario": self.scenario, "params": copy.deepcopy(self.params)}
        return {k: v for k, v in out.items() if v is not None}

    @property
    def arguments(self) -> dict:
        """The strategy's parameters: its defaults, then the given ``params``."""
        return {**self.defaults, **self.params}


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
#: The longest suite or sweep name: a folder name is at most 255 bytes, and the store adds suffixes
#: ("-rehearsal", ".lock", a staging folder's ".rerun-<host>-<pid>").
MAX_NAME_CHARS = 100
#: The rule, as error messages state it.
PLAIN_NAME_RULE = f"a plain name of at most {MAX_NAME_CHARS} letters, digits, '.', '_', '+' or '-', without '/' or '..'"


def is_plain_name(text: str) -> bool:
    """A suite name or cell id names one folder inside a results folder: at most ``MAX_NAME_CHARS`` letters,
    digits, '.', '_', '+', '-', starting with a letter or digit, no '..' (the suite schema and the store both
    ask)."""
    return bool(_PLAIN_NAME.fullmatch(text)) and ".." not in text and len(text) <= MAX_NAME_CHARS


def _no_unknown(where: str, d: dict, valid) -> None:
    unknown = set(d) - set(valid)
    if unknown:
        homes = "".join(f" ({key} is {home})" for key in sorted(unknown, key=str) if (home := cell_home(key)))
        raise ValueError(f"unknown {where} keys {sorted(unknown, key=str)}{homes}; valid: {sorted(valid)}")


def key_homes(key) -> dict[str, list[str]]:
    """The parts of a cell that have a key ``key`` (``schedule``, ``eval``, ``dataset``, ``resources``, ``wandb``;
    ``matcher``, ``strategy``: with the names of the matchers or strategies that take it as an argument), for
    the message of a key given in the wrong place (``grad_clip=-2`` at a suite's top level, or a cell's)."""
    import models
    import strategies

    parts = {"schedule": SCHEDULE_DEFAULTS, "eval": EVAL_DEFAULTS, "resources": RESOURCE_KEYS,
             "dataset": [f.name for f in fields(Dataset)], "wandb": [f.name for f in fields(Wandb)]}
    homes: dict[str, list[str]] = {part: [] for part, keys in parts.items() if key in keys}
    given_by_data = {"vocab_size", "img_dim", "num_regions"}
    if matchers := [m for m in models.available() if key in models.parameters(m) and key not in given_by_data]:
        homes["matcher"] = matchers
    if users := [n for n in strategies.available() if key in strategy_defaults(n)]:
        homes["strategy"] = users
    return homes


def cell_home(key) -> str | None:
    """Where ``key`` is written in a cell (``config.yaml``, ``python -m bench.train`` overrides), or None."""
    where = {"schedule": "schedule.{k}", "eval": "eval.{k}", "dataset": "dataset.{k}", "resources": "resources.{k}",
             "wandb": "wandb.{k}", "matcher": "matcher.{k}", "strategy": "strategy.params.{k}"}
    homes = key_homes(key)
    text = " or ".join(where[part].format(k=key) + (f" ({', '.join(names)})" if names else "")
                       for part, names in homes.items())
    return f"written {text}" if text else None


@dataclass(frozen=True)
class Wandb:
    """Where a cell's W&B run goes (``WANDB_PROJECT`` / ``WANDB_ENTITY`` win; no project: ``itm-coop-bench-<suite>``,
    ``bench.harness.tracking.project_of``); never part of its result."""

    project: str | None = None
    entity: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> Wandb:
        _no_unknown("wandb", d, [f.name for f in fields(cls)])
        return cls(**d)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class Anchor:
    """A released OAS anchor (a suite's ``anchor_checkpoint:``) that replaces the baseline cell: its content
    (``sha256``) decides the result, ``source`` names it in tables."""

    path: str
    sha256: str
    source: str

    @classmethod
    def from_dict(cls, d: dict) -> Anchor:
        _no_unknown("anchor_checkpoint", d, [f.name for f in fields(cls)])
        return cls(**d)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Rehearsal:
    """A dress rehearsal of a full-scale cell (``python -m bench sweep SUITE --rehearse``): the cell as the table
    runs it (its model, recipe, precision, resources, the SLURM path), cut to a few steps and a small evaluation
    so that every code path a GPU job takes runs in minutes. The cell's ``schedule`` stays the published one
    (what the table plans with); :func:`resolve` applies the cuts: at most ``epochs`` epochs of at most
    ``steps`` optimiser steps, ``batch_size`` when given (where memory forces a smaller batch), the dev split
    and each test split cut to their first ``eval_images`` images (a folded protocol: a multiple of its
    folds). A rehearsal's result is never a result of the table: the rehearsal enters the cell's id (so a
    rehearsal cell never shares an id with a real one) and its ``result.json``, which ``collect`` refuses to
    pool outside a rehearsal."""

    steps: int = 2
    epochs: int = 1
    eval_images: int = 50
    batch_size: int | None = None

    @classmethod
    def from_dict(cls, d: dict) -> Rehearsal:
        _no_unknown("rehearsal", d, [f.name for f in fields(cls)])
        return cls(**d)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def reduced(self, sched: Schedule, ev: Eval) -> dict[str, tuple]:
        """{what: (published, rehearsed)} of every value the rehearsal cuts for a cell of this schedule and eval."""
        out = {"epochs": (sched.epochs, min(sched.epochs, self.epochs)),
               "steps per epoch": (sched.max_steps_per_epoch, min(sched.max_steps_per_epoch or self.steps, self.steps)),
               "dev images": (ev.dev_images, min(ev.dev_images, self.eval_images)),
               "test images per split": (None, self.eval_images)}
        if self.batch_size is not None and self.batch_size != sched.batch_size:
            out["batch size"] = (sched.batch_size, self.batch_size)
        return {k: v for k, v in out.items() if v[0] != v[1]}


#: The limits of a rehearsal's cuts (the suite schema reads them).
REHEARSAL_LIMITS = {"steps": Limit(1, why=_COUNT), "epochs": Limit(1, why=_COUNT),
                    "eval_images": Limit(5, why="COCO 1K's five folds need an image each"),
                    "batch_size": Limit(1, why=_COUNT)}


def rehearsed(sched: Schedule, ev: Eval, r: Rehearsal | None) -> tuple[Schedule, Eval]:
    """The schedule and eval a rehearsal runs (``r`` None: unchanged). Idempotent."""
    if r is None:
        return sched, ev
    cut = {"epochs": min(sched.epochs, r.epochs),
           "max_steps_per_epoch": min(sched.max_steps_per_epoch or r.steps, r.steps)}
    if r.batch_size is not None:
        cut["batch_size"] = r.batch_size
    return (dataclasses.replace(sched, **cut),
            dataclasses.replace(ev, dev_images=min(ev.dev_images, r.eval_images)))


_PARTS = {"dataset": Dataset, "matcher": MatcherSpec, "strategy": StrategySpec, "schedule": Schedule,
          "eval": Eval, "resources": Resources, "wandb": Wandb, "anchor_checkpoint": Anchor,
          "rehearsal": Rehearsal}


@dataclass(frozen=True)
class Cell:
    """One training run: (dataset, matcher, strategy, seed, schedule) plus where it belongs in a suite.

    The optional fields (``id``, ``suite``, labels, ``resources``, ``wandb``, ``recipe``,
    ``anchor_checkpoint``, ``device``, ``rehearsal``) are left out of :meth:`to_dict` when None.
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
    wandb: Wandb | None = None
    recipe: dict | None = None  # {group: "option@version"} of the suite's recipes (not hashed: the schedule is)
    anchor_checkpoint: Anchor | None = None  # a released OAS anchor
    device: str | None = None  # "auto" | "cpu" | "cuda" | "cuda:N" (resolved: "auto")
    rehearsal: Rehearsal | None = None  # a dress rehearsal of this full-scale cell (never a result of its table)

    @classmethod
    def from_dict(cls, d: dict) -> Cell:
        for key in ("dataset", "matcher", "strategy"):
            if key not in d or (isinstance(d[key], dict) and "name" not in d[key]):
                raise ValueError(f"cell is missing '{key}.name' (got keys {sorted(d)})")
            if not isinstance(d[key], dict):
                raise ValueError(f"cell: {key}: expected a mapping with its name ({key}: {{name: …}}), got "
                                 f"{type(d[key]).__name__} {shown(d[key])}")
            if not isinstance(d[key]["name"], str):
                raise ValueError(f"cell: {key}.name: expected a name (str), got {type(d[key]['name']).__name__} "
                                 f"{shown(d[key]['name'])}")
        _no_unknown("cell", d, {f.name: None for f in fields(cls)})
        for key, part in d.items():  # every part a mapping of its keys (a mistyped `eval: 3` is named here)
            if key in _PARTS and part is not None and not isinstance(part, dict):
                raise ValueError(f"cell: {key}: expected a mapping of {key} keys, got {type(part).__name__} "
                                 f"{shown(part)}")
        for key, inner in (("strategy", "params"), ("eval", "protocols")):
            value = (d.get(key) or {}).get(inner)
            kind = dict if inner == "params" else list
            if value is not None and not isinstance(value, kind):
                raise ValueError(f"cell: {key}.{inner}: expected a {'mapping' if kind is dict else 'list'}, got "
                                 f"{type(value).__name__} {shown(value)}"
                                 + (f"; write [{value}]" if kind is list and isinstance(value, str) else ""))
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


def declared_defaults(params) -> dict:
    """The JSON-able defaults of the declared arguments ``params`` (``inspect.Parameter``\\ s): what a cell id
    holds for an argument a suite leaves out, so a default written out gives the same id."""
    return {p.name: p.default for p in params
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.default is not p.empty and _jsonable(p.default)}


def matcher_defaults(name: str) -> dict:
    """Matcher ``name``'s declared constructor defaults (``models.parameters``: a class or a preset alike, read
    through ``bench.registry_facts``)."""
    from bench import registry_facts

    return registry_facts.declared_defaults(registry_facts.matcher_params(name))


def strategy_defaults(name: str) -> dict:
    """Strategy ``name``'s constructor defaults, less the arguments the trainer sets (``TRAINER_STRATEGY_ARGS``)."""
    from bench import registry_facts

    info = registry_facts.strategy_info(name)
    if info is None:
        raise KeyError(f"unknown strategy {name!r}. Valid strategies: {', '.join(registry_facts.strategy_names())}")
    ctor = registry_facts.declared_defaults(info["ctor"])
    return {k: v for k, v in ctor.items() if k not in TRAINER_STRATEGY_ARGS}


def _strategy_traits(name: str, params: dict) -> dict:
    """The strategy variant's scenario, whether it starts from the baseline, its branches (``strategies.build``,
    remembered by ``bench.registry_facts``); a variant that does not build raises the registry's error."""
    from bench import registry_facts

    if registry_facts.strategy_info(name) is None:
        raise KeyError(f"unknown strategy {name!r}. Valid strategies: {', '.join(registry_facts.strategy_names())}")
    traits = registry_facts.strategy_variant(name, params)
    if "error" in traits:  # the registry's own error, as strategies.build raised it
        raise (ValueError if traits.get("error_type") == "ValueError" else TypeError)(traits["error"])
    return traits


def strategy_branches(name: str, params: dict) -> int:
    """How many branches (models run forward each step) a strategy variant trains with."""
    return _strategy_traits(name, params)["branches"]


def matcher_fact(name: str, attr: str, default=None):
    """Class attribute ``attr`` of matcher ``name`` (``models.matcher_attribute``, read through
    ``bench.registry_facts``), e.g. ``dual_encoder``."""
    from bench import registry_facts

    return registry_facts.matcher_attr(name, attr, default)


def strategy_scenario(name: str, params: dict) -> str:
    """The training scenario of a strategy variant (``oas``, ``oss``, ``mss``, ``none``), as the strategy says."""
    return _strategy_traits(name, params)["scenario"]


def needs_baseline(name: str, params: dict) -> bool:
    """Whether the strategy starts from the trained baseline of its matcher, dataset and seed (OAS):
    ``Strategy.needs_anchor_checkpoint``, the one place that says it."""
    return _strategy_traits(name, params)["needs_anchor"]


def matcher_kwargs(cell: Cell, given: dict) -> dict:
    """The arguments a (resolved) cell's matcher is built with: what the data gives (``given``: vocabulary,
    region shape, words) and the schedule's weight decay where its constructor takes them, then the cell's
    own overrides (``models.build_kwargs``). The trainer builds with them, ``bench.inputs`` counts with them."""
    import models

    given = dict(given)
    if cell.schedule.weight_decay is not None:
        given["weight_decay"] = cell.schedule.weight_decay
    return models.build_kwargs(cell.matcher.name, given, cell.matcher.overrides)


def _fill_schedule(sched: Schedule, matcher: str, strategy: StrategySpec) -> Schedule:
    """The schedule's None defaults made concrete for this matcher and strategy (what :func:`resolve`
    records): ``hinge_warmup_epochs`` the matcher's (0 for a strategy that starts from a trained
    checkpoint, OAS stage 2: straight to the hardest negative), ``weight_decay`` the matcher's published
    value, ``caption_aug`` the matcher's own augmentation."""
    filled = {}
    if sched.hinge_warmup_epochs is None:
        filled["hinge_warmup_epochs"] = 0 if needs_baseline(strategy.name, strategy.params) else int(
            matcher_fact(matcher, "hinge_warmup_epochs", 0))
    if sched.weight_decay is None:
        filled["weight_decay"] = float(matcher_fact(matcher, "weight_decay", 0.0))
    if sched.caption_aug is None:
        filled["caption_aug"] = bool(matcher_fact(matcher, "token_aug", False))
    return dataclasses.replace(sched, **filled)


def without_added_defaults(values: dict, part=None) -> dict:
    """``values`` (of ``part``: ``Schedule``, the default, or ``Eval``) without the keys added after results
    existed (``_key(added=True)``) that hold their default."""
    added = added_defaults(Schedule if part is None else part)
    return {k: v for k, v in values.items() if not (k in added and v == added[k])}


SEED_RANGE = (0, 2**32)  # numpy's seed range: a cell's seed (and a suite's seeds, bench.harness.schema)


def seed_problem(seed) -> str | None:
    """What is wrong with a cell's seed (None: nothing)."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        return f"expected a whole number, got {type(seed).__name__} {shown(seed)}"
    lo, hi = SEED_RANGE
    if not lo <= seed < hi:
        return f"seed {seed} is outside [0, 2**32) (numpy's seed range); use a seed in 0 … {hi - 1}"
    return None


MAX_SIZE = 2**20  # a matcher's size or count is at most this, or 16 x its default where that is more


def argument_problem(arg: str, kind: type, default, value) -> str | None:
    """What is wrong with ``value`` for a matcher argument of type ``kind`` (None: nothing). Sizes and
    counts (an int argument whose default is >= 1, or without a default) must be in 1 … max(``MAX_SIZE``, 16 x the
    default), dropouts in [0, 1)."""
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
    if kind is int and (default is None or default >= 1) and value > (most := max(MAX_SIZE, 16 * (default or 0))):
        return (f"must be at most {most:,}, got {shown(value)}: far beyond the sizes and counts the matchers are "
                f"built with (default {default}), a model of it fits no memory")
    if kind is float and "dropout" in arg and not 0 <= value < 1:
        return f"must be in [0, 1), got {shown(value)}: a dropout probability"
    return None


def _check_values(cell: Cell) -> None:
    """The cell's own values outside the schedule (``seed``, ``dataset.name``, the ``eval`` counts), checked as
    the suite schema checks them: a cell given to ``python -m bench.train`` (or to the trainer directly) never
    reaches a traceback or a wrong run through them. ValueError naming the key."""
    from bench.protocols import PROTOCOLS

    if problem := seed_problem(cell.seed):
        raise ValueError(f"seed: {problem}")
    datasets = sorted({p.dataset for p in PROTOCOLS.values()})
    if cell.dataset.name not in datasets:
        raise ValueError(f"dataset.name: unknown dataset {shown(cell.dataset.name)}; valid: {', '.join(datasets)} "
                         "(the folders of a data root a protocol evaluates)")
    from bench.registry_facts import matcher_argument_kinds

    kinds = matcher_argument_kinds(cell.matcher.name)
    for arg, value in cell.matcher.overrides.items():
        if arg in kinds and (problem := argument_problem(arg, *kinds[arg], value)):
            raise ValueError(f"matcher.{arg}: {problem}")
    for key in ("dev_images", "batch_size"):
        value = getattr(cell.eval, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"eval.{key}: expected a whole number >= 1, got {shown(value)}: a count of 0 or less "
                             "evaluates nothing")


def _check_protocols(names, dataset: str) -> None:
    """Each protocol evaluates one dataset's split: another dataset's would title the table with a lie."""
    from bench.registry_facts import protocols

    known = protocols()
    name = dataset if dataset.endswith("_precomp") else f"{dataset}_precomp"
    own = [p for p, info in known.items() if info["dataset"] == name] or None
    for p in names or []:
        if p not in known:
            raise KeyError(f"unknown protocol {p!r}; valid protocols: {', '.join(known)}")
        if own is not None and p not in own:
            raise ValueError(f"eval.protocols: protocol {p!r} evaluates {known[p]['dataset']}, not this cell's dataset "
                             f"{dataset}; give {' or '.join(own)}")


def resolve_dataset(ds: Dataset) -> Dataset:
    """The dataset with its paths' defaults: ``DEFAULT_DATA_ROOT``, its ``vocab/``, 5 captions per image; the
    roots a user wrote with ``~`` and ``$VARS`` expanded (``bench.values.expand_path``)."""
    data_root = expand_path(ds.data_root) if ds.data_root is not None else DEFAULT_DATA_ROOT
    return dataclasses.replace(
        ds, data_root=data_root,
        vocab_root=expand_path(ds.vocab_root) if ds.vocab_root is not None else default_vocab_root(data_root),
        captions_per_image=ds.captions_per_image if ds.captions_per_image is not None else DEFAULT_CAPTIONS_PER_IMAGE)


def resolve(cell: Cell) -> Cell:
    """Every default of ``cell`` filled, the code's included: the dataset's paths, the schedule's matcher-given
    values, the matcher's and the strategy's declared constructor defaults (``MatcherSpec.defaults``,
    ``StrategySpec.defaults``), the device; a rehearsal's cuts (:class:`Rehearsal`). What the run uses and
    records, and what :func:`result_key` reads. Idempotent. Raises ValueError naming the key for a value out of range, KeyError for an unknown name."""
    from bench.precision import RunMode

    for key, value in cell.schedule.to_dict().items():
        if problem := schedule_type_problem(key, value):
            raise ValueError(f"schedule.{key}: {problem}")
        if problem := schedule_limit_problem(key, value):
            raise ValueError(f"schedule.{key} {problem}")
        if key in SCHEDULE_CHOICES and value not in SCHEDULE_CHOICES[key]:
            raise ValueError(f"schedule.{key}: unknown value {shown(value)}; valid: {', '.join(SCHEDULE_CHOICES[key])}")
    _check_values(cell)
    sched = _fill_schedule(cell.schedule, cell.matcher.name, cell.strategy)
    RunMode.of(sched.to_dict(), "cpu")  # a bad precision/compile (or amp contradicting it) fails here
    _check_protocols(cell.eval.protocols, cell.dataset.name)
    sched, ev = rehearsed(sched, cell.eval, cell.rehearsal)
    return dataclasses.replace(
        cell, dataset=resolve_dataset(cell.dataset), schedule=sched, eval=ev,
        matcher=dataclasses.replace(cell.matcher, defaults=matcher_defaults(cell.matcher.name)),
        strategy=dataclasses.replace(cell.strategy, defaults=strategy_defaults(cell.strategy.name)),
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


def result_key(cell: Cell) -> dict:
    """What decides a cell's result, read from its :func:`resolve`\\ d form: dataset name and label, matcher
    (name, declared defaults, overrides), strategy (name, defaults and params), schedule (less
    ``NOT_RESULT_KEYS``), eval (both less the ``added`` keys at their default), seed, the cells it depends on, a
    released anchor's content and the content of local pretrained folders (:func:`weights_identity`, in place
    of their paths), a rehearsal's cuts. Not: suite, scale, labels of matcher and strategy, data paths, resources,
    W&B, device (the data itself is checked by its fingerprint). The same for a cell and its resolved form:
    the id names both, and a resume compares it."""
    r = resolve(cell)
    sched = {k: v for k, v in r.schedule.to_dict().items() if k not in NOT_RESULT_KEYS}
    key = {
        "dataset": [r.dataset.name, r.dataset_label if r.dataset_label is not None else r.dataset.name],
        "matcher": {**r.matcher.defaults, **r.matcher.to_dict()},
        "strategy": [r.strategy.name, r.strategy.arguments],
        "schedule": without_added_defaults(sched),
        "eval": without_added_defaults(r.eval.to_dict(), Eval),
        "seed": r.seed,
        "depends_on": sorted(r.depends_on or []),
    }
    if r.dataset.captions_per_image != DEFAULT_CAPTIONS_PER_IMAGE:  # the readers' default is left out: ids unchanged
        key["captions_per_image"] = r.dataset.captions_per_image
    if r.anchor_checkpoint:  # a released anchor instead of a baseline cell: its content decides
        key["anchor_checkpoint"] = r.anchor_checkpoint.sha256
    if r.rehearsal is not None:  # a rehearsal is never a result of its table: never the id of a real cell
        key["rehearsal"] = r.rehearsal.to_dict()
    weights = weights_identity(r)
    if weights:  # local pretrained folders: their content decides, not where they lie
        key["matcher"] = {k: v for k, v in key["matcher"].items() if k not in weights}
        key["weights"] = weights
    return key


def weights_identity(cell: Cell) -> dict:
    """{matcher argument: content fingerprint} of the local pretrained folders the cell's matcher reads
    (``pretrained_path``, ``bert_path``: ``bench.weights``); {} for a cell without, whose key is unchanged."""
    from bench.weights import identity

    return identity(cell.matcher.name, cell.matcher.arguments)


def cell_id(cell: Cell) -> str:
    """sha1 (12 hex digits) of the canonical JSON of :func:`result_key` (DomainBed style)."""
    return hashlib.sha1(canonical_json(result_key(cell)).encode()).hexdigest()[:12]
