"""The named evaluation protocols (the one place that names them), and their dispatch.

    f30k_1k : Flickr30K ``test`` split, 1,000 images / 5,000 captions, one evaluation
    coco_1k : COCO ``testall`` (5,000 / 25,000) cut into 5 folds of 1,000 images, metrics averaged
    coco_5k : COCO ``testall`` evaluated whole

COCO 1K is always the 5 folds of ``testall``, never the 1,000-image ``test`` split alone (that
gives higher, unfair numbers; docs/evaluation.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Protocol:
    """An evaluation protocol: which split of which dataset, and how many folds it is cut into."""

    name: str
    dataset: str  # directory name under DATA/, e.g. "f30k_precomp"
    split: str  # "test", "testall", "dev" ...
    n_folds: int = 1  # 1: the whole split at once; >1: consecutive image folds, metrics averaged
    captions_per_image: int = 5
    #: how tables and figures name it (the one home of these names); sizes are the data's, not the protocol's
    title: str = field(default="", compare=False)
    description: str = field(default="", compare=False)  # what is evaluated, in words
    fold_images: int = field(default=0, compare=False)  # images per fold on the real dataset (1,000 or 5,000)

    @property
    def long_title(self) -> str:
        """e.g. ``COCO 1K (testall in 5 folds, metrics averaged)``."""
        return f"{self.title} ({self.description})" if self.description else self.title or self.name


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("f30k_1k", dataset="f30k_precomp", split="test", n_folds=1, title="Flickr30K 1K",
                 description="the whole test split", fold_images=1000),
        Protocol("coco_1k", dataset="coco_precomp", split="testall", n_folds=5, title="COCO 1K",
                 description="testall in 5 folds, metrics averaged", fold_images=1000),
        Protocol("coco_5k", dataset="coco_precomp", split="testall", n_folds=1, title="COCO 5K",
                 description="the whole testall", fold_images=5000),
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
        # torch: imported when scoring, not when a suite names its protocols
        from bench.metrics import retrieval_metrics

        return retrieval_metrics(sims, p.captions_per_image, return_ranks=return_ranks)
    from bench.metrics import coco_5fold

    return coco_5fold(sims, p.captions_per_image, n_folds=p.n_folds, return_ranks=return_ranks)
