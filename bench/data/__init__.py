"""Data layer: readers for the real formats (SCAN precomp, Karpathy JSON), the vocabulary and
tokeniser, and the embedded synthetic dataset (:mod:`bench.data.synth`). See docs/data.md.

The readers import torch: each name below is imported from its module when first used (PEP 562), so a
command that only checks paths (``bench.data.layout``) starts without torch."""

import importlib

from bench.data.errors import DataError

_FROM = {
    **dict.fromkeys(("KarpathyPairs", "KarpathySplit", "collate_raw", "iter_raw_caption_batches",
                     "iter_raw_image_batches"), "karpathy"),
    **dict.fromkeys(("DATASETS", "PrecompDataset", "PrecompSplit", "collate_pairs", "iter_caption_batches",
                     "iter_image_batches", "precomp_problems", "vocab_path"), "precomp"),
    **dict.fromkeys(("Vocabulary", "build_vocab", "load_vocab", "save_vocab", "tokenize"), "vocab"),
}


def __getattr__(name: str):
    if name not in _FROM:
        raise AttributeError(f"module 'bench.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"bench.data.{_FROM[name]}"), name)


__all__ = [
    "DATASETS", "DataError", "KarpathyPairs", "KarpathySplit", "PrecompDataset", "PrecompSplit",
    "Vocabulary", "build_vocab", "collate_pairs", "collate_raw", "iter_caption_batches", "iter_image_batches",
    "iter_raw_caption_batches", "iter_raw_image_batches", "load_vocab", "precomp_problems", "save_vocab", "tokenize",
    "vocab_path",
]
