"""The matcher trained alone with its own loss: L = L_raw(S) (hinge, or InfoNCE for CLIP)."""

from __future__ import annotations

from strategies import register
from strategies.base import Branch, Strategy


@register
class Baseline(Strategy):
    name = "baseline"
    scenario = "none"

    def branches(self):
        return [Branch("target")]

    def losses(self, scores, ctx):
        return {"target": self.base(scores["target"], ctx, "target")}
