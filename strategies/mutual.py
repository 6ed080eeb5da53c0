"""Deep mutual learning in the online synchronous scenario (OSS).

K ≥ 2 peers of the same matcher are trained from scratch at the same time, each with its own
optimiser. With ``symmetric=True`` (the default, DML as published) peer k minimises

    L_k = L_raw(S_k) + α · 1/(K−1) · Σ_{l≠k} KL(P(sg(S_l)) ‖ P(S_k)),   P = softmax(X / 0.1)

over rows and columns. ``symmetric=False`` is the wiring of the DBL repository's OSS program
(its cascade loop with the DML term): the first peer learns from L_raw alone and peer k > 0 from
the detached earlier peers only, L_k = L_raw(S_k) + α · 1/k · Σ_{l<k} KL(P(sg(S_l)) ‖ P(S_k)).
The reported peer is ``report``; by default ``peer1`` (the first) when symmetric, and the last
peer (the one that learns from all others, as the reference's target) when one-sided.
"""

from __future__ import annotations

from strategies import losses as L
from strategies import register
from strategies.base import Branch, Param, Strategy


@register
class DML(Strategy):
    name = "dml"
    scenario = "oss"
    reconstructed = True  # DBL's OSS code: its DML loss fails to construct (see Strategy)

    PARAMS = {
        "peers": Param("the peers trained together", ge=2),
        "alpha": Param("the weight of the KL terms toward the other peers; below 0 it pushes the peers apart",
                       ge=0),
        "report": Param("the reported peer, peer1 .. peerK; by default peer1, or the last when one-sided"),
        "symmetric": Param("whether every peer learns from all others; false: from the earlier peers only, "
                           "the reference's wiring"),
    }

    def __init__(self, peers: int = 2, alpha: float = 1.0, report: str | None = None, symmetric: bool = True,
                 **base):
        super().__init__(**base)
        self.peers, self.alpha, self.symmetric = peers, alpha, symmetric
        if report is None:
            report = "peer1" if self.symmetric else f"peer{peers}"
        self._report = report
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
        for i, k in enumerate(names):
            others = [l for l in names if l != k] if self.symmetric else names[:i]
            loss = self.base(scores[k], ctx, k)
            if others:
                loss = loss + self.alpha * sum(L.dml(scores[k], scores[l].detach()) for l in others) / len(others)
            out[k] = loss
        return out
