"""Where a cell's data lies: the one definition of the files a (resolved) cell reads.

``bench.data.open`` opens these files to train and evaluate; ``bench.inputs`` checks them before
anything is submitted or trained. Region matchers read SCAN precomp splits and a vocabulary; pixel
matchers read a Karpathy caption file and an image folder::

    <data_root>/<dataset>/{split}_{ims.npy,caps.txt,ids.txt}     splits: train, dev, the protocols' test splits
    <vocab_root>/<dataset>_vocab.json
    <data_root>/karpathy/dataset_{f30k,coco}.json                (or the dataset's `karpathy_json`)
    <data_root>/images/[<filepath>/]<filename>                   (or the dataset's `image_root`)

Reading a split's shape (:func:`npy_header`, :func:`split_shape`) touches only the ``.npy`` header and
counts caption lines: milliseconds even for COCO's 33 GB of training features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.spec import Cell, Dataset
from bench.values import expand_path

SPLIT_FILES = ("ims.npy", "caps.txt", "ids.txt")
#: Karpathy's caption file of each dataset, under ``<data_root>/karpathy/`` unless the dataset names one.
KARPATHY_JSON = {"f30k_precomp": "dataset_f30k.json", "coco_precomp": "dataset_coco.json"}
#: A precomp split's name in Karpathy's files (``dev`` is ``val``; COCO's 5K ``testall`` is its ``test``).
KARPATHY_SPLIT = {"dev": "val", "testall": "test"}


def protocols_read(cell: Cell) -> list[str]:
    """The protocols a resolved cell evaluates: its own, or every protocol of its dataset when it names none."""
    from bench.protocols import protocols_for

    return list(cell.eval.protocols or [p.name for p in protocols_for(cell.dataset.name)])


def splits_read(cell: Cell) -> list[str]:
    """The splits a resolved cell reads: ``train``, ``dev`` and the test splits of its protocols, in that order."""
    from bench.protocols import PROTOCOLS

    return ["train", "dev", *sorted({PROTOCOLS[p].split for p in protocols_read(cell)})]


def split_files(data_root: str | Path, dataset: str, split: str) -> dict[str, Path]:
    """``{"ims", "caps", "ids"}``: the three files of one precomp split."""
    folder = Path(data_root) / dataset
    return {name.split(".")[0]: folder / f"{split}_{name}" for name in SPLIT_FILES}


def vocab_file(cell: Cell) -> Path:
    """The SCAN vocabulary a resolved region cell reads."""
    return Path(cell.dataset.vocab_root) / f"{cell.dataset.name}_vocab.json"


def karpathy_json(ds: Dataset) -> Path:
    """The Karpathy caption file a resolved pixel cell's dataset reads."""
    if ds.karpathy_json:
        return Path(expand_path(ds.karpathy_json))
    return Path(ds.data_root) / "karpathy" / KARPATHY_JSON.get(ds.name, f"dataset_{ds.name}.json")


def image_root(ds: Dataset) -> Path:
    """The image folder a resolved pixel cell's dataset reads."""
    return Path(expand_path(ds.image_root) or Path(ds.data_root) / "images")


def karpathy_split(split: str) -> str:
    """A precomp split's name in a Karpathy caption file."""
    return KARPATHY_SPLIT.get(split, split)


@dataclass(frozen=True)
class SplitShape:
    """What a precomp split holds, read from the ``.npy`` header and the caption file's line count."""

    images: int
    regions: int | None
    dim: int | None
    dtype: str
    captions: int
    ndim: int


def npy_header(path: str | Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of a ``.npy`` file, memory-mapped (no data is read). ValueError for a file that is not
    one ``.npy`` array (an ``.npz`` archive, a pickle, a torn file)."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, EOFError) as e:
        raise ValueError(f"not a readable .npy array ({e})") from e
    if not isinstance(array, np.ndarray):  # np.load opens a zip (.npz) whatever its name
        if hasattr(array, "close"):
            array.close()
        raise ValueError("an .npz archive, not one .npy array")
    shape, dtype = tuple(int(n) for n in array.shape), array.dtype
    del array
    return shape, dtype


def count_lines(path: str | Path) -> int:
    """Caption lines of a text file as ``bench.data.precomp`` reads it (split on ``\\n``, blank lines at the
    end dropped)."""
    lines = Path(path).read_bytes().split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return len(lines)


def split_shape(data_root: str | Path, dataset: str, split: str) -> SplitShape:
    """The shape of one precomp split (images, regions × dim, dtype, captions) from its headers."""
    files = split_files(data_root, dataset, split)
    shape, dtype = npy_header(files["ims"])
    return SplitShape(images=shape[0] if shape else 0, regions=shape[1] if len(shape) == 3 else None,
                      dim=shape[2] if len(shape) == 3 else None, dtype=str(dtype),
                      captions=count_lines(files["caps"]), ndim=len(shape))
