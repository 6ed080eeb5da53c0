"""Harness scaling: expand a 10,000-cell suite, then collect 10,000 results from disk.

    python -m bench.benchmarks.bench_harness [--quick]

The synthetic suite is 2 datasets × 5 matchers × 100 DBL variants (α × β sweep) × 10 seeds
(``quick``: 1 seed, 1,000 cells). Every cell gets a result.json + done marker in a temporary store
(written once, not timed); then ``collect`` (suite expansion + reading every run folder) and
``summarize`` (mean ± std per row; no ranks files, so no bootstrap) are timed. Targets: < 10 s each.
Peak memory: tracemalloc peak of a second, untimed call (Python allocations; tracemalloc slows
the call down, so the timing comes from the first call).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

from bench.harness.cells import expand
from bench.harness.collect import collect, summarize
from bench.harness.config import validate_suite
from bench.harness.store import run_dir_for, write_json_atomic


def synthetic_suite(n_seeds: int = 10):
    values = [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0]
    raw = {
        "name": "bench-harness",
        "datasets": [{"name": "f30k_precomp"}, {"name": "coco_precomp", "protocols": ["coco_5k"]}],
        "matchers": ["vse_infty", "sgr", "saf", "xattn", "clip"],
        "strategies": [{"name": "dbl", "label": "DBL", "params": {"loss": "rel", "scenario": "oss"},
                        "sweep": {"alpha": values, "beta": values}}],
        "seeds": list(range(n_seeds)),
        "scales": {"full": {"schedule": {"default": {"epochs": 1, "lr": 1e-4, "batch_size": 8}}}},
    }
    return validate_suite(raw, "<bench_harness synthetic suite>")


def _timed(fn):
    """(result, seconds, peak MiB): timed alone, then run again under tracemalloc for its peak."""
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, seconds, peak / 2**20


def run(quick: bool = False) -> dict:
    """Seconds and peak MiB of expansion and of collection; the cell count."""
    suite = synthetic_suite(1 if quick else 10)
    cells, t_expand, mem_expand = _timed(lambda: expand(suite))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        for i, c in enumerate(cells):
            d = run_dir_for(c, root)
            d.mkdir(parents=True)
            m = {k: 50.0 + (i % 7) for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")}
            m["rsum"] = sum(m.values())
            metrics = {p: m for p in c.eval.protocols}
            write_json_atomic(d / "result.json", {"metrics": metrics, "best_epoch": 0, "dev_curve": [],
                                                  "cost": {"steps": 1}, "ranks_file": "ranks.npz"})
            (d / "done").touch()
        t_write = time.perf_counter() - t0
        df, t_collect, mem_collect = _timed(lambda: collect(suite, root))
        summary, t_summary, mem_summary = _timed(lambda: summarize(df))
    assert len(df) == len(cells) and (df["state"] == "done").all()
    return {"cells": len(cells), "rows": len(df), "summary_rows": len(summary),
            "expand_s": t_expand, "expand_peak_mib": mem_expand, "write_s": t_write,
            "collect_s": t_collect, "collect_peak_mib": mem_collect,
            "summarize_s": t_summary, "summarize_peak_mib": mem_summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 cells instead of 10,000")
    r = run(quick=parser.parse_args().quick)
    print(f"harness benchmark: {r['cells']:,} cells, {r['rows']:,} result rows")
    print(f"  expand            : {r['expand_s']:6.2f} s  peak {r['expand_peak_mib']:7.1f} MiB  (target < 10 s)")
    print(f"  write results     : {r['write_s']:6.2f} s  (setup, not a target)")
    print(f"  collect           : {r['collect_s']:6.2f} s  peak {r['collect_peak_mib']:7.1f} MiB  (target < 10 s)")
    print(f"  summarize         : {r['summarize_s']:6.2f} s  peak {r['summarize_peak_mib']:7.1f} MiB")


if __name__ == "__main__":
    main()
