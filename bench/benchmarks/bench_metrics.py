"""Benchmark: vectorised ``retrieval_metrics`` vs the per-query ``naive_retrieval_metrics``.

    python -m bench.benchmarks.bench_metrics [--quick] [--full]

On a seeded random float32 score matrix (5,000 x 25,000, COCO 5K size) it times the vectorised
metrics on the whole matrix and the naive per-row/per-column sorts on a subset of the queries
(every ``stride``-th image and caption), scaled linearly to the whole matrix (each naive query
costs the same: one sort of a full row or column). ``--full`` times the naive code on every query
instead. The ranks of the timed queries must be equal. Target: >= 50x on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.metrics import naive_i2t_rank, naive_retrieval_metrics, naive_t2i_rank, retrieval_metrics

TARGET_SPEEDUP = 50.0


def _best_time(fn, repeats: int) -> tuple[float, float, object]:
    """Best wall-clock and best CPU (process) seconds over ``repeats`` calls, and the last output."""
    best_wall, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, out


def run(quick: bool = False, full: bool = False, seed: int = 0) -> dict:
    """Time both implementations; returns seconds (wall and CPU), the speed ratio, and ranks equality.

    ``quick``: a 1,000 x 5,000 matrix instead of 5,000 x 25,000. ``full``: time the naive code on
    every query instead of a subset scaled linearly.
    """
    n_images = 1000 if quick else 5000
    stride = 1 if full else (10 if quick else 25)
    sims = np.random.default_rng(seed).standard_normal((n_images, 5 * n_images), dtype=np.float32)

    retrieval_metrics(sims[:100, :500])  # warm-up: first-call overheads are not the metric's cost
    fast_seconds, fast_cpu, (fast_metrics, fast_i2t, fast_t2i) = _best_time(
        lambda: retrieval_metrics(sims, return_ranks=True), repeats=3
    )

    if stride == 1:
        naive_seconds, naive_cpu, (naive_metrics, naive_i2t, naive_t2i) = _best_time(
            lambda: naive_retrieval_metrics(sims, return_ranks=True), repeats=1
        )
        equal = naive_metrics == fast_metrics
        equal = equal and np.array_equal(naive_i2t, fast_i2t) and np.array_equal(naive_t2i, fast_t2i)
    else:
        images = np.arange(0, n_images, stride)
        captions = np.arange(0, 5 * n_images, stride)
        sims_t = np.ascontiguousarray(sims.T)  # columns as rows, as naive_retrieval_metrics does

        def naive_subset():
            i2t = np.array([naive_i2t_rank(sims[i], i) for i in images])
            return i2t, np.array([naive_t2i_rank(sims_t[c], c) for c in captions])

        naive_seconds, naive_cpu, (naive_i2t, naive_t2i) = _best_time(naive_subset, repeats=1)
        naive_seconds, naive_cpu = naive_seconds * stride, naive_cpu * stride  # stride x more queries
        equal = np.array_equal(naive_i2t, fast_i2t[images]) and np.array_equal(naive_t2i, fast_t2i[captions])

    return {
        "shape": [n_images, 5 * n_images],
        "torch_threads": torch.get_num_threads(),
        "fast_seconds": fast_seconds,
        "naive_seconds": naive_seconds,
        "fast_cpu_seconds": fast_cpu,
        "naive_cpu_seconds": naive_cpu,
        "naive_extrapolated": stride != 1,
        "naive_query_fraction": 1.0 / stride,
        "speedup": naive_seconds / fast_seconds,
        "target_speedup": TARGET_SPEEDUP,
        "equal": bool(equal),
        "rsum": fast_metrics["rsum"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 x 5,000 matrix")
    parser.add_argument("--full", action="store_true", help="time the naive code on every query")
    args = parser.parse_args()
    r = run(quick=args.quick, full=args.full)
    n_img, n_cap = r["shape"]
    print(
        f"retrieval metrics on a random {n_img} x {n_cap} float32 matrix ({r['torch_threads']} torch threads)"
    )
    print(
        f"  vectorised retrieval_metrics : {r['fast_seconds']:8.3f} s wall, "
        f"{r['fast_cpu_seconds']:.3f} s CPU (best of 3)"
    )
    scope = (
        f"timed on {r['naive_query_fraction']:.0%} of the queries, scaled linearly to all"
        if r["naive_extrapolated"]
        else "all queries"
    )
    print(
        f"  naive_retrieval_metrics      : {r['naive_seconds']:8.3f} s wall, "
        f"{r['naive_cpu_seconds']:.3f} s CPU ({scope})"
    )
    status = "OK" if r["speedup"] >= r["target_speedup"] else "BELOW TARGET"
    print(
        f"  speed ratio                  : {r['speedup']:8.1f}x (target >= {r['target_speedup']:.0f}x: {status})"
    )
    print(f"  ranks equal                  : {r['equal']}")
    if not r["equal"]:
        raise SystemExit("vectorised and naive ranks differ")


if __name__ == "__main__":
    main()
