"""Conventional distillation in the offline asynchronous scenario (OAS).

A teacher is the trained baseline checkpoint of the same matcher/data/seed, frozen and run in eval
mode; the student starts from the same checkpoint and is fine-tuned with

    L = L_raw(S) + α · L_kd(S, sg(A))

where L_kd is one of (method.md, "Compared cooperative strategies"):
  kd        KL(P(A) ‖ P(S)) over rows and columns, P = softmax(X / 0.1)
  rkd       10 · SmoothL1_mean(S, A)
  sp        similarity-preserving, 10 · (row + column terms)
  darkrank  listwise Plackett–Luce on Z = −3·X³ (``order`` chooses the ranking, see losses.darkrank)
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Literal

from strategies import losses as L
from strategies import register
from strategies.base import Branch, Param, Strategy


class _Distillation(Strategy):
    scenario = "oas"
    reconstructed = True  # DBL's OAS code: no KD; RKD, SP, DarkRank fail to construct (see Strategy)

    PARAMS = {"alpha": Param("the weight of the distillation term; below 0 it is maximised", ge=0)}

    def __init__(self, alpha: float = 1.0, **base):
        super().__init__(**base)
        self.alpha = alpha

    def branches(self):
        return [Branch("teacher", init="checkpoint", update="frozen", mode="eval"),
                Branch("target", init="checkpoint")]

    @abstractmethod
    def distill(self, S, A):
        """The distillation term L_kd(S, sg(A))."""

    def losses(self, scores, ctx):
        S, A = scores["target"], scores["teacher"].detach()
        return {"target": self.base(S, ctx, "target") + self.alpha * self.distill(S, A)}


@register
class KD(_Distillation):
    name = "kd"

    def distill(self, S, A):
        return L.kd(S, A)


@register
class RKD(_Distillation):
    name = "rkd"

    def distill(self, S, A):
        return L.rkd(S, A)


@register
class SP(_Distillation):
    name = "sp"

    def distill(self, S, A):
        return L.sp(S, A)


@register
class DarkRank(_Distillation):
    name = "darkrank"

    PARAMS = {"order": Param("the ranking DarkRank distils: by similarity or by distance, see losses.darkrank")}

    def __init__(self, order: Literal["similarity", "distance"] = "similarity", **kw):
        super().__init__(**kw)
        self.order = order

    def distill(self, S, A):
        return L.darkrank(S, A, order=self.order)
