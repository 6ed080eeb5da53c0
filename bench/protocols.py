"""The named evaluation protocols (the one place that names them), and their dispatch.

    f30k_1k : Flickr30K ``test`` split, 1,000 images / 5,000 captions, one evaluation
    coco_1k : COCO ``testall`` (5,000 / 25,000) cut into 5 folds of 1,000 images, metrics averaged
    coco_5k : COCO ``testall`` evaluated whole

COCO 1K is always the 5 folds of ``testall``, never the 1,000-image ``test`` split alone (that
gives higher, unfair numbers; docs/evaluation.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.metrics import coco_5fold, retrieval_metrics


@dataclass(frozen=True)
class Protocol:
    """An evaluation protocol: which split of which dataset, and how many folds it is cut into."""

    name: str
    dataset: str  # directory name under DATA/, e.g. "f30k_precomp"
    split: str  # "test", "testall", "dev" ...
    n_folds: int = 1  # 1: the whole split at once; >1: consecutive image folds, metrics averaged
    captions_per_image: int = 5


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("f30k_1k", dataset="f30k_precomp", split="test", n_folds=1),
        Protocol("coco_1k", dataset="coco_precomp", split="testall", n_folds=5),
        Protocol("coco_5k", dataset="coco_precomp", split="testall", n_folds=1),
    )
}


def get_protocol(protocol: str | Protocol) -> Protocol:
    """The Protocol named ``protocol`` (a Protocol passes through); KeyError listing valid names."""
    if isinstance(protocol, Protocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise KeyError(f"unknown protocol {protocol!r}; valid protocols: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[protocol]


def protocols_for(dataset: str) -> list[Protocol]:
    """The protocols evaluated on ``dataset`` ("f30k_precomp" or "coco_precomp"; "f30k"/"coco" too)."""
    name = dataset if dataset.endswith("_precomp") else f"{dataset}_precomp"
    found = [p for p in PROTOCOLS.values() if p.dataset == name]
    if not found:
        datasets = sorted({p.dataset for p in PROTOCOLS.values()})
        raise KeyError(f"no protocol for dataset {dataset!r}; datasets with protocols: {', '.join(datasets)}")
    return found


def evaluate_protocol(protocol: str | Protocol, sims, return_ranks: bool = False):
    """Metrics of score matrix ``sims`` [n_images, n_captions] (the protocol's whole split) under ``protocol``.

    One fold: :func:`bench.metrics.retrieval_metrics`; several: :func:`bench.metrics.coco_5fold`
    (its result also holds ``"folds"``). With ``return_ranks=True`` returns
    ``(metrics, i2t_ranks, t2i_ranks)`` (within-fold ranks for folded protocols).
    """
    p = get_protocol(protocol)
    if p.n_folds == 1:
        return retrieval_metrics(sims, p.captions_per_image, return_ranks=return_ranks)
    return coco_5fold(sims, p.captions_per_image, n_folds=p.n_folds, return_ranks=return_ranks)
