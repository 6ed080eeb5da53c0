"""Precision and compilation on this machine's CPU: what each recipe mode gains or costs a CPU cell.

    python -m bench.benchmarks.bench_modes [--quick] [--only sgr,saf,...]

For VSE∞ and the pairwise matchers (SGR, SAF, DBL's cross-attention matcher ``xattn``) at the demo size
(embed 256, sim 64, 36 regions × 256-d, batch 64), in each mode a CPU cell can ask for (``fp32``, the
default; ``fp32+compile``; ``bf16``): training samples/s (forward + hinge loss + backward + clip + Adam,
timed after the warm-up steps), scoring µs per pair (``bench.evaluate.score_matrix``'s tiles), the
compilation time apart, and the final loss against fp32's. It measures with ``make bench-gpu``'s own
functions (``bench.benchmarks.gpu.train_run`` and ``score_rate``) so both report the same quantities.
``tf32`` is left out: a CPU has no TF32 unit and runs it as fp32. This is what the defaults rest on
(``precision: fp32``, ``compile: false`` on every device).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time

import torch

from bench.benchmarks import gpu
from bench.benchmarks.bench_matchers import DEMO

MATCHERS = ("vse_infty", "sgr", "saf", "xattn")
MODES = ("fp32", "fp32+compile", "bf16")
FULL = dict(gpu.QUICK, batch=64, steps=8, warmup=3, overrides=dict(DEMO), score_tile=(50, 250))
QUICK = dict(gpu.QUICK, steps=3, warmup=1)


def run(quick: bool = False, matchers=MATCHERS, modes=MODES) -> dict:
    """Every mode of every matcher; compilation starts from an empty inductor cache (a temporary
    ``TORCHINDUCTOR_CACHE_DIR``), so its seconds are what a first cell pays, not a cache hit."""
    old = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="bench-modes-inductor-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        try:
            return _run(quick, matchers, modes)
        finally:
            if old is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = old


def _run(quick: bool, matchers, modes) -> dict:
    cfg = QUICK if quick else FULL
    device = torch.device("cpu")
    out = {"size": "tiny (quick)" if quick else "Demo", "threads": torch.get_num_threads(), "batch": cfg["batch"], "steps": cfg["steps"], "warmup": cfg["warmup"],
           "score_tile": list(cfg["score_tile"]), "matchers": {}}
    for name in matchers:
        work = gpu.Workload(name, cfg, device)
        state = copy.deepcopy(work.model.state_dict())
        rows = out["matchers"][name] = {}
        for mname in gpu.modes_for(name, list(modes)):
            t0 = time.perf_counter()
            mode = gpu.parse_mode(mname, device)
            r = gpu.train_run(work, state, cfg["steps"], cfg["warmup"], mode)
            s = gpu.score_rate(work, r["model"], mode, *cfg["score_tile"])
            rows[mname] = {"train_samples_per_s": r["samples_per_s"], "compile_s": r["compile_s"],
                           "final_loss": r["final_loss"], **s, "wall_s": time.perf_counter() - t0}
            print(f"[bench] modes {name} {mname}: {rows[mname]}", flush=True)
    return out


def section(r: dict) -> list[str]:
    lines = ["## Precision and compilation on CPU",
             f"{r['size']} size, batch {r['batch']}, {r['threads']} threads; training timed over {r['steps'] - r['warmup']} "
             f"steps after {r['warmup']} warm-up, scoring on {r['score_tile'][0]} × {r['score_tile'][1]} pairs "
             "(median of 3 after a first call). Ratios against fp32 eager of the same matcher in this run; "
             "compilation time shown apart (from an empty compile cache: what a first cell pays).", "",
             "| matcher | mode | train samples/s | × fp32 | score µs/pair | × fp32 | compile s (train + score) "
             "| final loss vs fp32 |", "|---|---|---|---|---|---|---|---|"]
    for name, rows in r["matchers"].items():
        base = rows["fp32"]
        for mname, v in rows.items():
            comp = ("" if v["compile_s"] is None else f"{v['compile_s']:.0f} + {v['score_compile_s']:.0f}")
            rel = abs(v["final_loss"] - base["final_loss"]) / max(abs(base["final_loss"]), 1e-12)
            lines.append(f"| {name} | {mname} | {v['train_samples_per_s']:,.1f} | "
                         f"{v['train_samples_per_s'] / base['train_samples_per_s']:.2f}× | "
                         f"{v['score_us_per_pair']:.3g} | {base['score_us_per_pair'] / v['score_us_per_pair']:.2f}× | "
                         f"{comp} | {rel:.1e} |")
    lines += ["", "The defaults stay fp32 eager on CPU too: fp32 is what the reference programs train in (bf16 is "
              "a named variant until its results are measured within fp32's seed spread), and compilation is "
              "paid again in every fresh cell process, so it pays only for cells long enough to amortise the "
              "compile seconds above."]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, a few steps")
    ap.add_argument("--only", default=",".join(MATCHERS), help=f"comma-separated subset of {','.join(MATCHERS)}")
    args = ap.parse_args()
    r = run(args.quick, args.only.split(","))
    print("\n".join(section(r)))
    print(json.dumps(r, indent=1, default=str))


if __name__ == "__main__":
    main()
