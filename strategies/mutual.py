"""Deep mutual learning in the online synchronous scenario (OSS).

K ≥ 2 peers of the same matcher are trained from scratch at the same time, each with its own
optimiser. Peer k minimises (symmetric DML; the reference wires it one way only)

    L_k = L_raw(S_k) + α · 1/(K−1) · Σ_{l≠k} KL(P(sg(S_l)) ‖ P(S_k)),   P = softmax(X / 0.1)

over rows and columns. The reported peer is ``peer1`` (the first) unless ``report`` says otherwise.
"""

from __future__ import annotations

from strategies import losses as L
from strategies import register
from strategies.base import Branch, Strategy


@register
class DML(Strategy):
    name = "dml"
    scenario = "oss"

    def __init__(self, peers: int = 2, alpha: float = 1.0, report: str = "peer1", **base):
        super().__init__(**base)
        if peers < 2:
            raise ValueError(f"dml needs peers >= 2, got {peers}")
        self.peers, self.alpha, self._report = peers, alpha, report
        if report not in [b.name for b in self.branches()]:
            raise ValueError(f"dml report={report!r} is not a peer (peer1..peer{peers})")

    def branches(self):
        return [Branch(f"peer{k + 1}") for k in range(self.peers)]

    @property
    def reported(self):
        return self._report

    def losses(self, scores, ctx):
        names = [b.name for b in self.branches()]
        out = {}
        for k in names:
            mimic = sum(L.dml(scores[k], scores[l].detach()) for l in names if l != k) / (len(names) - 1)
            out[k] = self.base(scores[k], ctx, k) + self.alpha * mimic
        return out
