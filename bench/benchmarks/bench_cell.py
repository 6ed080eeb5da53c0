"""Where one demo cell's time goes: process start, imports, W&B, training steps, evaluation, checkpoints.

    python -m bench.benchmarks.bench_cell [--quick]

Runs the demo suite's baseline cell (seed 0) in a fresh process, as each of ``make demo``'s local jobs
does (``python -m bench run demo --cell <id>``, one CPU), on freshly generated embedded data
(``--quick``: the ``tiny`` preset and a few steps), twice: with W&B offline (what the demo does) and
with W&B disabled. The trainer's own split (``cost.time_split_s`` of result.json: set-up, data
loading, optimiser steps, W&B logging calls, checkpoint writes, dev and test evaluation) is read back;
W&B's whole cost is the difference of the two process wall times; process start and imports are
timed by starting the interpreter alone and with the trainer's imports.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness.store import REPO_ROOT

IMPORTS = "import bench.train, bench.harness.store, bench.harness.tracking, wandb"
QUICK_OVERRIDES = ["scales.smoke.schedule.default.epochs=2", "scales.smoke.schedule.default.max_steps_per_epoch=2",
                   "scales.smoke.schedule.default.batch_size=16", "scales.smoke.matchers.vse_infty.embed_size=16",
                   "scales.smoke.matchers.vse_infty.word_dim=8", "eval.dev_images=20"]


def _wall(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return time.perf_counter() - t0


def run(quick: bool = False) -> dict:
    from bench.data.synth import generate
    from bench.harness.cells import expand
    from bench.harness.config import load_suite
    from bench.harness.store import locate_run

    with tempfile.TemporaryDirectory(prefix="bench-cell-") as tmp:
        tmp = Path(tmp)
        data = generate(tmp / "data", preset="tiny" if quick else "demo", seed=0)
        overrides = [f"datasets.0.data_root={data}", f"datasets.0.vocab_root={data / 'vocab'}"]
        overrides += QUICK_OVERRIDES if quick else []
        cell = next(c for c in expand(load_suite("demo", overrides))
                    if c.seed == 0 and c.strategy.name == "baseline")
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), WANDB_SILENT="true", HF_HUB_OFFLINE="1")
        start_s = _wall([sys.executable, "-c", "pass"], env)
        imports_s = _wall([sys.executable, "-c", IMPORTS], env) - start_s
        walls, splits = {}, {}
        for mode in ("offline", "disabled"):
            root = tmp / f"runs-{mode}"
            walls[mode] = _wall([sys.executable, "-m", "bench", "run", "demo", *overrides, "--cell", cell.id,
                                 "--root", str(root)], dict(env, WANDB_MODE=mode))
            result = json.loads((locate_run(cell, root) / "result.json").read_text())
            splits[mode] = result["cost"]["time_split_s"]
    split = splits["offline"]
    wandb_s = walls["offline"] - walls["disabled"]
    accounted = start_s + imports_s + split["total_s"] + max(wandb_s - split["tracker_s"], 0.0)
    return {"quick": quick, "cell": cell.id, "steps": result["cost"]["steps"],
            "schedule": {k: getattr(cell.schedule, k) for k in ("epochs", "batch_size", "max_steps_per_epoch")},
            "wall_offline_s": walls["offline"], "wall_disabled_s": walls["disabled"], "process_start_s": start_s,
            "imports_s": imports_s, "wandb_s": wandb_s, "split": split,
            "rest_s": walls["offline"] - accounted}


def section(r: dict) -> list[str]:
    s, wall = r["split"], r["wall_offline_s"]
    rows = [("interpreter start", r["process_start_s"]), ("imports (torch, wandb, the suite)", r["imports_s"]),
            ("run set-up (data, models, optimiser)", s["setup_s"]), ("data loading (batches)", s["data_s"]),
            ("training steps", s["steps_s"]), ("W&B logging calls", s["tracker_s"]),
            ("W&B init + finish (offline run minus disabled, less the logging calls)",
             max(r["wandb_s"] - s["tracker_s"], 0.0)),
            ("checkpoint writes (last.pt, best.pt)", s["checkpoint_s"]), ("dev evaluation (every epoch)", s["dev_eval_s"]),
            ("test evaluation (best checkpoint, ranks)", s["test_eval_s"]),
            ("trainer loop remainder", s["other_s"]), ("rest (CLI, result store, provenance)", r["rest_s"])]
    lines = ["## Where a demo cell's time goes",
             f"The demo's baseline cell (seed 0; {r['steps']} steps, schedule {r['schedule']}) run as `python -m bench "
             f"run demo --cell …` in a fresh process{' (quick: tiny data, a few steps)' if r['quick'] else ''}: "
             f"{wall:.1f} s with W&B offline, {r['wall_disabled_s']:.1f} s with W&B disabled.", "",
             "| phase | seconds | share |", "|---|---|---|"]
    lines += [f"| {name} | {sec:.2f} | {100 * sec / wall:.0f}% |" for name, sec in rows]
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny data and a few steps (a smoke run)")
    args = ap.parse_args(argv)
    res = run(args.quick)
    print("\n".join(section(res)))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
