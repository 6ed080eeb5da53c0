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
from strategies.base import Branch, Strategy
from strategies.momentum import cosine_momentum


@register
class DBL(Strategy):
    name = "dbl"

    def __init__(self, loss: Literal["abs", "rel"] = "rel", scenario: Literal["oas", "oss", "mss"] = "oss",
                 reduction: Literal["max", "sum"] = "max", soft_margin: Literal["none", "sigmoid", "clip"] = "none",
                 alpha: float = 1.0, beta: float = 1.0, split: float = 0.5,
                 branches: int = 2, m0: float = 0.99995, **base):
        super().__init__(**base)
        checks = {"loss": (loss, ("abs", "rel")), "scenario": (scenario, ("oas", "oss", "mss")),
                  "reduction": (reduction, ("max", "sum")), "soft_margin": (soft_margin, ("none", "sigmoid", "clip"))}
        for key, (value, valid) in checks.items():
            if value not in valid:
                raise ValueError(f"dbl {key}={value!r} is not one of {', '.join(valid)}")
        if not 0.0 <= split <= 1.0:
            raise ValueError(f"dbl split={split!r}: the share of the absolute margin on the positive side lies in "
                             "[0, 1] (0.5: half each side)")
        if not 0.0 <= m0 <= 1.0:
            raise ValueError(f"dbl m0={m0!r}: the starting EMA momentum lies in [0, 1] (published: 0.99995)")
        if alpha < 0 or beta < 0:
            raise ValueError(f"dbl alpha={alpha!r}, beta={beta!r}: both are >= 0 (below 0 the boost loss is "
                             "maximised, or its margin turned around)")
        if branches < 2 or (branches > 2 and scenario != "oss"):
            raise ValueError(f"dbl branches={branches}: 2 in every scenario, more only as the OSS cascade")
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
