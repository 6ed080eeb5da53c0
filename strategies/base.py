"""What a cooperative strategy is: a set of branches and a loss per optimised branch.

Every branch is a full matcher of the same architecture. A strategy says how each branch starts
(``init``), how it is updated (``update``), in which mode its forward pass runs, and which branch
is reported (evaluated and selected on dev). Each step the trainer computes every branch's B×B score
matrix on the same batch and calls :meth:`Strategy.losses`, which returns one scalar loss per
optimised branch. The trainer back-propagates their sum once: no loss reaches into another branch,
because every cross-branch term uses the other branch's scores detached (stop-gradient).
"""

from __future__ import annotations

import functools
import inspect
import math
import types
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

import torch

from strategies import losses as L


@dataclass(frozen=True)
class Branch:
    """One branch of a strategy.

    init:   ``"scratch"`` (random init from the run seed), ``"checkpoint"`` (the reported branch of
            the anchor/teacher run, OAS), or ``"copy:<branch>"`` (an exact copy of another branch
            after that one is initialised, MSS).
    update: ``"optimizer"`` (own optimiser and lr schedule), ``"ema:<branch>"`` (exponential moving
            average of another branch after each step), or ``"frozen"``.
    mode:   ``"train"`` or ``"eval"`` for the branch's forward pass during training.
    """

    name: str
    init: str = "scratch"
    update: str = "optimizer"
    mode: str = "train"

    @property
    def optimised(self) -> bool:
        return self.update == "optimizer"


@dataclass
class StepContext:
    """What a loss may depend on besides the scores: position in training and CLIP's logit scales."""

    epoch: int
    step: int  # global optimiser step, 0-based
    total_steps: int
    logit_scales: dict[str, torch.Tensor] = field(default_factory=dict)


SCENARIOS = ("none", "oas", "oss", "mss")


@dataclass(frozen=True)
class Param:
    """The range of one strategy parameter and what it means; its type is the constructor's annotation
    (``float``, ``int``, ``bool``, ``str``, ``Literal[...]`` choices, ``… | None``). Each strategy class
    declares ``PARAMS = {name: Param(...)}`` next to its ``__init__``, one entry per parameter it names:
    every value is checked when the strategy is constructed (suites, overrides, ``python -m bench.train``
    and direct use alike), before any training. ``ge``/``le``: inclusive bounds; ``gt``: exclusive lower."""

    why: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None

    def bounds(self) -> str:
        if self.ge is not None and self.le is not None:
            return f"in [{self.ge:g}, {self.le:g}]"
        low = f">= {self.ge:g}" if self.ge is not None else f"> {self.gt:g}" if self.gt is not None else ""
        high = f"<= {self.le:g}" if self.le is not None else ""
        return " and ".join(x for x in (low, high) if x)

    def problem(self, value, kind) -> str | None:
        """What is wrong with ``value`` for this parameter of type ``kind`` (see :func:`_kind`), or None."""
        choices, optional, base = kind
        if value is None and optional:
            return None
        if choices is not None:
            return None if value in choices and type(value) is type(choices[0]) else \
                f"must be one of {', '.join(map(str, choices))}"
        ok = {bool: isinstance(value, bool), str: isinstance(value, str),
              int: isinstance(value, int) and not isinstance(value, bool),
              float: isinstance(value, (int, float)) and not isinstance(value, bool)}[base]
        name = {bool: "true or false", str: "a string", int: "a whole number", float: "a number"}[base]
        if not ok or (base is float and not math.isfinite(value)):
            return f"must be {'a finite number' if ok else name}{' ' + self.bounds() if self.bounds() else ''}"
        if base in (int, float) and ((self.ge is not None and value < self.ge) or (self.gt is not None and
                                                                                 value <= self.gt)
                                     or (self.le is not None and value > self.le)):
            return f"must be {self.bounds()}"
        return None


def _kind(hint) -> tuple[tuple | None, bool, type | None]:
    """(Literal choices or None, None allowed, base type) of a parameter's annotation."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = len(args) < len(typing.get_args(hint)), args[0] if len(args) == 1 else hint
    if typing.get_origin(hint) is typing.Literal:
        return tuple(typing.get_args(hint)), optional, None
    return None, optional, hint if hint in (bool, int, float, str) else None


def _checked_init(cls: type, init):
    """``init`` checking every parameter it names against ``cls.PARAMS`` before it runs; TypeError now
    (when the class is defined) for a parameter without an annotated type or a declared range."""
    table = cls.__dict__.get("PARAMS", {})
    hints = typing.get_type_hints(init)
    sig = inspect.signature(init)
    named = [p.name for p in sig.parameters.values()
             if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    kinds = {n: _kind(hints.get(n)) for n in named}
    undeclared = [n for n in named if n not in table or (kinds[n][0] is None and kinds[n][2] is None)]
    if undeclared:
        raise TypeError(f"strategy class {cls.__name__}: parameter(s) {', '.join(undeclared)} of __init__ need an "
                        f"annotated type (float, int, bool, str, Literal[...], or ... | None) and an entry in "
                        f"{cls.__name__}.PARAMS (strategies.base.Param: what it means and its range)")

    @functools.wraps(init)
    def checked(self, *args, **kwargs):
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        for n in named:
            value = bound.arguments[n]
            problem = table[n].problem(value, kinds[n])
            if problem:
                from bench.values import shown

                raise ValueError(f"{self.name} {n}={shown(value)}: {problem} ({table[n].why})")
        init(self, *args, **kwargs)

    return checked


class Strategy(ABC):
    """Base class. Subclasses set ``name`` and ``scenario`` and implement ``branches`` and ``losses`` (and
    ``momentum`` when a branch is an EMA). The trainer calls nothing else on a strategy: ``branches()``,
    ``reported``, ``losses(scores, ctx)``, ``momentum(step, total_steps)``, ``needs_anchor_checkpoint``,
    ``describe()``; it sets the arguments below (``bench.spec.TRAINER_STRATEGY_ARGS``).

    Args common to all strategies:
        base_loss: ``"hinge"`` or ``"infonce"`` (from the matcher).
        margin: hinge margin m (0.2).
        max_violation: hardest negative in the hinge loss (True); VSE∞ uses the sum over negatives
            for its first ``hinge_warmup_epochs`` epochs.
        hinge_warmup_epochs: epochs of sum-over-negatives warm-up (1 for VSE∞, 0 otherwise).
    """

    name = "base"
    scenario = "none"
    #: What the common arguments mean and their ranges (every subclass declares its own; see :class:`Param`).
    PARAMS = {
        "base_loss": Param("the matcher's own loss, set by the trainer from the matcher"),
        "margin": Param("the hinge margin; below 0 the loss is satisfied by ranking a negative first", ge=0),
        "max_violation": Param("the hardest negative in the hinge loss; false: the sum over negatives"),
        "hinge_warmup_epochs": Param("epochs of sum-over-negatives warm-up", ge=0),
    }
    #: True when the DBL repository's code for this comparison does not run as shipped (its training
    #: programs build every second loss as ``init_loss(name, margin=, beta=)``, a TypeError for every
    #: class but the boosting losses; KD is not there at all), so the strategy is reconstructed from
    #: the paper's description. Tables say so (:func:`strategies.reconstruction_note`).
    reconstructed = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _checked_init(cls, cls.__dict__["__init__"])

    def __init__(self, base_loss: Literal["hinge", "infonce"] = "hinge", margin: float = 0.2,
                 max_violation: bool = True, hinge_warmup_epochs: int = 0):
        self.base_loss_name = base_loss
        self.margin = margin
        self.max_violation = max_violation
        self.hinge_warmup_epochs = hinge_warmup_epochs

    # -- to implement -------------------------------------------------------------------------
    @abstractmethod
    def branches(self) -> list[Branch]:
        """The branches, in order; the last is reported unless a subclass says otherwise."""

    @abstractmethod
    def losses(self, scores: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        """One scalar loss per optimised branch from every branch's B×B score matrix."""

    # -- shared -----------------------------------------------------------------------------
    @property
    def reported(self) -> str:
        """The branch that is evaluated, selected on dev and reported (only it is used at test time)."""
        return self.branches()[-1].name

    def base(self, S: torch.Tensor, ctx: StepContext, branch: str) -> torch.Tensor:
        """The matcher's own loss L_raw on one branch's scores (method.md, "Base (raw) loss")."""
        if self.base_loss_name == "infonce":
            return L.infonce(S, ctx.logit_scales[branch])
        max_violation = self.max_violation and ctx.epoch >= self.hinge_warmup_epochs
        return L.triplet(S, margin=self.margin, max_violation=max_violation)

    @property
    def needs_anchor_checkpoint(self) -> bool:
        """True when the strategy starts from the trained baseline checkpoint of the same cell: the OAS scenario
        (the suite adds that baseline cell, ``bench.harness.cells.expand``; the trainer loads its ``best.pt``)."""
        return self.scenario == "oas"

    def momentum(self, step: int, total_steps: int) -> float:
        """The EMA momentum m at optimiser ``step`` of ``total_steps`` for every branch whose ``update`` is
        ``"ema:<branch>"`` (θ ← m·θ + (1 − m)·θ_branch after each step). A strategy with such a branch
        defines it."""
        raise NotImplementedError(f"strategy {self.name!r} has an EMA branch but defines no momentum(step, "
                                  "total_steps)")

    def describe(self) -> dict:
        return {"name": self.name, "scenario": self.scenario, "reported": self.reported,
                "reconstructed": self.reconstructed, "branches": [b.__dict__ for b in self.branches()]}


Strategy.__init__ = _checked_init(Strategy, Strategy.__dict__["__init__"])
