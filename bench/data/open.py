"""A cell's data, opened: its splits and how to iterate them (training pairs, evaluation batches).

Read by the trainer and by ``python -m bench evaluate``; the reader modules are imported only for the
kind of data a cell reads (``regions``: SCAN precomp features; ``pixels``: Karpathy JSON + images).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import models
from bench.spec import Cell, Dataset


@dataclass
class Data:
    """The splits of one cell and how to iterate them."""

    kind: str  # "regions" | "pixels"
    train: object
    dev: object
    vocab: object = None
    test_splits: dict = field(default_factory=dict)  # split name -> split object
    build_kwargs: dict = field(default_factory=dict)  # what the matcher needs from the data

    def train_dataset(self, augment: dict, seed: int, one_caption_per_image: bool):
        if self.kind == "regions":
            from bench.data.precomp import PrecompDataset

            return PrecompDataset(self.train, self.vocab, train=True, region_drop=augment.get("region_drop", 0.0),
                                  token_aug=augment.get("token_aug", False), seed=seed,
                                  token_aug_ends=augment.get("token_aug_ends", False))
        from bench.data.karpathy import KarpathyPairs

        return KarpathyPairs(self.train, one_caption_per_image=one_caption_per_image, seed=seed)

    def collate(self):
        if self.kind == "regions":
            from bench.data.precomp import collate_pairs

            return collate_pairs
        from bench.data.karpathy import collate_raw

        return collate_raw

    def eval_batches(self, split, batch_size: int, n_images: int | None = None):
        """(image batches, caption batches) iterables: every image once, every caption once."""
        if self.kind == "regions":
            from bench.data.precomp import iter_caption_batches, iter_image_batches

            return (iter_image_batches(split, batch_size, n_images=n_images),
                    iter_caption_batches(split, self.vocab, batch_size, n_images=n_images))
        from bench.data.karpathy import iter_raw_caption_batches, iter_raw_image_batches

        return (iter_raw_image_batches(split, batch_size, n_images=n_images),
                iter_raw_caption_batches(split, batch_size, n_images=n_images))


def open_data(cell: Cell | dict, input_kind: str) -> Data:
    """The splits a (resolved) cell reads: training, dev, and the test splits of its protocols, each checked
    (files, shapes, caption counts) and checked against each other (regions and feature size of the
    training split; whole folds for COCO 1K) before anything trains: DataError naming the file."""
    from bench.data import layout

    cell = cell if isinstance(cell, Cell) else Cell.from_dict(cell)
    ds = cell.dataset
    cpi = ds.captions_per_image
    protocols = layout.protocols_read(cell)
    test_split_names = layout.splits_read(cell)[2:]  # after train and dev
    if input_kind == "regions":
        from bench.data.precomp import PrecompSplit, shape_problems, vocab_path
        from bench.data.vocab import MASK, check_coverage, load_vocab

        def split(name):
            return PrecompSplit(ds.data_root, ds.name, name, captions_per_image=cpi)

        vocab = load_vocab(vocab_path(ds.vocab_root, ds.name))
        words = [vocab.idx2word[i] for i in range(4, len(vocab)) if vocab.idx2word[i] != MASK]
        if cell.schedule.caption_aug or models.matcher_attribute(cell.matcher.name, "mask_word", False):
            vocab = vocab.with_mask()  # one more embedding row, learned; the file on disk is unchanged
        train = split("train")
        check_coverage(vocab, train.captions, vocab_path(ds.vocab_root, ds.name), train.captions_path)
        dev, tests = split("dev"), {s: split(s) for s in test_split_names}
        _stop_at_first(shape_problems(train.shape, [dev.shape, *(t.shape for t in tests.values())])
                       + _fold_problems(protocols, tests))
        return Data("regions", train, dev, vocab, tests,
                    {"vocab_size": len(vocab), "img_dim": int(train.region_shape[1]),
                     "num_regions": int(train.region_shape[0]), "vocab_words": words})

    def ksplit(name):
        return karpathy_split(ds, name)

    train = ksplit("train")
    vocab_words = sorted({w for c in train.captions for w in c.lower().split()})
    tests = {s: ksplit(s) for s in test_split_names}
    _stop_at_first(_fold_problems(protocols, tests))
    return Data("pixels", train, ksplit("dev"), None, tests, {"vocab_words": vocab_words})


def karpathy_split(ds: Dataset, name: str):
    """Split ``name`` of a (resolved) dataset read by the pixel matchers: its Karpathy JSON and images, where
    ``bench.data.layout`` says (``dev`` and ``testall`` are the JSON's ``val`` and ``test``)."""
    from bench.data import layout
    from bench.data.karpathy import KarpathySplit

    return KarpathySplit(layout.karpathy_json(ds), layout.image_root(ds), layout.karpathy_split(name),
                         captions_per_image=ds.captions_per_image)


def _fold_problems(protocols: list[str], tests: dict) -> list[str]:
    """Each folded protocol's split holds whole images in equal folds (COCO 1K: 5 folds of testall)."""
    from bench.data.precomp import fold_problems
    from bench.protocols import PROTOCOLS

    out = []
    for name in protocols:
        split = tests[PROTOCOLS[name].split]
        where = getattr(split, "path", None) or f"{split.json_path} (split {split.split})"
        out += fold_problems(where, split.n_images, name, PROTOCOLS[name].n_folds)
    return out


def _stop_at_first(problems: list[str]) -> None:
    """Every split a cell reads is checked when its data is opened, before the first step: the first
    problem found stops the cell (``bench.data.precomp.precomp_problems`` lists them all, from headers)."""
    if problems:
        from bench.data.errors import DataError

        raise DataError(problems[0])
