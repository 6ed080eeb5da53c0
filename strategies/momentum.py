"""Contrastive self-distillation with a momentum teacher in the momentum synchronous scenario (MSS).

The teacher is an exponential moving average of the target, starting as an exact copy of the
randomly initialised target, without gradient and in eval mode. After every step (method.md)

    m_t = 1 − (1 − m0) · (1 + cos(π t / T)) / 2,     θ_teacher ← m_t θ_teacher + (1 − m_t) θ_target

The target minimises L_raw(S) + α · L_dino(S, sg(A)) where L_dino is the DINO-style cross-entropy
H(P(A), P(S)) over rows and columns at temperature 0.1 without centering (``loss="dino"``) or its
reverse-KL variant (``loss="reverse"``, with the reference's eps = 1e-8 inside the log by default;
``eps=0`` for the exact KL, see ``losses.dino``).
"""

from __future__ import annotations

import math
from typing import Literal

from strategies import losses as L
from strategies import register
from strategies.base import Branch, Param, Strategy


def cosine_momentum(step: int, total_steps: int, m0: float) -> float:
    """m_t = 1 − (1 − m0)(1 + cos(π t / T)) / 2: m0 at t = 0, 1 at t = T."""
    t = min(step, total_steps) / max(total_steps, 1)
    return 1.0 - (1.0 - m0) * (1.0 + math.cos(math.pi * t)) / 2.0


@register
class Momentum(Strategy):
    name = "momentum"
    scenario = "mss"
    reconstructed = True  # DBL's MSS code: its DINO and reverse-KL losses fail to construct (see Strategy)

    PARAMS = {
        "loss": Param("the distillation loss: dino, a cross-entropy, or reverse, the reverse KL"),
        "m0": Param("the starting EMA momentum; published: 0.99995", ge=0, le=1),
        "alpha": Param("the weight of the distillation term; below 0 it is maximised", ge=0),
        "eps": Param("the reverse KL's smoothing inside the log; reference 1e-8, 0 for the exact KL", ge=0, le=1),
    }

    def __init__(self, loss: Literal["dino", "reverse"] = "dino", m0: float = 0.99995, alpha: float = 1.0,
                 eps: float = 1e-8, **base):
        super().__init__(**base)
        self.loss, self.m0, self.alpha, self.eps = loss, m0, alpha, float(eps)

    def branches(self):
        return [Branch("teacher", init="copy:target", update="ema:target", mode="eval"), Branch("target")]

    def momentum(self, step: int, total_steps: int) -> float:
        return cosine_momentum(step, total_steps, self.m0)

    def losses(self, scores, ctx):
        S, A = scores["target"], scores["teacher"].detach()
        distill = L.dino(S, A, reverse=self.loss == "reverse", eps=self.eps)
        return {"target": self.base(S, ctx, "target") + self.alpha * distill}
