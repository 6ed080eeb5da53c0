"""Step time of every strategy relative to the baseline, measured side by side in one run.

Expected from the method (method.md, "Computational cost per training step"): OAS and MSS ≈ 1.33×
the baseline (one extra forward pass without backward), OSS ≈ 2× (a second trained branch), and DBL
equal, within 5%, to the strategy it competes with in its scenario (only the loss differs).

    python -m bench.benchmarks.bench_strategies [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import models
import strategies
from bench.spec import Schedule
from bench.train import _make_optimizer, _train_step
from strategies import StepContext

#: (label, strategy, params, expected ratio to baseline, label of the competitor DBL is compared with)
CASES = [
    ("baseline", "baseline", {}, 1.0, None),
    ("kd (OAS)", "kd", {}, 1.33, None),
    ("dbl-abs (OAS)", "dbl", {"scenario": "oas", "loss": "abs"}, 1.33, "kd (OAS)"),
    ("dml (OSS)", "dml", {}, 2.0, None),
    ("dbl-abs (OSS)", "dbl", {"scenario": "oss", "loss": "abs"}, 2.0, "dml (OSS)"),
    ("dbl-rel (OSS)", "dbl", {"scenario": "oss", "loss": "rel"}, 2.0, "dml (OSS)"),
    ("momentum (MSS)", "momentum", {}, 1.33, None),
    ("dbl-rel (MSS)", "dbl", {"scenario": "mss", "loss": "rel"}, 1.33, "momentum (MSS)"),
]


def _batch(batch_size, regions, img_dim, vocab, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.randn(batch_size, regions, img_dim, generator=g),
            "image_lengths": torch.full((batch_size,), regions, dtype=torch.long),
            "captions": torch.randint(4, vocab, (batch_size, length), generator=g),
            "caption_lengths": torch.full((batch_size,), length, dtype=torch.long)}


def _setup(matcher_kwargs, name, params):
    torch.manual_seed(0)
    probe = models.build(**matcher_kwargs)
    strategy = strategies.build(name, base_loss=probe.base_loss, **params)
    specs = {b.name: b for b in strategy.branches()}
    branches = {}
    for b in strategy.branches():
        branches[b.name] = models.build(**matcher_kwargs)
        branches[b.name].train(b.mode == "train")
        if not b.optimised:
            branches[b.name].requires_grad_(False)
    sched = Schedule(lr=1e-4)
    optimizers = {n: _make_optimizer(branches[n], sched) for n, s in specs.items() if s.optimised}
    return strategy, specs, branches, optimizers, sched


def run(quick: bool = False, matcher: str = "vse_infty") -> dict:
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    kw = {"name": matcher, "vocab_size": 500, "img_dim": 256, "embed_size": 256, "word_dim": 128}
    batch = _batch(64, 36, 256, 500, 12)
    rounds, steps = (2, 3) if quick else (5, 6)
    setups = {label: _setup(kw, name, params) for label, name, params, _, _ in CASES}
    times = {label: [] for label in setups}
    device = torch.device("cpu")
    for r in range(rounds):  # interleaved rounds so drift in machine load hits every strategy alike
        for label, (strategy, specs, branches, optimizers, sched) in setups.items():
            ctx = StepContext(epoch=1, step=r, total_steps=100)
            _train_step(batch, branches, specs, optimizers, strategy, ctx, sched, device, ".")  # warm-up
            t0 = time.perf_counter()
            for _ in range(steps):
                _train_step(batch, branches, specs, optimizers, strategy, ctx, sched, device, ".")
            times[label].append((time.perf_counter() - t0) / steps)
    step = {label: statistics.median(v) for label, v in times.items()}
    base = step["baseline"]
    rows = []
    for label, _, _, expected, competitor in CASES:
        row = {"strategy": label, "step_s": step[label], "ratio": step[label] / base, "expected": expected}
        if competitor:
            row["vs_competitor"] = step[label] / step[competitor]
            row["within_5pct"] = abs(row["vs_competitor"] - 1) <= 0.05
        rows.append(row)
    return {"matcher": matcher, "batch": 64, "rows": rows}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    out = run(quick=args.quick)
    print(f"step time per strategy ({out['matcher']}, demo size, batch {out['batch']}, CPU)")
    print(f"{'strategy':<16} {'s/step':>8} {'× base':>7} {'expected':>8} {'DBL / competitor':>17}")
    for r in out["rows"]:
        comp = f"{r['vs_competitor']:.3f} ({'ok' if r['within_5pct'] else 'off'})" if "vs_competitor" in r else ""
        print(f"{r['strategy']:<16} {r['step_s']:8.4f} {r['ratio']:7.2f} {r['expected']:8.2f} {comp:>17}")


if __name__ == "__main__":
    main()
