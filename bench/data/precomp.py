"""Readers for the SCAN "precomp" layout of precomputed region features.

    DATA/{f30k_precomp,coco_precomp}/{split}_ims.npy   float [N_images, R, D] (R=36, D=2048 for BUTD)
    DATA/{f30k_precomp,coco_precomp}/{split}_caps.txt  one caption per line; caption c <-> image c // 5
    DATA/{f30k_precomp,coco_precomp}/{split}_ids.txt   source image ids
    VOCAB/{f30k,coco}_precomp_vocab.json

Features are memory-mapped, never loaded whole (COCO train is 33 GB): items and evaluation batches
read only the rows they need, and NaN/inf checks run on what is read.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from bench.data.errors import DataError
from bench.data.vocab import MASK, Vocabulary
from bench.values import shown

DATASETS: dict[str, tuple[str, ...]] = {
    "f30k_precomp": ("train", "dev", "test"),
    "coco_precomp": ("train", "dev", "test", "testall"),
}
SPLIT_FILES = ("ims.npy", "caps.txt", "ids.txt")
DOWNLOAD_HINT = (
    "download the SCAN precomputed features (data/{f30k,coco}_precomp) or generate the embedded "
    "dataset with `python -m bench.data.synth --preset demo --out data/synth-demo`"
)


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise DataError(f"unknown precomp dataset {dataset!r}; expected one of {sorted(DATASETS)}")


def vocab_path(vocab_root: str | Path, dataset: str) -> Path:
    """``VOCAB/{f30k,coco}_precomp_vocab.json`` for ``dataset`` in :data:`DATASETS`."""
    _check_dataset(dataset)
    return Path(vocab_root) / f"{dataset}_vocab.json"


def _read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (a leading byte-order mark removed), split on ``\n`` only, a
    trailing ``\r`` stripped (Windows line ends). Not ``str.splitlines``: it also breaks on ``\x0b``,
    ``\x0c``, ``\x1c``–``\x1e``, ``\x85``, U+2028 and U+2029, which can sit inside a caption and
    would shift every later caption onto the wrong image. Bytes that are not UTF-8 raise
    :class:`DataError` naming the file, line and column."""
    data = path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line_no, line_start = data.count(b"\n", 0, e.start) + 1, data.rfind(b"\n", 0, e.start) + 1
        raise DataError(
            f"{path}:{line_no}: not UTF-8 (byte {data[e.start]:#04x} at column "
            f"{e.start - line_start + 1}: {e.reason}); re-save the file as UTF-8, e.g. "
            f"`iconv -f latin1 -t utf-8 {path.name} > fixed.txt` for a Latin-1 file"
        ) from None
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    while lines and not lines[-1].strip():  # tolerate trailing blank lines at the end of the file
        lines.pop()
    return lines


def check_finite(x: np.ndarray, path: Path, first_index: int) -> None:
    """Raise :class:`DataError` when a read block of features holds NaN or inf."""
    if not np.isfinite(x).all():
        bad = first_index + int(np.argwhere(~np.isfinite(x).reshape(len(x), -1).all(axis=1))[0, 0])
        raise DataError(f"{path}: image {bad} has NaN/inf region features; regenerate or re-download the file")


class SplitShape(NamedTuple):
    """What a split's files say about it without reading its features: the ``*_ims.npy`` path, its image
    count and region shape (from the ``.npy`` header), and its caption count (lines)."""

    path: Path
    n_images: int
    regions: int
    dim: int
    n_captions: int | None = None
    captions_path: Path | None = None


def shape_problems(train: SplitShape, others: Sequence[SplitShape]) -> list[str]:
    """Every other split a cell reads (dev, test, testall) has the training split's regions per image R and
    feature size D: a model is built for the training split's [R, D] (SGRAF's region pooling has R fixed,
    every matcher's first layer takes D), so another shape at evaluation either fails after the whole
    schedule or, for matchers that pool any number of regions, evaluates silently on other features."""
    out = []
    for split in others:
        if split.dim != train.dim:
            out.append(f"{split.path}: features of size {split.dim} per region, but the training split's "
                       f"({train.path}) are {train.dim}; extract every split with the same feature extractor")
        elif split.regions != train.regions:
            out.append(f"{split.path}: {split.regions} regions per image, but the training split's ({train.path}) "
                       f"has {train.regions}; extract every split with the same detector and region count "
                       "(SCAN precomp: 36)")
    return out


def fold_problems(split_path: Path, n_images: int, protocol: str, n_folds: int) -> list[str]:
    """A folded protocol (COCO 1K: 5 folds of ``testall``) needs whole images in equal folds."""
    if n_folds > 1 and (n_images % n_folds or n_images < n_folds):
        return [f"{split_path}: {n_images} images cannot be cut into the {n_folds} equal folds of protocol "
                f"{protocol} ({n_images % n_folds} image(s) left over); use the whole split (COCO testall: "
                f"5,000 images), or leave {protocol} out of the dataset's protocols"]
    return []


def split_shape(data_root: str | Path, dataset: str, split: str, captions_per_image: int | None = None
                ) -> SplitShape:
    """:class:`SplitShape` of one split, reading only the ``.npy`` header (and, with
    ``captions_per_image``, the caption lines); DataError for a missing or malformed file or a caption
    count that is not ``captions_per_image`` per image."""
    _check_dataset(dataset)
    if split not in DATASETS[dataset]:
        raise DataError(f"{dataset} has no split {split!r}; expected one of {DATASETS[dataset]}")
    folder = Path(data_root) / dataset
    paths = [folder / f"{split}_{f}" for f in SPLIT_FILES]
    for path in paths:
        if not path.is_file():
            raise DataError(f"missing file {path}; {DOWNLOAD_HINT}")
    images = open_features(paths[0])
    n_images, (regions, dim) = int(images.shape[0]), (int(images.shape[1]), int(images.shape[2]))
    if captions_per_image is None:
        return SplitShape(paths[0], n_images, regions, dim)
    n_captions = len(_read_lines(paths[1]))
    _check_caption_count(paths[1], n_captions, paths[0], n_images, captions_per_image)
    _check_id_count(paths[2], len(_read_lines(paths[2])), n_images, n_captions)
    return SplitShape(paths[0], n_images, regions, dim, n_captions, paths[1])


def precomp_problems(data_root: str | Path, dataset: str, splits: Sequence[str] = ("train", "dev"),
                     protocols: Sequence[str] = (), captions_per_image: int = 5) -> list[str]:
    """Every problem of the SCAN precomp splits a cell reads (``splits``, plus the test splits of
    ``protocols``), found from the ``.npy`` headers and the caption line counts alone (no features
    read): missing or malformed files, caption counts, regions and feature size unlike the training
    split's, folds of a folded protocol. ``open_data`` finds the same before the first step; a plan-time
    check (before any job is submitted) can call this. Empty: nothing wrong."""
    from bench.protocols import PROTOCOLS

    wanted = list(dict.fromkeys([*splits, *(PROTOCOLS[p].split for p in protocols if p in PROTOCOLS)]))
    shapes, problems = {}, []
    for split in wanted:
        try:
            shapes[split] = split_shape(data_root, dataset, split, captions_per_image)
        except DataError as e:
            problems.append(str(e))
    if "train" in shapes:
        problems += shape_problems(shapes["train"], [shapes[s] for s in wanted if s != "train" and s in shapes])
    for name in protocols:
        protocol = PROTOCOLS.get(name)
        if protocol is not None and protocol.split in shapes:
            problems += fold_problems(shapes[protocol.split].path, shapes[protocol.split].n_images, name,
                                      protocol.n_folds)
    return problems


def open_features(path: Path) -> np.ndarray:
    """The ``*_ims.npy`` at ``path`` as a read-only memory map (only its header is read now); DataError for
    an empty file, an unreadable one, an ``.npz`` archive, a shape that is not [N, R, D] or a dtype that is
    not float, or no images."""
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes; an interrupted download or copy?); "
                        "re-download or regenerate it")
    try:
        images = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npy array ({e}); re-download or regenerate it") from e
    if not isinstance(images, np.ndarray):  # np.load opens a zip (.npz) whatever its name
        names = shown(list(getattr(images, "files", [])))  # a torch checkpoint holds hundreds
        if hasattr(images, "close"):
            images.close()
        raise DataError(f"{path}: a zip archive (an .npz or a torch checkpoint; members: {names}), not one .npy array; save the "
                        "features with numpy.save(path, array) (or extract the array into this file)")
    if images.ndim != 3:
        raise DataError(f"{path}: expected region features [N_images, R, D], got shape {images.shape}; "
                        "re-extract the features (one [R, D] block per image)")
    if not np.issubdtype(images.dtype, np.floating):
        raise DataError(f"{path}: features must be float (float32), got {images.dtype}; re-save as float32")
    if images.shape[0] == 0:
        raise DataError(f"{path}: the split is empty (0 images); re-download or regenerate it")
    return images


def _check_id_count(ids_path: Path, n_ids: int, n_images: int, n_captions: int) -> None:
    if n_ids not in (n_images, n_captions):
        raise DataError(f"{ids_path}: {n_ids} ids, expected one per image ({n_images}) or one per caption "
                        f"({n_captions}); the file belongs to another split or is truncated")


def _check_caption_count(captions_path: Path, n_captions: int, images_path: Path, n_images: int,
                         captions_per_image: int) -> None:
    if n_captions != captions_per_image * n_images:
        raise DataError(
            f"{captions_path}: {n_captions} captions for {n_images} images in {images_path}; "
            f"expected {captions_per_image} consecutive captions per image "
            f"({captions_per_image * n_images} lines) — the two files belong to different splits or "
            "one is truncated"
        )


class PrecompSplit:
    """One split of a precomp dataset: memory-mapped features, captions and ids, validated.

    Attributes: ``images`` (np.memmap [N, R, D]), ``captions`` (list[str], ``captions_per_image``
    per image, consecutive), ``ids`` (list[str], per image or per caption), ``n_images``,
    ``n_captions``, ``region_shape`` (R, D), ``path`` (the ``*_ims.npy`` file).
    """

    def __init__(self, data_root: str | Path, dataset: str, split: str, captions_per_image: int = 5):
        _check_dataset(dataset)
        if split not in DATASETS[dataset]:
            raise DataError(f"{dataset} has no split {split!r}; expected one of {DATASETS[dataset]}")
        self.dataset, self.split, self.captions_per_image = dataset, split, captions_per_image
        folder = Path(data_root) / dataset
        self.path = folder / f"{split}_ims.npy"
        self.captions_path = folder / f"{split}_caps.txt"
        self.ids_path = folder / f"{split}_ids.txt"
        for path in (self.path, self.captions_path, self.ids_path):
            if not path.is_file():
                raise DataError(f"missing file {path}; {DOWNLOAD_HINT}")
        self._images: np.ndarray | None = None
        images = self.images
        self.n_images = int(images.shape[0])
        self.region_shape = (int(images.shape[1]), int(images.shape[2]))
        self.captions = _read_lines(self.captions_path)
        self.n_captions = len(self.captions)
        _check_caption_count(self.captions_path, self.n_captions, self.path, self.n_images, captions_per_image)
        for line_no, caption in enumerate(self.captions, 1):
            if not caption.strip():
                raise DataError(f"{self.captions_path}:{line_no}: empty caption line; every line needs a caption")
        self.ids = _read_lines(self.ids_path)
        _check_id_count(self.ids_path, len(self.ids), self.n_images, self.n_captions)

    @property
    def images(self) -> np.ndarray:
        """The features as a read-only memory map (reopened lazily, e.g. in DataLoader workers)."""
        if self._images is None:
            self._images = open_features(self.path)
        return self._images

    @property
    def shape(self) -> SplitShape:
        return SplitShape(self.path, self.n_images, *self.region_shape, self.n_captions, self.captions_path)

    def __getstate__(self) -> dict:
        # never pickle the memmap (pickling would copy the whole array); workers reopen it
        return {**self.__dict__, "_images": None}

    @property
    def image_ids(self) -> list[str]:
        return self.ids if len(self.ids) == self.n_images else self.ids[:: self.captions_per_image]

    def read_images(self, start: int, stop: int) -> np.ndarray:
        """float32 copy of images [start, stop) — one contiguous slice of the memmap, checked finite."""
        block = np.array(self.images[start:stop], dtype=np.float32)  # copy: writable, off the map
        check_finite(block, self.path, start)
        return block

    def _limit(self, n_images: int | None) -> int:
        if n_images is None:
            return self.n_images
        if not 0 < n_images <= self.n_images:
            raise DataError(f"n_images={n_images} outside 1..{self.n_images} for {self.path}")
        return n_images

    def __repr__(self) -> str:
        return (
            f"PrecompSplit({self.dataset}/{self.split}: {self.n_images} images x {self.region_shape}, "
            f"{self.n_captions} captions)"
        )


# ----------------------------------------------------------------------------------------------
# Training / validation pairs


def augment_caption(ids: np.ndarray, rng: np.random.Generator, mask_id: int, vocab_size: int, p: float = 0.2,
                    touch_ends: bool = True) -> np.ndarray:
    """Caption-token augmentation of the reference programs (VSE∞ and DBL's OAS program).

    Token by token, one uniform draw ``u`` each: a token with ``u < p`` is masked to ``mask_id``
    when ``u / p < 0.5``, replaced by an id drawn uniformly from the whole vocabulary
    ``0 .. vocab_size - 1`` (one more draw, right after ``u``) when ``u / p < 0.6``, and deleted
    otherwise. ``touch_ends=True`` (VSE∞) lets this hit ``<start>``/``<end>`` too; with
    ``touch_ends=False`` (DBL) they still consume their draw but are always kept. Where every
    token would be deleted (the reference then yields an empty caption), the caption is kept as it is.
    """
    last = len(ids) - 1
    out = []
    for i, token in enumerate(ids.tolist()):
        u = rng.random()
        if u >= p or (not touch_ends and i in (0, last)):
            out.append(token)
            continue
        v = u / p
        if v < 0.5:
            out.append(mask_id)
        elif v < 0.6:
            out.append(int(rng.integers(vocab_size)))
        # else: deleted
    if not out:
        return np.array(ids, dtype=np.int64)
    return np.asarray(out, dtype=np.int64)


def drop_regions(image: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """Keep each region with probability 1 - p (at least one region is always kept)."""
    keep = rng.random(len(image)) >= p
    if not keep.any():
        keep[rng.integers(len(image))] = True
    return image[keep]


class PrecompDataset(Dataset):
    """One item per caption: caption c with image c // captions_per_image.

    With ``train=True`` the augmentations apply (``region_drop``; ``token_aug``, see
    :func:`augment_caption`, which needs a vocabulary with ``<mask>``: ``vocab.with_mask()``, and
    ``token_aug_ends`` says whether it may touch ``<start>``/``<end>``, as VSE∞'s does); their
    randomness is ``np.random.default_rng([seed, epoch, index])``, so item ``index`` of epoch
    ``epoch`` is the same in every run and after a resume (call :meth:`set_epoch` each epoch).
    ``n_images`` restricts the split to its first images (validation uses the first 1,000 of dev).
    """

    def __init__(self, split: PrecompSplit, vocab: Vocabulary, train: bool = False, region_drop: float = 0.0,
                 token_aug: bool = False, n_images: int | None = None, seed: int = 0, token_aug_ends: bool = True):
        if not 0.0 <= region_drop < 1.0:
            raise ValueError(f"region_drop={region_drop} must be in [0, 1)")
        if token_aug and MASK not in vocab:
            raise ValueError(f"token_aug masks words to {MASK}, which this vocabulary ({len(vocab)} words) lacks: "
                             "pass vocab.with_mask() (the word is added in memory, the file is unchanged)")
        self.split, self.vocab = split, vocab
        self.token_aug_ends = token_aug_ends
        self.train, self.region_drop, self.token_aug, self.seed = train, region_drop, token_aug, seed
        self.n_images = split._limit(n_images)
        self.n_captions = self.n_images * split.captions_per_image
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n_captions

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.n_captions:
            raise IndexError(f"caption index {index} out of range 0..{self.n_captions - 1}")
        image_index = index // self.split.captions_per_image
        image = self.split.read_images(image_index, image_index + 1)[0]
        caption = np.asarray(self.vocab.encode(self.split.captions[index]), dtype=np.int64)
        if self.train and (self.region_drop > 0 or self.token_aug):
            rng = np.random.default_rng([self.seed, self.epoch, index])
            if self.region_drop > 0:
                image = drop_regions(image, rng, self.region_drop)
            if self.token_aug:
                caption = augment_caption(caption, rng, self.vocab.word2idx[MASK], len(self.vocab),
                                          touch_ends=self.token_aug_ends)
        return {"image": image, "caption": caption, "image_index": image_index, "caption_index": index,
                "raw_caption": self.split.captions[index]}


def pad_regions(images: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack [r_i, D] arrays into float32 [B, max r, D] (zero padding) and lengths int64 [B]."""
    lengths = torch.tensor([len(x) for x in images], dtype=torch.int64)
    out = torch.zeros(len(images), int(lengths.max()), images[0].shape[-1], dtype=torch.float32)
    for i, x in enumerate(images):
        out[i, : len(x)] = torch.from_numpy(np.asarray(x, dtype=np.float32))
    return out, lengths


def pad_captions(captions: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack id sequences into int64 [B, max L] (0 = <pad>) and lengths int64 [B]."""
    lengths = torch.tensor([len(c) for c in captions], dtype=torch.int64)
    out = torch.zeros(len(captions), int(lengths.max()), dtype=torch.int64)
    for i, c in enumerate(captions):
        out[i, : len(c)] = torch.as_tensor(np.asarray(c, dtype=np.int64))
    return out, lengths


def collate_pairs(items: Sequence[dict]) -> dict:
    """Batch of matched pairs (row i of ``images`` matches row i of ``captions``)."""
    images, image_lengths = pad_regions([it["image"] for it in items])
    captions, caption_lengths = pad_captions([it["caption"] for it in items])
    return {
        "images": images,
        "image_lengths": image_lengths,
        "captions": captions,
        "caption_lengths": caption_lengths,
        "image_index": torch.tensor([it["image_index"] for it in items], dtype=torch.int64),
        "caption_index": torch.tensor([it["caption_index"] for it in items], dtype=torch.int64),
        "raw_captions": [it["raw_caption"] for it in items],  # for text towers with their own tokenizer (BERT)
    }


# ----------------------------------------------------------------------------------------------
# Evaluation: images and captions iterated separately, each image once.


def iter_image_batches(split: PrecompSplit, batch_size: int, n_images: int | None = None) -> Iterator[dict]:
    """Image-only batches (``images``, ``image_lengths``, ``image_index``) over the first
    ``n_images`` images, each read as one contiguous slice of the memmap."""
    n = split._limit(n_images)
    n_regions = split.region_shape[0]
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        yield {
            "images": torch.from_numpy(split.read_images(start, stop)),
            "image_lengths": torch.full((stop - start,), n_regions, dtype=torch.int64),
            "image_index": torch.arange(start, stop, dtype=torch.int64),
        }


def iter_caption_batches(split: PrecompSplit, vocab: Vocabulary, batch_size: int,
                         n_images: int | None = None) -> Iterator[dict]:
    """Caption-only batches (``captions``, ``caption_lengths``, ``caption_index``) over the captions
    of the first ``n_images`` images."""
    n = split._limit(n_images) * split.captions_per_image
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        captions, lengths = pad_captions([vocab.encode(c) for c in split.captions[start:stop]])
        yield {
            "captions": captions,
            "caption_lengths": lengths,
            "caption_index": torch.arange(start, stop, dtype=torch.int64),
            "raw_captions": list(split.captions[start:stop]),
        }


__all__ = [
    "DATASETS", "PrecompDataset", "PrecompSplit", "SplitShape", "collate_pairs", "fold_problems",
    "iter_caption_batches", "iter_image_batches", "precomp_problems", "shape_problems", "split_shape", "vocab_path",
]
