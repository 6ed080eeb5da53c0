"""What a cooperative strategy is: a set of branches and a loss per optimised branch.

Every branch is a full matcher of the same architecture. A strategy says how each branch starts
(``init``), how it is updated (``update``), in which mode its forward pass runs, and which branch
is reported (evaluated and selected on dev). Each step the trainer computes every branch's B×B score
matrix on the same batch and calls :meth:`Strategy.losses`, which returns one scalar loss per
optimised branch. The trainer back-propagates their sum once: no loss reaches into another branch,
because every cross-branch term uses the other branch's scores detached (stop-gradient).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

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
    #: True when the DBL repository's code for this comparison does not run as shipped (its training
    #: programs build every second loss as ``init_loss(name, margin=, beta=)``, a TypeError for every
    #: class but the boosting losses; KD is not there at all), so the strategy is reconstructed from
    #: the paper's description. Tables say so (:func:`strategies.reconstruction_note`).
    reconstructed = False

    def __init__(self, base_loss: str = "hinge", margin: float = 0.2, max_violation: bool = True,
                 hinge_warmup_epochs: int = 0):
        if base_loss not in ("hinge", "infonce"):
            raise ValueError(f"base_loss must be 'hinge' or 'infonce', got {base_loss!r}")
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
