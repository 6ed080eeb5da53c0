"""ECCV Caption and CxC metrics on the COCO 5K test split (``coco_5k``), beside Recall@K.

COCO's Recall@K counts one caption set per image as correct, yet most captions fit several images.
Two annotation sets add the missing positives for the 5,000-image test split (Karpathy's, which the
SCAN ``testall`` split is): CxC (Parekh et al., EACL 2021: human similarity ratings) and ECCV Caption
(Chun et al., ECCV 2022: machine- and human-verified positives). Both ship, keyed by COCO image and
caption ids, with the ``eccv-caption`` package of the ECCV Caption authors (PyPI, MIT; CxC under
Apache-2.0 inside it), which is what this module reads them from (``eccv_caption.Metrics``: its
``coco_ids``, the 25,000 caption ids of the split in its order, and its ``eccv_gts``, ``cxc_gts``,
``coco_gts``). The numbers follow the package's definitions (``Metrics.compute_all_metrics``), in
percent as every recall of this project:

* ECCV mAP@R: per query with R positives, the mean over r = 1..R of precision@r where rank r is a
  positive (0 elsewhere); R-Precision: precision@R; R@1: the top item is a positive. Queries: the
  1,261 images and 1,332 captions the ECCV annotators verified.
* CxC R@1/5/10: a positive in the top K. Queries: every image, and the 24,972 captions CxC rated.

A positive that is not in the split counts in R, as in the package (two ECCV caption ids lie outside
the 5K split: a perfect ranking scores mAP@R just under 100 for i2t).

How a split's rows get COCO ids (:func:`split_ids`): image ids from the split's ``*_ids.txt`` (one
per image, or one per caption: VSE∞'s ``cxc_annots`` layout), or the ``cocoid`` of the Karpathy
JSON's images; they must be the package's test images in its order (the whole 5,000, or its first n
on a smaller split, e.g. the embedded data, which reuses these ids: then only the positives inside
those n images count, and the tables say so). Caption ids from ``testall_capids.txt`` beside the ids
(or beside the Karpathy JSON): VSE∞'s COCO precomp download ships it, one COCO caption id per caption
line; each id is checked against its row's image. Without that file the caption ids are taken in the
package's order (each image's captions as the package lists them) on the embedded generator's data only
(``bench.data.synth`` writes them in that order by construction; :func:`bench.provenance.data_description`
tells its data from real data): on real data the order of an image's five caption lines cannot be
confirmed, and another order would give each caption another caption's positives, so the file is required
there. Anything else is refused with one line.

Cost: 5,000 × 25,000 scores; the ranked lists are the top ``TOP_K`` (50, enough for the largest R,
48) of each row and column by ``torch.topk`` in blocks (ties broken in a fixed random order, never
by index: an image's captions are adjacent), the metrics vectorised over queries (numpy).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.data.errors import DataError
from bench.metric_keys import ECCV_KEYS, ECCV_SIZE_KEY

#: The protocol these metrics extend (the whole COCO 5K test split).
PROTOCOL = "coco_5k"
#: The table block's header of each metric (``bench.metrics.ECCV_KEYS``, the one home of their names, in order).
LABELS = ("ECCV mAP@R i2t", "mAP@R t2i", "R-P i2t", "R-P t2i", "ECCV R@1 i2t", "R@1 t2i",
          "CxC R@1 i2t", "R@5 i2t", "R@10 i2t", "CxC R@1 t2i", "R@5 t2i", "R@10 t2i")
HEADER = dict(zip(ECCV_KEYS, LABELS, strict=True))
TOP_K = 50
SPLIT_IMAGES = 5000
CAPTIONS_PER_IMAGE = 5
TIE_SEED = 0
FIX = "set eval.eccv=false (python -m bench evaluate: --no-eccv) to evaluate without ECCV Caption and CxC"
#: The caption ids of a split: one COCO caption id per caption line (VSE∞'s COCO precomp ships it).
CAPIDS_FILE = "testall_capids.txt"
#: Where the caption ids come from on the embedded generator's data, which has no such file.
PACKAGE_ORDER = "the package's order"


class EccvError(DataError):
    """A split whose COCO ids are missing or are not the package's test split (one line: file, value, fix)."""


@dataclass(frozen=True)
class Annotations:
    """The package's test split and positives (COCO ids)."""

    image_ids: np.ndarray  # [5000] the test images in the package's order
    caption_ids: np.ndarray  # [5000, 5] each image's captions, in the package's order
    positives: dict  # {"eccv" | "cxc" | "coco": {"i2t": {image id: [caption ids]}, "t2i": {caption id: [image ids]}}}


@functools.lru_cache(maxsize=1)
def annotations() -> Annotations:
    """Read once from the installed ``eccv-caption`` package (~0.2 s)."""
    with warnings.catch_warnings():  # the package warns when the optional ujson is absent
        warnings.simplefilter("ignore")
        from eccv_caption import Metrics

        m = Metrics()
    caption_ids = np.asarray(m.coco_ids, dtype=np.int64).reshape(-1, CAPTIONS_PER_IMAGE)
    image_of = m.coco_gts["t2i"]
    image_ids = np.array([image_of[int(c)][0] for c in caption_ids[:, 0]], dtype=np.int64)
    if any(image_of[int(c)][0] != i for i, row in zip(image_ids, caption_ids) for c in row):
        raise RuntimeError("eccv_caption: its coco_ids do not list each image's 5 captions together")
    return Annotations(image_ids, caption_ids, {"eccv": m.eccv_gts, "cxc": m.cxc_gts, "coco": m.coco_gts})


@functools.lru_cache(maxsize=1)
def coco_test_image_ids() -> tuple[int, ...]:
    """The package's 5,000 test images in its order: what the embedded data's COCO test ids are."""
    return tuple(int(i) for i in annotations().image_ids)


# ----------------------------------------------------------------------------- a split's ids


@dataclass(frozen=True)
class SplitIds:
    """COCO ids of a split's rows (images) and columns (captions), and where the caption ids came from."""

    image_ids: np.ndarray  # [N]
    caption_ids: np.ndarray  # [5N]
    caption_source: str  # "<file>" or PACKAGE_ORDER (the generator's data)

    @property
    def n_images(self) -> int:
        return len(self.image_ids)


def _as_ints(values, where: str) -> np.ndarray:
    try:
        return np.array([int(str(v).strip()) for v in values], dtype=np.int64)
    except ValueError:
        bad = next(v for v in values if not str(v).strip().lstrip("-").isdigit())
        raise EccvError(f"{where}: {str(bad)[:40]!r}: not a COCO id (a whole number); give the COCO image ids of "
                        f"the test split, or {FIX}") from None


def _check_order(image_ids: np.ndarray, where: str) -> None:
    ref = annotations().image_ids
    n = len(image_ids)
    if n > len(ref):
        raise EccvError(f"{where}: {n} images: the COCO 5K test split has {len(ref)}; give its ids, or {FIX}")
    bad = np.flatnonzero(image_ids != ref[:n])
    if len(bad):
        i = int(bad[0])
        in_split = int(image_ids[i]) in set(ref.tolist())
        raise EccvError(
            f"{where}: image {i} has id {int(image_ids[i])}, the COCO 5K test split's image {i} is {int(ref[i])} "
            f"({'same images, another order' if in_split else 'not an image of that split'}; {len(bad)} of {n} "
            f"differ): the ECCV Caption / CxC positives would land on the wrong rows; give the SCAN testall split "
            f"(Karpathy's test order), or {FIX}")


def _is_synthetic(data_root: str | Path | None) -> bool:
    """The data root holds the embedded generator's data (its MANIFEST.json), whose captions follow the package's
    order by construction."""
    from bench.provenance import data_description

    return data_description(data_root)["kind"] == "synthetic"


def _caption_ids(path: Path, image_ids: np.ndarray, synthetic: bool, captions: str) -> tuple[np.ndarray, str]:
    """The COCO caption ids of a split's caption lines (``captions`` names them): from ``path``, else the package's
    order on the generator's data; on real data without the file :class:`EccvError` (the order is not assumed)."""
    ann = annotations()
    n = len(image_ids)
    if not path.is_file():
        if synthetic:
            return ann.caption_ids[:n].reshape(-1), PACKAGE_ORDER
        raise EccvError(f"{path}: missing: on real data the COCO caption id of each caption line is not assumed "
                        f"(another order of an image's five captions gives each caption another's ECCV Caption / "
                        f"CxC positives); add the file, one COCO caption id per caption of {captions} in its order "
                        f"(VSE∞'s COCO precomp download ships {CAPIDS_FILE}), or {FIX}")
    lines = [x for x in path.read_text(encoding="utf-8").split("\n") if x.strip()]
    ids = _as_ints(lines, str(path))
    if len(ids) != CAPTIONS_PER_IMAGE * n:
        raise EccvError(f"{path}: {len(ids)} caption ids for {n} images; expected {CAPTIONS_PER_IMAGE * n} (one per "
                        f"caption line of the split), or {FIX}")
    image_of = ann.positives["coco"]["t2i"]
    for c, cid in enumerate(ids):
        owner = (image_of.get(int(cid)) or [None])[0]
        if owner != image_ids[c // CAPTIONS_PER_IMAGE]:
            raise EccvError(f"{path}: line {c + 1}: caption id {int(cid)} belongs to image {owner}, not to image "
                            f"{int(image_ids[c // CAPTIONS_PER_IMAGE])} of row {c // CAPTIONS_PER_IMAGE}; give the "
                            f"caption ids in the split's caption order, or {FIX}")
    return ids, str(path)


def split_ids(split, data_root: str | Path | None) -> SplitIds:
    """The COCO ids of ``split`` (a ``PrecompSplit`` or ``KarpathySplit`` of the COCO 5K test split, read from
    ``data_root``), checked against the package's order; :class:`EccvError` (one line) when missing or
    different."""
    if hasattr(split, "ids_path"):  # SCAN precomp: {split}_ids.txt, one id per image or per caption
        where = str(split.ids_path)
        image_ids = _as_ints(split.image_ids, where)
        capids, captions = Path(split.ids_path).with_name(f"{split.split}_capids.txt"), split.captions_path.name
    else:  # Karpathy JSON: the images' cocoid
        where, image_ids = _karpathy_ids(split)
        capids, captions = Path(split.json_path).with_name(CAPIDS_FILE), where
    _check_order(image_ids, where)
    caption_ids, source = _caption_ids(capids, image_ids, _is_synthetic(data_root), captions)
    return SplitIds(image_ids, caption_ids, source)


def _karpathy_ids(split) -> tuple[str, np.ndarray]:
    import json

    from bench.data.karpathy import SPLIT_ALIASES

    entries = json.loads(Path(split.json_path).read_text(encoding="utf-8"))["images"]
    mine = [e for e in entries if e.get("split") in SPLIT_ALIASES[split.split]]
    missing = sum(1 for e in mine if "cocoid" not in e)
    where = f"{split.json_path} (split {split.split})"
    if missing:
        raise EccvError(f"{where}: {missing} of {len(mine)} images have no 'cocoid': ECCV Caption and CxC need "
                        f"each test image's COCO id (Karpathy's dataset_coco.json has them), or {FIX}")
    return where, _as_ints([e["cocoid"] for e in mine], where)


def precomp_ids(data_root: str | Path, dataset: str = "coco_precomp", split: str = "testall") -> SplitIds:
    """:func:`split_ids` of ``<data_root>/<dataset>/<split>_ids.txt`` without opening the features (a check
    before any training)."""
    path = Path(data_root) / dataset / f"{split}_ids.txt"
    if not path.is_file():
        raise EccvError(f"{path}: missing: ECCV Caption and CxC need the COCO image ids of the 5K test split "
                        f"(the SCAN precomp download has the file); add it, or {FIX}")
    lines = [x for x in path.read_text(encoding="utf-8").split("\n") if x.strip()]
    caps = path.with_name(f"{split}_caps.txt")
    n_caps = sum(1 for x in caps.read_text(encoding="utf-8").split("\n") if x.strip()) if caps.is_file() else None
    per_caption = n_caps is not None and len(lines) == n_caps and len(lines) % CAPTIONS_PER_IMAGE == 0
    ids = _as_ints(lines[::CAPTIONS_PER_IMAGE] if per_caption else lines, str(path))
    _check_order(ids, str(path))
    caption_ids, source = _caption_ids(path.with_name(f"{split}_capids.txt"), ids, _is_synthetic(data_root), caps.name)
    return SplitIds(ids, caption_ids, source)


# ----------------------------------------------------------------------------- ranked lists


def ranked_lists(sims, k: int = TOP_K, block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """``(i2t [N, k] caption columns, t2i [M, k] image rows)``: each image's and each caption's top ``k`` by
    score, best first (``torch.topk`` over blocks of rows / columns; ties in a fixed random order)."""
    import torch

    S = sims if isinstance(sims, torch.Tensor) else torch.from_numpy(np.asarray(sims))
    S = S.detach()
    n, m = S.shape
    gen = torch.Generator().manual_seed(TIE_SEED)
    col_perm = torch.randperm(m, generator=gen).to(S.device)
    row_perm = torch.randperm(n, generator=gen).to(S.device)
    ki, kt = min(k, m), min(k, n)
    i2t = torch.empty(n, ki, dtype=torch.int64)
    for a in range(0, n, block):  # each block's columns permuted: topk's choice among ties is then random
        idx = torch.topk(S[a:a + block][:, col_perm].float(), ki, dim=1).indices
        i2t[a:a + block] = col_perm[idx].cpu()
    t2i = torch.empty(m, kt, dtype=torch.int64)
    for a in range(0, m, block * 4):
        idx = torch.topk(S[:, a:a + block * 4][row_perm].float(), kt, dim=0).indices  # [kt, cols]
        t2i[a:a + block * 4] = row_perm[idx].T.cpu()
    return i2t.numpy(), t2i.numpy()


# ----------------------------------------------------------------------------- metrics


def _queries(gts: dict, query_ids: np.ndarray, item_ids: np.ndarray, all_items: set):
    """(query rows [Q], positive rows [P] and their query index [P], R [Q]) of the positives ``gts`` on this
    split: queries and items mapped to their positions; a positive outside the package's split counts in R
    (it can never be retrieved), one inside the package's split but outside this (smaller) split does not."""
    q_pos = {int(q): i for i, q in enumerate(query_ids)}
    i_pos = {int(x): i for i, x in enumerate(item_ids)}
    rows, pos_rows, pos_q, r = [], [], [], []
    for qid, items in gts.items():
        if int(qid) not in q_pos:
            continue
        items = set(int(x) for x in items)
        here = [i_pos[x] for x in items if x in i_pos]
        unreachable = sum(1 for x in items if x not in all_items)
        if not here and not unreachable:
            continue
        pos_q += [len(rows)] * len(here)
        pos_rows += here
        rows.append(q_pos[int(qid)])
        r.append(len(here) + unreachable)
    return (np.asarray(rows, dtype=np.int64), np.asarray(pos_rows, dtype=np.int64),
            np.asarray(pos_q, dtype=np.int64), np.asarray(r, dtype=np.int64))


def _hits(ranked: np.ndarray, rows, pos_rows, pos_q, n_items: int) -> np.ndarray:
    """[Q, k] bool: whether the j-th ranked item of query q is one of its positives."""
    top = ranked[rows]
    codes = np.arange(len(rows), dtype=np.int64)[:, None] * n_items + top
    positive = np.unique(pos_q * n_items + pos_rows)
    return np.isin(codes, positive)


def _ranking_scores(hits: np.ndarray, r: np.ndarray, complete: bool) -> dict[str, np.ndarray]:
    """Per query: mAP@R, R-Precision and whether R@1/5/10 hit (the package's definitions). ``complete``: the
    lists rank every item of the split (what lies beyond them is no positive of the split)."""
    k = hits.shape[1]
    if len(r) and r.max() > k:
        if not complete:
            raise ValueError(f"ranked lists of {k} items are shorter than the largest R ({r.max()}); rank more")
        hits = np.pad(hits, ((0, 0), (0, int(r.max()) - k)))
        k = hits.shape[1]
    ranks = np.arange(1, k + 1)
    within_r = ranks[None, :] <= r[:, None]
    precision_at = np.cumsum(hits, axis=1) / ranks[None, :]
    return {
        "map_at_r": np.where(hits & within_r, precision_at, 0.0).sum(1) / np.maximum(r, 1),
        "rprecision": (hits & within_r).sum(1) / np.maximum(r, 1),
        **{f"r{kk}": hits[:, :kk].any(1) for kk in (1, 5, 10)},
    }


def metrics_from_ranked(i2t: np.ndarray, t2i: np.ndarray, ids: SplitIds) -> dict[str, float]:
    """ECCV Caption and CxC metrics (percent; ``bench.metrics.ECCV_KEYS``, then ``ECCV_SIZE_KEY``) of ranked
    lists (``ranked_lists``' layout) on a split with ``ids``."""
    ann = annotations()
    all_images, all_captions = set(ann.image_ids.tolist()), set(ann.caption_ids.reshape(-1).tolist())
    out: dict[str, float] = {}
    for name, wanted in (("eccv", ("map_at_r", "rprecision", "r1")), ("cxc", ("r1", "r5", "r10"))):
        for direction, ranked, queries, items, universe in (
                ("i2t", i2t, ids.image_ids, ids.caption_ids, all_captions),
                ("t2i", t2i, ids.caption_ids, ids.image_ids, all_images)):
            rows, pos_rows, pos_q, r = _queries(ann.positives[name][direction], queries, items, universe)
            if not len(rows):
                for w in wanted:
                    out[f"{name}_{w}_{direction}"] = float("nan")
                continue
            scores = _ranking_scores(_hits(ranked, rows, pos_rows, pos_q, len(items)), r,
                                     complete=ranked.shape[1] >= len(items))
            for w in wanted:
                out[f"{name}_{w}_{direction}"] = float(100.0 * scores[w].mean())
    out = {k: out[k] for k in ECCV_KEYS}
    out[ECCV_SIZE_KEY] = float(ids.n_images)
    return out


def coco_metrics(sims, ids: SplitIds) -> dict[str, float]:
    """ECCV Caption and CxC metrics (percent) of the score matrix ``sims`` [n_images, n_captions] of a split
    with ``ids``."""
    n, m = sims.shape
    if (n, m) != (ids.n_images, len(ids.caption_ids)):
        raise ValueError(f"score matrix {tuple(sims.shape)} for a split of {ids.n_images} images and "
                         f"{len(ids.caption_ids)} captions")
    i2t, t2i = ranked_lists(sims, TOP_K)
    return metrics_from_ranked(i2t, t2i, ids)


# ----------------------------------------------------------------------------- cells


def wanted(cell) -> bool:
    """Whether a typed cell's evaluation reports these metrics: ``eval.eccv`` on and ``coco_5k`` among its
    protocols (given, or its dataset's)."""
    from bench.protocols import PROTOCOLS

    if not cell.eval.eccv:
        return False
    names = cell.eval.protocols or [p.name for p in PROTOCOLS.values() if p.dataset == cell.dataset.name]
    return PROTOCOL in names


def protocol_split() -> str:
    """The split ``coco_5k`` evaluates (``testall``)."""
    from bench.protocols import get_protocol

    return get_protocol(PROTOCOL).split


def check_cell(cell, input_kind: str = "regions") -> SplitIds | None:
    """Before a cell trains: the COCO ids of its ``coco_5k`` split are the package's (None when the cell does
    not report these metrics); :class:`EccvError` (or the readers' ``DataError``) in one line otherwise.
    Reads the ids, not the features (SCAN precomp), or the Karpathy JSON's test images (pixel matchers)."""
    from bench.spec import resolve_dataset

    if not wanted(cell):
        return None
    ds = resolve_dataset(cell.dataset)
    if input_kind == "regions":
        return precomp_ids(ds.data_root, ds.name, protocol_split())
    from bench.data.open import karpathy_split

    return split_ids(karpathy_split(ds, protocol_split()), ds.data_root)
