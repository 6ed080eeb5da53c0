"""Cross-modal retrieval metrics: Recall@K, median/mean rank, RSUM, and the COCO 5-fold protocol.

The input is a score matrix S [n_images, n_captions] (rows images, columns captions) where caption
c belongs to image c // captions_per_image (SCAN precomp layout, 5 captions per image).

Definitions (docs/evaluation.md), with 0-based ranks:
    i2t rank of image i   = best position among its captions in row i sorted descending
    t2i rank of caption c = position of image c // cpi in column c sorted descending
    R@K   = 100 * fraction of queries with rank < K, K in {1, 5, 10}
    medr  = floor(median(rank)) + 1,  meanr = mean(rank) + 1
    RSUM  = i2t R@1 + R@5 + R@10 + t2i R@1 + R@5 + R@10  (max 600)

Ties are resolved pessimistically: a competitor whose score *equals* the positive's counts as
ranked above it, so a collapsed model (constant scores) gets the worst ranks, never perfect
recall. Concretely
    i2t rank = #{negative captions j of row i : S[i, j] >= max over the image's own captions}
    t2i rank = #{images j != gt : S[j, c] >= S[gt, c]}
(an image's other positives never count against it). Without ties these equal the ranks an
argsort-based implementation gives.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from bench.metric_keys import (  # noqa: F401 - the metric names, re-exported (their home: bench.metric_keys)
    ECCV_KEYS,
    ECCV_SIZE_KEY,
    METRIC_KEYS,
    RANK_KEYS,
    RECALL_KEYS,
    RECALL_KS,
    REPORT_KEYS,
    RESULT_KEYS,
)

# Elements of S compared per chunk: bounds the temporary boolean block (and its int64 reductions).
_CHUNK_ELEMENTS_CPU = 1 << 18  # ~1 MB of float32: both comparisons of a block hit the cache
_CHUNK_ELEMENTS_GPU = 1 << 27


def _as_score_tensor(sims, captions_per_image: int, name: str = "sims") -> torch.Tensor:
    """Check shape/finiteness of a score matrix and return it as a tensor (no copy for numpy/torch)."""
    if isinstance(sims, np.ndarray):
        sims = torch.from_numpy(sims)
    elif not isinstance(sims, torch.Tensor):
        raise ValueError(f"{name} must be a numpy array or torch tensor, got {type(sims).__name__}")
    if not isinstance(captions_per_image, int) or captions_per_image < 1:
        raise ValueError(f"captions_per_image must be a positive int, got {captions_per_image!r}")
    if sims.dim() != 2:
        raise ValueError(f"{name} must be 2-D [n_images, n_captions], got shape {tuple(sims.shape)}")
    n_images, n_captions = sims.shape
    if n_images == 0:
        raise ValueError(f"{name} is empty (shape {tuple(sims.shape)})")
    if n_captions != captions_per_image * n_images:
        raise ValueError(
            f"{name} has shape {tuple(sims.shape)} but n_captions must equal captions_per_image "
            f"({captions_per_image}) x n_images ({n_images}) = {captions_per_image * n_images}; "
            "pass rows=images, columns=captions, with caption c belonging to image c // captions_per_image"
        )
    if sims.dtype == torch.bool or sims.is_complex():
        raise ValueError(f"{name} must hold real scores, got dtype {sims.dtype}")
    if not sims.is_floating_point():
        sims = sims.double()
    # A finite sum proves every entry finite (inf/NaN propagate) and costs far less than isfinite;
    # only an infinite sum (a NaN/inf, or overflow of huge finite scores) needs the exact check.
    if not bool(torch.isfinite(sims.sum())) and not bool(torch.isfinite(sims).all()):
        raise ValueError(f"{name} contains NaN or inf scores; check the model's outputs before evaluating")
    return sims.detach()


def _metrics_from_ranks(i2t_ranks: np.ndarray, t2i_ranks: np.ndarray) -> dict[str, float]:
    """R@K, medr, meanr per direction and RSUM from 0-based ranks (the definitions above)."""
    out: dict[str, float] = {}
    for direction, ranks in (("i2t", i2t_ranks), ("t2i", t2i_ranks)):
        for k in RECALL_KS:
            out[f"{direction}_r{k}"] = float(100.0 * np.count_nonzero(ranks < k) / len(ranks))
        out[f"{direction}_medr"] = float(math.floor(np.median(ranks)) + 1)
        out[f"{direction}_meanr"] = float(ranks.mean() + 1)
    out["rsum"] = float(sum(out[k] for k in RECALL_KEYS))
    return {k: out[k] for k in METRIC_KEYS}


def retrieval_ranks(sims, captions_per_image: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """0-based (i2t_ranks [n_images], t2i_ranks [n_captions]) as int64 numpy arrays, pessimistic ties.

    Rank of a positive = number of competitors scoring >= it, counted by one comparison + sum per
    chunk of rows (no sort). CPU matrices are counted with numpy (row blocks split over
    ``torch.get_num_threads()`` threads), others with torch on their own device (e.g. GPU).
    """
    S = _as_score_tensor(sims, captions_per_image)
    if S.device.type == "cpu":
        return _ranks_numpy(S, captions_per_image)
    return _ranks_torch(S, captions_per_image)


def rank_bounds(sims, delta: float, captions_per_image: int = 5) -> tuple[tuple[np.ndarray, np.ndarray],
                                                                          tuple[np.ndarray, np.ndarray]]:
    """The ranks any score matrix within ``delta`` (max abs difference) of ``sims`` can give.

    Returns ``((i2t_lo, t2i_lo), (i2t_hi, t2i_hi))``: for every query, a matrix S' with
    ``|S' - sims| <= delta`` elementwise ranks it in ``[lo, hi]``. A positive can gain at most
    ``2 * delta`` on a competitor, so ``lo`` ranks ``sims`` with every positive raised by ``2 * delta``
    (and a hair, so that exact ties still count against it) and ``hi`` with every positive lowered by
    as much. This is what "equal up to near-tie flips" means for two runs whose scores differ by
    float rounding (e.g. a multi-process run, whose all-reduce sums in another order).
    """
    S = _as_score_tensor(sims, captions_per_image).float()
    n_images, n_captions = S.shape
    positive = torch.zeros_like(S, dtype=torch.bool)
    cols = torch.arange(n_captions, device=S.device)
    positive[cols // captions_per_image, cols] = True
    shift = 2.0 * float(delta) * (1 + 1e-6) + 1e-12
    lo = retrieval_ranks(torch.where(positive, S + shift, S), captions_per_image)
    hi = retrieval_ranks(torch.where(positive, S - shift, S), captions_per_image)
    return lo, hi


def _positive_thresholds(S, captions_per_image: int):
    """Best own-caption score per image, how many own captions reach it, and each caption's gt score.

    Works on a numpy array or a torch tensor (on its device); gathers only the n_captions positives.
    """
    if isinstance(S, np.ndarray):
        images, offsets = np.arange(S.shape[0]), np.arange(captions_per_image)
    else:
        images = torch.arange(S.shape[0], device=S.device)
        offsets = torch.arange(captions_per_image, device=S.device)
    positive_cols = images[:, None] * captions_per_image + offsets[None, :]
    positive_scores = S[images[:, None], positive_cols]  # [n_images, cpi]: S[i, i*cpi : (i+1)*cpi]
    best_positive = positive_scores.max(1)
    best_positive = best_positive if isinstance(S, np.ndarray) else best_positive.values
    positives_at_best = (positive_scores >= best_positive[:, None]).sum(1)  # >= 1
    gt_scores = positive_scores.reshape(-1)  # [n_captions]: S[c // cpi, c]
    return best_positive, positives_at_best, gt_scores


def _count_rows_numpy(S, best_positive, gt_scores, lo: int, hi: int, rows: int):
    """For images lo..hi: #captions >= best own score per row, and per column #rows >= its gt score."""
    i2t_at_or_above = np.empty(hi - lo, np.int64)
    t2i_at_or_above = np.zeros(S.shape[1], np.int32)  # counts < n_images
    for start in range(lo, hi, rows):
        stop = min(start + rows, hi)
        block = S[start:stop]
        i2t_at_or_above[start - lo : stop - lo] = np.count_nonzero(
            block >= best_positive[start:stop, None], 1
        )
        t2i_at_or_above += (block >= gt_scores).sum(0, dtype=np.int32)
    return i2t_at_or_above, t2i_at_or_above


def _ranks_numpy(S: torch.Tensor, captions_per_image: int) -> tuple[np.ndarray, np.ndarray]:
    S = (S.float() if S.dtype == torch.bfloat16 else S).numpy()  # bfloat16 -> float32 is exact
    n_images, n_captions = S.shape
    best_positive, positives_at_best, gt_scores = _positive_thresholds(S, captions_per_image)
    rows = max(1, _CHUNK_ELEMENTS_CPU // n_captions)
    n_threads = max(1, min(torch.get_num_threads(), -(-n_images // rows)))
    bounds = np.linspace(0, n_images, n_threads + 1).astype(int)
    parts = [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
    if n_threads == 1:
        counts = [_count_rows_numpy(S, best_positive, gt_scores, *parts[0], rows)]
    else:  # numpy releases the GIL inside its comparisons and reductions
        with ThreadPoolExecutor(n_threads) as pool:
            counts = list(pool.map(lambda p: _count_rows_numpy(S, best_positive, gt_scores, *p, rows), parts))
    i2t_ranks = np.concatenate([c[0] for c in counts]) - positives_at_best  # drop the image's own captions
    t2i_ranks = sum(c[1].astype(np.int64) for c in counts) - 1  # drop the ground-truth image itself
    return i2t_ranks.astype(np.int64), t2i_ranks


@torch.no_grad()
def _ranks_torch(S: torch.Tensor, captions_per_image: int) -> tuple[np.ndarray, np.ndarray]:
    """The same counts with torch ops on S's device (used for GPU matrices)."""
    n_images, n_captions = S.shape
    best_positive, positives_at_best, gt_scores = _positive_thresholds(S, captions_per_image)
    i2t_at_or_above = torch.empty(n_images, dtype=torch.int64, device=S.device)
    t2i_at_or_above = torch.zeros(n_captions, dtype=torch.int32, device=S.device)  # counts < n_images
    budget = _CHUNK_ELEMENTS_GPU if S.device.type == "cuda" else _CHUNK_ELEMENTS_CPU
    rows = max(1, budget // n_captions)
    for start in range(0, n_images, rows):
        block = S[start : start + rows]
        i2t_at_or_above[start : start + rows] = (block >= best_positive[start : start + rows, None]).sum(1)
        t2i_at_or_above += (block >= gt_scores[None, :]).sum(0, dtype=torch.int32)
    i2t_ranks = i2t_at_or_above - positives_at_best  # drop the image's own captions
    t2i_ranks = t2i_at_or_above.long() - 1  # drop the ground-truth image itself
    return i2t_ranks.cpu().numpy(), t2i_ranks.cpu().numpy()


def retrieval_metrics(sims, captions_per_image: int = 5, return_ranks: bool = False):
    """Recall@{1,5,10}, medr, meanr for i2t and t2i, and RSUM of a score matrix [n_images, n_captions].

    ``sims`` is a numpy array or torch tensor (computed on its device, e.g. on GPU); caption c
    belongs to image c // captions_per_image. Ties are pessimistic (see the module docstring): an
    equal-scoring competitor ranks above the positive, so constant scores give the worst ranks.

    Returns a dict of Python floats with keys ``METRIC_KEYS``; with ``return_ranks=True`` returns
    ``(metrics, i2t_ranks [n_images], t2i_ranks [n_captions])``, ranks 0-based int64 numpy arrays.
    Raises ValueError for a non-2-D matrix, n_captions != captions_per_image * n_images, or
    non-finite scores.
    """
    i2t_ranks, t2i_ranks = retrieval_ranks(sims, captions_per_image)
    metrics = _metrics_from_ranks(i2t_ranks, t2i_ranks)
    return (metrics, i2t_ranks, t2i_ranks) if return_ranks else metrics


def coco_5fold(sims, captions_per_image: int = 5, n_folds: int = 5, return_ranks: bool = False):
    """COCO 1K protocol: n_folds consecutive image blocks of the testall matrix, each evaluated alone.

    Fold k holds images [k*f, (k+1)*f) and their captions, f = n_images / n_folds (1,000 for real
    COCO testall). Every metric (recalls, medr, meanr) is averaged over folds; RSUM is the sum of the
    fold-averaged recalls (= the mean of the fold RSUMs). The result also has ``"folds"``: the list
    of per-fold metric dicts. With ``return_ranks=True`` returns ``(metrics, i2t_ranks, t2i_ranks)``
    where the ranks are the within-fold ranks, concatenated in fold order.
    """
    S = _as_score_tensor(sims, captions_per_image)
    n_images = S.shape[0]
    if not isinstance(n_folds, int) or n_folds < 1:
        raise ValueError(f"n_folds must be a positive int, got {n_folds!r}")
    if n_images % n_folds:
        raise ValueError(
            f"coco_5fold: {n_images} images cannot be split into {n_folds} equal folds; "
            "evaluate the full testall split (n_images divisible by n_folds)"
        )
    fold_images = n_images // n_folds
    fold_captions = fold_images * captions_per_image
    folds, i2t_parts, t2i_parts = [], [], []
    for k in range(n_folds):
        block = S[k * fold_images : (k + 1) * fold_images, k * fold_captions : (k + 1) * fold_captions]
        fold_metrics, i2t_ranks, t2i_ranks = retrieval_metrics(block, captions_per_image, return_ranks=True)
        folds.append(fold_metrics)
        i2t_parts.append(i2t_ranks)
        t2i_parts.append(t2i_ranks)

    metrics: dict = {key: float(np.mean([f[key] for f in folds])) for key in METRIC_KEYS if key != "rsum"}
    metrics["rsum"] = float(sum(metrics[k] for k in RECALL_KEYS))
    metrics = {key: metrics[key] for key in METRIC_KEYS}
    metrics["folds"] = folds
    if return_ranks:
        return metrics, np.concatenate(i2t_parts), np.concatenate(t2i_parts)
    return metrics


def naive_i2t_rank(row: np.ndarray, image: int, captions_per_image: int = 5) -> int:
    """Position of image ``image``'s best caption in ``row`` sorted descending, ties before positives.

    A stable sort of the scores with the negatives placed first puts every negative that ties a
    positive ahead of it: the pessimistic tie policy, made explicit.
    """
    is_positive = np.arange(len(row)) // captions_per_image == image
    order = np.concatenate([np.flatnonzero(~is_positive), np.flatnonzero(is_positive)])
    ranked = order[np.argsort(-row[order], kind="stable")]
    return int(np.flatnonzero(is_positive[ranked])[0])


def naive_t2i_rank(column: np.ndarray, caption: int, captions_per_image: int = 5) -> int:
    """Position of caption ``caption``'s image in ``column`` sorted descending, ties before it."""
    gt = caption // captions_per_image
    order = np.concatenate([np.delete(np.arange(len(column)), gt), [gt]])
    ranked = order[np.argsort(-column[order], kind="stable")]
    return int(np.flatnonzero(ranked == gt)[0])


def naive_retrieval_metrics(sims, captions_per_image: int = 5, return_ranks: bool = False):
    """Reference implementation: sort every row and column in a Python loop (slow; tests, benchmark).

    Same definitions, tie policy and return values as :func:`retrieval_metrics`.
    """
    S = _as_score_tensor(sims, captions_per_image).cpu()
    S = (S.double() if S.dtype == torch.bfloat16 else S).numpy()
    n_images, n_captions = S.shape
    i2t_ranks = np.array([naive_i2t_rank(S[i], i, captions_per_image) for i in range(n_images)], np.int64)
    S_t = np.ascontiguousarray(S.T)
    t2i_ranks = np.array([naive_t2i_rank(S_t[c], c, captions_per_image) for c in range(n_captions)], np.int64)
    metrics = _metrics_from_ranks(i2t_ranks, t2i_ranks)
    return (metrics, i2t_ranks, t2i_ranks) if return_ranks else metrics
