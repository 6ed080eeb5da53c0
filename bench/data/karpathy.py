"""Readers for Karpathy-style caption JSON plus an image folder, for pixel matchers (CLIP-style).

    {"images": [{"filename": "1000092795.jpg", "split": "train" | "val" | "test" | "restval",
                 "filepath": "val2014" (COCO only, optional),
                 "sentences": [{"raw": "Two young guys ...", "tokens": [...]}, ...]}, ...]}

The precomp split names map to Karpathy's: ``dev`` is ``val``, ``train`` includes ``restval``.
Images are ``image_root / [filepath /] filename``. Batches carry PIL images and raw strings; the
matcher's ``prepare`` runs its own processor/tokenizer on them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from bench.data.errors import DataError
from bench.data.layout import SPLIT_ALIASES


class KarpathySplit:
    """Images and captions of one split, in file order; ``captions_per_image`` consecutive captions
    per image (caption c <-> image c // captions_per_image), extra captions dropped.

    Attributes: ``filenames`` (paths relative to ``image_root``), ``paths``, ``captions``,
    ``n_images``, ``n_captions``.
    """

    def __init__(self, json_path: str | Path, image_root: str | Path, split: str, captions_per_image: int = 5):
        self.json_path, self.image_root = Path(json_path), Path(image_root)
        self.split, self.captions_per_image = split, captions_per_image
        if split not in SPLIT_ALIASES:
            raise DataError(f"unknown split {split!r} for {self.json_path}; expected one of {sorted(SPLIT_ALIASES)}")
        if not self.json_path.is_file():
            raise DataError(f"missing caption file {self.json_path}; download Karpathy's dataset_*.json "
                            "or generate the embedded dataset with `python -m bench.data.synth`")
        if not self.image_root.is_dir():
            raise DataError(f"image folder {self.image_root} does not exist (for {self.json_path}); "
                            "pass the folder holding the images")
        try:
            entries = json.loads(self.json_path.read_text(encoding="utf-8"))["images"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise DataError(f"{self.json_path}: expected Karpathy JSON {{'images': [...]}} ({e!r})") from e
        names = SPLIT_ALIASES[split]
        self.filenames: list[str] = []
        self.captions: list[str] = []
        for entry in entries:
            if entry.get("split") not in names:
                continue
            try:
                filename = str(Path(entry.get("filepath", "")) / entry["filename"])
                sentences = [s["raw"].strip() for s in entry["sentences"]]
            except (KeyError, TypeError) as e:
                raise DataError(f"{self.json_path}: image entry {entry!r:.80} lacks 'filename' or "
                                f"'sentences'[i]['raw'] ({e!r})") from e
            if len(sentences) < captions_per_image or not all(sentences[:captions_per_image]):
                raise DataError(f"{self.json_path}: image {filename} has {len(sentences)} captions "
                                f"(non-empty), need {captions_per_image}; fix the entry or lower captions_per_image")
            self.filenames.append(filename)
            self.captions.extend(sentences[:captions_per_image])
        self.n_images, self.n_captions = len(self.filenames), len(self.captions)
        if self.n_images == 0:
            raise DataError(f"{self.json_path}: no images with split in {names}")
        self.paths = [self.image_root / f for f in self.filenames]
        missing = [str(p) for p in self.paths if not p.is_file()]
        if missing:
            raise DataError(f"{len(missing)} image file(s) listed in {self.json_path} are missing under "
                            f"{self.image_root}, first: {missing[:3]}; point image_root at the image folder")

    def load_image(self, index: int) -> Image.Image:
        with Image.open(self.paths[index]) as im:
            return im.convert("RGB")

    def _limit(self, n_images: int | None) -> int:
        if n_images is None:
            return self.n_images
        if not 0 < n_images <= self.n_images:
            raise DataError(f"n_images={n_images} outside 1..{self.n_images} for {self.json_path}")
        return n_images

    def __repr__(self) -> str:
        return f"KarpathySplit({self.json_path.name}/{self.split}: {self.n_images} images, {self.n_captions} captions)"


class KarpathyPairs(Dataset):
    """(PIL image, caption) pairs of a split.

    By default one item per caption. With ``one_caption_per_image=True`` one item per image, whose
    caption is drawn per epoch from ``np.random.default_rng([seed, epoch])`` (call
    :meth:`set_epoch`): a batch then never holds two captions of one image (no false negatives
    for InfoNCE), and every caption is used across epochs.
    """

    def __init__(self, split: KarpathySplit, n_images: int | None = None, one_caption_per_image: bool = False,
                 seed: int = 0):
        self.split, self.one_caption_per_image, self.seed = split, one_caption_per_image, seed
        self.n_images = split._limit(n_images)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        cpi = self.split.captions_per_image
        if self.one_caption_per_image:
            choice = np.random.default_rng([self.seed, self.epoch]).integers(cpi, size=self.n_images)
            self.caption_of_item = np.arange(self.n_images) * cpi + choice
        else:
            self.caption_of_item = np.arange(self.n_images * cpi)

    def __len__(self) -> int:
        return len(self.caption_of_item)

    def __getitem__(self, index: int) -> dict:
        caption_index = int(self.caption_of_item[index])
        image_index = caption_index // self.split.captions_per_image
        return {"image": self.split.load_image(image_index), "caption": self.split.captions[caption_index],
                "image_index": image_index, "caption_index": caption_index}


def collate_raw(items: Sequence[dict]) -> dict:
    """Batch of matched raw pairs: ``raw_images`` (PIL), ``raw_captions`` (str) and indices."""
    return {
        "raw_images": [it["image"] for it in items],
        "raw_captions": [it["caption"] for it in items],
        "image_index": torch.tensor([it["image_index"] for it in items], dtype=torch.int64),
        "caption_index": torch.tensor([it["caption_index"] for it in items], dtype=torch.int64),
    }


def iter_raw_image_batches(split: KarpathySplit, batch_size: int, n_images: int | None = None) -> Iterator[dict]:
    """Image-only batches (``raw_images``, ``image_index``), each image once."""
    n = split._limit(n_images)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        yield {"raw_images": [split.load_image(i) for i in range(start, stop)],
               "image_index": torch.arange(start, stop, dtype=torch.int64)}


def iter_raw_caption_batches(split: KarpathySplit, batch_size: int, n_images: int | None = None) -> Iterator[dict]:
    """Caption-only batches (``raw_captions``, ``caption_index``) of the first ``n_images`` images."""
    n = split._limit(n_images) * split.captions_per_image
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        yield {"raw_captions": split.captions[start:stop],
               "caption_index": torch.arange(start, stop, dtype=torch.int64)}
