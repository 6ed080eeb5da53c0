"""Recall@K / rank metrics, the COCO 5-fold protocol, the named protocols, and the metrics benchmark."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from bench import metrics
from bench.metrics import (
    METRIC_KEYS,
    coco_5fold,
    naive_retrieval_metrics,
    retrieval_metrics,
    retrieval_ranks,
)
from bench.protocols import PROTOCOLS, Protocol, evaluate_protocol, get_protocol, protocols_for


def argsort_reference_ranks(S: np.ndarray, cpi: int) -> tuple[np.ndarray, np.ndarray]:
    """The spec's definition read literally (argsort descending, first position); valid without ties."""
    n_images, n_captions = S.shape
    i2t = [min(np.flatnonzero(np.argsort(S[i])[::-1] // cpi == i)) for i in range(n_images)]
    t2i = [np.flatnonzero(np.argsort(S[:, c])[::-1] == c // cpi)[0] for c in range(n_captions)]
    return np.array(i2t), np.array(t2i)


def assert_same_result(a, b):
    metrics_a, i2t_a, t2i_a = a
    metrics_b, i2t_b, t2i_b = b
    assert metrics_a == metrics_b
    np.testing.assert_array_equal(i2t_a, i2t_b)
    np.testing.assert_array_equal(t2i_a, t2i_b)


# ---------------------------------------------------------------- hand-made matrices


def test_hand_computed_example():
    # cpi=2: image 0 owns captions 0,1; image 1 owns captions 2,3.
    S = np.array([[0.9, 0.1, 0.8, 0.2], [0.3, 0.7, 0.6, 0.5]], dtype=np.float32)
    m, i2t, t2i = retrieval_metrics(S, captions_per_image=2, return_ranks=True)
    np.testing.assert_array_equal(i2t, [0, 1])  # image 1: negative 0.7 beats its best 0.6
    np.testing.assert_array_equal(t2i, [0, 1, 1, 0])
    assert i2t.dtype == np.int64 and t2i.dtype == np.int64
    expected = {
        "i2t_r1": 50.0, "i2t_r5": 100.0, "i2t_r10": 100.0, "i2t_medr": 1.0, "i2t_meanr": 1.5,
        "t2i_r1": 50.0, "t2i_r5": 100.0, "t2i_r10": 100.0, "t2i_medr": 1.0, "t2i_meanr": 1.5,
        "rsum": 500.0,
    }  # fmt: skip
    assert m == expected
    assert list(m) == list(METRIC_KEYS) and all(type(v) is float for v in m.values())
    assert_same_result((m, i2t, t2i), naive_retrieval_metrics(S, 2, return_ranks=True))


def test_hand_computed_ties_are_pessimistic():
    # image 0: both positives 0.5 tie a negative 0.5 -> rank 1; the tied positives do not count.
    S = np.array([[0.5, 0.5, 0.5, 0.1], [0.0, 0.0, 0.2, 0.2]])
    _, i2t, t2i = retrieval_metrics(S, captions_per_image=2, return_ranks=True)
    np.testing.assert_array_equal(i2t, [1, 0])
    np.testing.assert_array_equal(t2i, [0, 0, 1, 0])
    # a t2i tie: caption 0's column is (0.4, 0.4) -> the other image ranks above the gt
    _, _, t2i = retrieval_metrics(np.array([[0.4, 0.0], [0.4, 1.0]]), captions_per_image=1, return_ranks=True)
    np.testing.assert_array_equal(t2i, [1, 0])


def test_medr_is_floor_of_median_plus_one():
    # ranks i2t = [0, 3] -> median 1.5 -> medr floor(1.5) + 1 = 2; meanr = 1.5 + 1
    S = np.array([[1.0, 0, 0, 0, 0, 0, 0, 0], [0.9, 0.8, 0.7, 0.0, 0.1, 0.1, 0.1, 0.1]])
    m, i2t, _ = retrieval_metrics(S, captions_per_image=4, return_ranks=True)
    np.testing.assert_array_equal(i2t, [0, 3])
    assert m["i2t_medr"] == 2.0 and m["i2t_meanr"] == 2.5
    assert m["i2t_r1"] == 50.0 and m["i2t_r5"] == 100.0


@pytest.mark.parametrize("n_images", [1, 2, 20])
def test_constant_matrix_gets_worst_ranks(n_images):
    S = np.full((n_images, 5 * n_images), 0.25, dtype=np.float32)
    m, i2t, t2i = retrieval_metrics(S, return_ranks=True)
    np.testing.assert_array_equal(i2t, np.full(n_images, 5 * n_images - 5))
    np.testing.assert_array_equal(t2i, np.full(5 * n_images, n_images - 1))
    if n_images == 20:
        assert m["rsum"] == 0.0
        assert m["i2t_medr"] == m["i2t_meanr"] == 96.0 and m["t2i_medr"] == m["t2i_meanr"] == 20.0
    if n_images == 1:  # nothing to compete with: perfect by definition
        assert m["rsum"] == 600.0
    assert_same_result((m, i2t, t2i), naive_retrieval_metrics(S, return_ranks=True))


def test_perfect_matrix():
    n = 12
    S = np.repeat(np.eye(n), 5, axis=1)
    m = retrieval_metrics(S)
    assert m["rsum"] == 600.0 and m["i2t_medr"] == m["t2i_medr"] == 1.0


# ---------------------------------------------------------------- random matrices vs naive and reference


@pytest.mark.parametrize(
    "n_images, cpi, seed", [(1, 5, 0), (3, 1, 1), (7, 3, 2), (50, 5, 3), (64, 5, 4), (33, 2, 5)]
)
def test_random_matches_naive_and_argsort_reference(n_images, cpi, seed):
    S = np.random.default_rng(seed).standard_normal((n_images, cpi * n_images))
    fast = retrieval_metrics(S, cpi, return_ranks=True)
    assert_same_result(fast, naive_retrieval_metrics(S, cpi, return_ranks=True))
    ref_i2t, ref_t2i = argsort_reference_ranks(S, cpi)  # no ties in continuous data
    np.testing.assert_array_equal(fast[1], ref_i2t)
    np.testing.assert_array_equal(fast[2], ref_t2i)


@pytest.mark.parametrize("seed", range(4))
def test_heavy_ties_match_naive(seed):
    # scores from {0, 1, 2}: ties everywhere, including between positives
    S = np.random.default_rng(seed).integers(0, 3, size=(30, 150)).astype(np.float32)
    assert_same_result(retrieval_metrics(S, return_ranks=True), naive_retrieval_metrics(S, return_ranks=True))


def test_chunked_and_threaded_paths_match_naive(monkeypatch):
    # tiny chunks: many row blocks split over several threads (the 5,000 x 25,000 code path)
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS_CPU", 3 * 5 * 41)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    S = np.random.default_rng(7).integers(0, 20, size=(41, 205)).astype(np.float32)
    assert_same_result(retrieval_metrics(S, return_ranks=True), naive_retrieval_metrics(S, return_ranks=True))


def test_torch_path_matches_numpy_path():
    # the path used for GPU matrices, run here on CPU tensors
    S = torch.from_numpy(np.random.default_rng(8).integers(0, 4, size=(25, 125)).astype(np.float32))
    i2t, t2i = metrics._ranks_torch(S, 5)
    ref_i2t, ref_t2i = retrieval_ranks(S)
    np.testing.assert_array_equal(i2t, ref_i2t)
    np.testing.assert_array_equal(t2i, ref_t2i)
    assert i2t.dtype == np.int64 and t2i.dtype == np.int64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensor_matches_cpu():
    S = torch.from_numpy(np.random.default_rng(9).integers(0, 4, size=(40, 200)).astype(np.float32))
    assert_same_result(
        retrieval_metrics(S.cuda(), return_ranks=True), retrieval_metrics(S, return_ranks=True)
    )


def test_torch_numpy_dtypes_and_layouts_agree():
    rng = np.random.default_rng(10)
    S = rng.integers(-50, 50, size=(16, 80)).astype(np.float32) / 8  # exact in float16 / bfloat16 too
    expected = retrieval_metrics(S, return_ranks=True)
    for variant in (
        torch.from_numpy(S),
        torch.from_numpy(S).double(),
        torch.from_numpy(S).half(),
        torch.from_numpy(S).bfloat16(),
        torch.from_numpy(S).requires_grad_(),
        torch.from_numpy(np.ascontiguousarray(S.T)).t(),  # non-contiguous view
        np.asfortranarray(S),
        S.astype(np.float64),
        (S * 8).astype(np.int64),  # integer scores keep their order
    ):
        assert_same_result(retrieval_metrics(variant, return_ranks=True), expected)


def test_input_is_not_modified():
    S = np.random.default_rng(11).standard_normal((10, 50)).astype(np.float32)
    before = S.copy()
    retrieval_metrics(S)
    coco_5fold(S)
    np.testing.assert_array_equal(S, before)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "sims, match",
    [
        (np.zeros(10), "2-D"),
        (np.zeros((2, 10, 1)), "2-D"),
        (np.zeros((3, 10)), "captions_per_image"),
        (np.zeros((10, 3)), "captions_per_image"),
        (np.zeros((0, 0)), "empty"),
        (np.array([[0.0, np.nan, 0, 0, 0]]), "NaN or inf"),
        (torch.tensor([[0.0, float("inf"), 0, 0, 0]]), "NaN or inf"),
        (np.ones((1, 5), dtype=bool), "real scores"),
        ([[0.0] * 5], "numpy array or torch tensor"),
    ],
)
def test_invalid_input(sims, match):
    with pytest.raises(ValueError, match=match):
        retrieval_metrics(sims)
    with pytest.raises(ValueError, match=match):
        naive_retrieval_metrics(sims)


def test_huge_finite_scores_are_valid():
    # their float32 sum overflows to inf: the exact finiteness check must accept them
    S = np.full((4, 20), 3e38, dtype=np.float32)
    S[np.arange(4), np.arange(4) * 5] = 3.2e38
    assert retrieval_metrics(S)["i2t_r1"] == 100.0


def test_invalid_captions_per_image():
    with pytest.raises(ValueError, match="captions_per_image"):
        retrieval_metrics(np.zeros((2, 10)), captions_per_image=0)


# ---------------------------------------------------------------- COCO 5-fold


def test_coco_5fold_matches_manual_per_fold_average():
    rng = np.random.default_rng(12)
    n_images, n_folds = 20, 5  # folds of 4 images / 20 captions
    S = rng.standard_normal((n_images, 5 * n_images)).astype(np.float32)
    S += 0.8 * np.repeat(np.eye(n_images), 5, axis=1)  # some signal, so recalls differ per fold
    result, i2t, t2i = coco_5fold(S, n_folds=n_folds, return_ranks=True)

    manual = [
        retrieval_metrics(S[4 * k : 4 * k + 4, 20 * k : 20 * k + 20], return_ranks=True) for k in range(5)
    ]
    assert result["folds"] == [m for m, _, _ in manual]
    for key in METRIC_KEYS:
        assert result[key] == pytest.approx(np.mean([m[key] for m, _, _ in manual]), abs=1e-9), key
    assert result["rsum"] == pytest.approx(sum(result[k] for k in metrics.RECALL_KEYS), abs=1e-9)
    np.testing.assert_array_equal(i2t, np.concatenate([r for _, r, _ in manual]))
    np.testing.assert_array_equal(t2i, np.concatenate([r for _, _, r in manual]))
    assert i2t.shape == (20,) and t2i.shape == (100,)
    # the fold-averaged RSUM is not the last fold's RSUM (a reference-code trap)
    assert len({m["rsum"] for m, _, _ in manual}) > 1


def test_coco_5fold_ignores_scores_across_folds():
    rng = np.random.default_rng(13)
    S = rng.standard_normal((10, 50))
    outside = np.ones_like(S, dtype=bool)
    for k in range(5):
        outside[2 * k : 2 * k + 2, 10 * k : 10 * k + 10] = False
    S_noisy = S.copy()
    S_noisy[outside] = 1e6  # would wreck every rank if folds were not evaluated alone
    assert coco_5fold(S_noisy) == coco_5fold(S)
    assert retrieval_metrics(S_noisy)["rsum"] < retrieval_metrics(S)["rsum"]


def test_coco_5fold_one_fold_equals_whole_matrix():
    S = np.random.default_rng(14).standard_normal((6, 30))
    result = coco_5fold(S, n_folds=1)
    assert result.pop("folds") == [retrieval_metrics(S)]
    assert result == pytest.approx(retrieval_metrics(S))


def test_coco_5fold_errors():
    with pytest.raises(ValueError, match="equal folds"):
        coco_5fold(np.zeros((12, 60)), n_folds=5)
    with pytest.raises(ValueError, match="n_folds"):
        coco_5fold(np.zeros((10, 50)), n_folds=0)
    with pytest.raises(ValueError, match="captions_per_image"):
        coco_5fold(np.zeros((10, 40)))


# ---------------------------------------------------------------- protocols


def test_protocol_table():
    assert set(PROTOCOLS) == {"f30k_1k", "coco_1k", "coco_5k"}
    assert get_protocol("coco_1k") == Protocol("coco_1k", "coco_precomp", "testall", n_folds=5)
    assert get_protocol("f30k_1k").split == "test" and get_protocol("coco_5k").n_folds == 1
    assert [p.name for p in protocols_for("coco_precomp")] == ["coco_1k", "coco_5k"]
    assert [p.name for p in protocols_for("f30k")] == ["f30k_1k"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_protocol("coco_5k").n_folds = 5


def test_unknown_protocol_lists_valid_names():
    with pytest.raises(KeyError, match="f30k_1k, coco_1k, coco_5k"):
        get_protocol("coco_1K")
    with pytest.raises(KeyError, match="coco_precomp"):
        protocols_for("imagenet")


def test_evaluate_protocol_dispatch():
    S = np.random.default_rng(15).standard_normal((10, 50))
    assert evaluate_protocol("coco_5k", S) == retrieval_metrics(S)
    assert evaluate_protocol("f30k_1k", S) == retrieval_metrics(S)
    assert evaluate_protocol("coco_1k", S) == coco_5fold(S, n_folds=5)
    m, i2t, t2i = evaluate_protocol(PROTOCOLS["coco_1k"], S, return_ranks=True)
    assert math.isclose(m["rsum"], coco_5fold(S)["rsum"]) and i2t.shape == (10,) and t2i.shape == (50,)


# ---------------------------------------------------------------- benchmark


def test_benchmark_quick_run_reports_equal_ranks():
    from bench.benchmarks import bench_metrics

    r = bench_metrics.run(quick=True)
    assert r["equal"] is True and r["shape"] == [1000, 5000]
    assert r["fast_seconds"] > 0 and r["naive_seconds"] > 0 and r["naive_extrapolated"]
    assert r["speedup"] == pytest.approx(r["naive_seconds"] / r["fast_seconds"])


def test_rank_bounds_contain_the_ranks_of_every_matrix_within_delta():
    from bench.metrics import rank_bounds, retrieval_ranks

    g = np.random.default_rng(3)
    S = g.normal(size=(40, 200)).astype(np.float32)
    (lo_i, lo_t), (hi_i, hi_t) = rank_bounds(S, 0.0)
    ri, rt = retrieval_ranks(S)
    assert (lo_i == ri).all() and (hi_i == ri).all() and (lo_t == rt).all() and (hi_t == rt).all()
    delta = 0.05
    (lo_i, lo_t), (hi_i, hi_t) = rank_bounds(S, delta)
    assert (hi_t - lo_t).sum() > 0  # some queries are near a tie at this delta
    for _ in range(20):
        P = S + g.uniform(-delta, delta, size=S.shape).astype(np.float32)
        ri, rt = retrieval_ranks(P)
        assert (lo_i <= ri).all() and (ri <= hi_i).all() and (lo_t <= rt).all() and (rt <= hi_t).all()
    # a perturbation larger than delta can leave the window
    P = S.copy()
    P[np.arange(200) // 5, np.arange(200)] -= 1.0
    assert (retrieval_ranks(P)[1] > hi_t).any()
