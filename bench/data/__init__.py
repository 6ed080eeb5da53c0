"""Data layer: readers for the real formats (SCAN precomp, Karpathy JSON), the vocabulary and
tokeniser, and the embedded synthetic dataset (:mod:`bench.data.synth`). See docs/data.md."""

from bench.data.errors import DataError
from bench.data.karpathy import (
    KarpathyPairs,
    KarpathySplit,
    collate_raw,
    iter_raw_caption_batches,
    iter_raw_image_batches,
)
from bench.data.precomp import (
    DATASETS,
    PrecompDataset,
    PrecompSplit,
    collate_pairs,
    iter_caption_batches,
    iter_image_batches,
    precomp_problems,
    vocab_path,
)
from bench.data.vocab import Vocabulary, build_vocab, load_vocab, save_vocab, tokenize

__all__ = [
    "DATASETS", "DataError", "KarpathyPairs", "KarpathySplit", "PrecompDataset", "PrecompSplit",
    "Vocabulary", "build_vocab", "collate_pairs", "collate_raw", "iter_caption_batches", "iter_image_batches",
    "iter_raw_caption_batches", "iter_raw_image_batches", "load_vocab", "precomp_problems", "save_vocab", "tokenize",
    "vocab_path",
]
