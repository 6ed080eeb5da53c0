"""Where a cell's data lies: the one definition of the files a (resolved) cell reads.

``bench.data.open`` opens these files to train and evaluate; ``bench.inputs`` checks them before
anything is submitted or trained. Region matchers read SCAN precomp splits and a vocabulary; pixel
matchers read a Karpathy caption file and an image folder::

    <data_root>/<dataset>/{split}_{ims.npy,caps.txt,ids.txt}     splits: train, dev, the protocols' test splits
    <vocab_root>/<dataset>_vocab.json
    <data_root>/karpathy/dataset_{f30k,coco}.json                (or the dataset's `karpathy_json`)
    <data_root>/images/[<filepath>/]<filename>                   (or the dataset's `image_root`)

:func:`cell_inputs` lists them for one cell: what its data fingerprint covers (``bench.provenance``).
Reading a split's shape (:func:`npy_header`, :func:`split_shape`) touches only the ``.npy`` header and
counts caption lines: milliseconds even for COCO's 33 GB of training features.
"""

from __future__ import annotations

import functools
import json
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
#: The entries of a Karpathy split name (``train`` includes ``restval``).
SPLIT_ALIASES = {"train": ("train", "restval"), "dev": ("val",), "val": ("val",), "test": ("test",),
                 "restval": ("restval",)}


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
class Inputs:
    """Every input a cell reads: ``files`` (files, and folders read whole) and, for a pixel matcher, the
    ``images`` its Karpathy file lists for the splits it reads (paths relative to ``image_root``)."""

    files: tuple[Path, ...]
    image_root: Path | None = None
    images: tuple[str, ...] = ()


def cell_inputs(cell: Cell, input_kind: str) -> Inputs:
    """The inputs of a (resolved) cell whose matcher reads ``input_kind`` data (``models.input_kind``). Regions:
    the dataset's precomp folder and its vocabulary; pixels: the Karpathy caption file and the images it lists
    for the cell's splits (never the precomp folder or the vocabulary, which it does not read)."""
    if input_kind == "regions":
        return Inputs((Path(cell.dataset.data_root) / cell.dataset.name, vocab_file(cell)))
    path = karpathy_json(cell.dataset)
    names = [name for split in splits_read(cell) for name in SPLIT_ALIASES[karpathy_split(split)]]
    return Inputs((path,), image_root(cell.dataset), karpathy_images(path, tuple(dict.fromkeys(names))))


def karpathy_images(path: Path, splits: tuple[str, ...]) -> tuple[str, ...]:
    """The images (``[filepath/]filename``) a Karpathy caption file lists in ``splits``, in file order; () for a
    file that is missing or not Karpathy's (the checks before a run say what is wrong with it)."""
    try:
        st = path.stat()
    except OSError:
        return ()
    return _karpathy_images(str(path), st.st_size, st.st_mtime_ns, splits)


@functools.lru_cache(maxsize=8)
def _karpathy_images(path: str, size: int, mtime_ns: int, splits: tuple[str, ...]) -> tuple[str, ...]:
    del size, mtime_ns  # the cache key only: a new version of the file is read again
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))["images"]
        return tuple(str(Path(e.get("filepath", "")) / e["filename"]) for e in entries if e.get("split") in splits)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return ()


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
