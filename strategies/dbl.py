"""Deep Boosting Learning (Diao et al., IEEE TIP 2024) in its three scenarios.

The target branch minimises (method.md, "Overall objective")

    L = L_raw(S) + α · L_boo(S, sg(A)),   L_boo ∈ {L_abs, L_rel}

where the anchor's scores A set adaptive margins (``loss="abs"``: absolute boosting, γ split into
γ1 = g·γ on the positive and γ2 = (1 − g)·γ on negatives; ``loss="rel"``: relative boosting with
per-triplet margin γ + (A_ii − A_ij)), γ = β·m. ``reduction="sum"`` gives the Sum variants,
``soft_margin`` the soft adaptation of the margins (sigmoid or hard clip).

Scenarios (what the anchor is):
  oas  the trained baseline checkpoint, frozen, eval mode; the target starts from it.
  oss  trained from scratch alongside, own optimiser, L_raw only, train mode. With K = ``branches``
       > 2 it is a cascade: branch k (0-based) minimises L_raw(S_k) + α · (1/k) Σ_{n<k} L_boo(S_k, sg(S_n)).
  mss  an EMA of the target (cosine momentum from m0 to 1), eval mode, starting as its exact copy.
Only the target (the last branch) is used at test time.
"""

from __future__ import annotations

from typing import Literal

from strategies import losses as L
from strategies import register
from strategies.base import Branch, Param, Strategy
from strategies.momentum import cosine_momentum


@register
class DBL(Strategy):
    name = "dbl"
    PARAMS = {
        "loss": Param("the boost loss: abs, absolute margins, or rel, relative ones"),
        "scenario": Param("what the anchor is: oas, the trained baseline; oss, trained alongside; mss, an EMA"),
        "reduction": Param("over negatives: max (hardest) or sum"),
        "soft_margin": Param("soft adaptation of the margins: none, sigmoid or clip"),
        "alpha": Param("the weight of the boost loss; below 0 it is maximised", ge=0),
        "beta": Param("the boost margin's scale, γ = β·m; below 0 its margin is turned around", ge=0),
        "split": Param("the share of the absolute margin on the positive side; 0.5: half each side", ge=0, le=1),
        "branches": Param("the branches: 2 in every scenario, more only as the OSS cascade", ge=2),
        "m0": Param("the starting EMA momentum of the MSS anchor; published: 0.99995", ge=0, le=1),
    }

    def __init__(self, loss: Literal["abs", "rel"] = "rel", scenario: Literal["oas", "oss", "mss"] = "oss",
                 reduction: Literal["max", "sum"] = "max", soft_margin: Literal["none", "sigmoid", "clip"] = "none",
                 alpha: float = 1.0, beta: float = 1.0, split: float = 0.5,
                 branches: int = 2, m0: float = 0.99995, **base):
        super().__init__(**base)
        if branches > 2 and scenario != "oss":
            raise ValueError(f"dbl branches={branches}: 2 in every scenario, more only as the OSS cascade "
                             f"(scenario={scenario})")
        self.loss, self.scenario, self.reduction, self.soft_margin = loss, scenario, reduction, soft_margin
        self.alpha, self.beta, self.split, self.n_branches, self.m0 = alpha, beta, split, branches, m0

    def branches(self):
        if self.scenario == "oas":
            return [Branch("anchor", init="checkpoint", update="frozen", mode="eval"),
                    Branch("target", init="checkpoint")]
        if self.scenario == "mss":
            return [Branch("anchor", init="copy:target", update="ema:target", mode="eval"), Branch("target")]
        if self.n_branches == 2:
            return [Branch("anchor"), Branch("target")]
        return [Branch(f"branch{k}") for k in range(self.n_branches - 1)] + [Branch("target")]

    def momentum(self, step: int, total_steps: int) -> float:
        return cosine_momentum(step, total_steps, self.m0)

    def boost(self, S, A):
        """L_boo(S, sg(A)) with this strategy's variant."""
        kw = dict(margin=self.margin, beta=self.beta, reduction=self.reduction, soft_margin=self.soft_margin)
        if self.loss == "abs":
            return L.boost_abs(S, A.detach(), split=self.split, **kw)
        return L.boost_rel(S, A.detach(), **kw)

    def losses(self, scores, ctx):
        names = [b.name for b in self.branches()]
        out = {}
        for k, name in enumerate(names):
            if not self.branches()[k].optimised:
                continue
            loss = self.base(scores[name], ctx, name)
            if k > 0:
                boost = sum(self.boost(scores[name], scores[prev]) for prev in names[:k]) / k
                loss = loss + self.alpha * boost
            out[name] = loss
        return out
