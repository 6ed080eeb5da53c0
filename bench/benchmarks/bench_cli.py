"""Start-up of the commands that neither train nor score: ``--help``, ``status``, ``list``, ``show`` and a SLURM dry
run, each a fresh ``python -m bench`` process (what a user waits for), and whether torch was imported.

    python -m bench.benchmarks.bench_cli [--quick]

Target: <= 1 s each. The registries' facts are read once per code version and kept
(``bench.registry_facts``); the first command after a change of the matchers' or strategies' code pays the
torch import once, so each command runs once untimed (in a fresh cache folder) before its timed runs
(median of 5; ``--quick``: 3). The data is the ``tiny`` embedded dataset in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.provenance import REPO_ROOT

TARGET_S = 1.0
#: argv after ``python -m bench`` ({data} and {root} filled in)
COMMANDS = {
    "--help": ["--help"],
    "status": ["status", "oss", "--root", "{root}"],
    "list": ["list", "--root", "{root}"],
    "show": ["show", "oas", "scale=smoke", "seeds=[0]", "data_root={data}", "--root", "{root}"],
    "dry run": ["sweep", "oss", "scale=full", "data_root={data}", "only.datasets=[f30k_precomp]", "--executor",
                "slurm", "--cluster", "example-gpu", "--dry-run", "--root", "{root}"],
}
_PROBE = ("import runpy, sys\nsys.argv = ['bench', *sys.argv[1:]]\ntry:\n    runpy.run_module('bench', run_name='__main__')\n"
          "except SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
          "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code, file=sys.stderr)\n")


def _argv(name: str, data: Path, root: Path) -> list[str]:
    return [a.format(data=data, root=root) for a in COMMANDS[name]]


def _env(cache: Path) -> dict:
    return {**os.environ, "ITM_COOP_BENCH_CACHE": str(cache), "PYTHONPATH": str(REPO_ROOT), "WANDB_MODE": "offline"}


def torch_imported(argv: list[str], env: dict) -> tuple[bool, int]:
    """(whether the command imported torch, its exit code), from a probe running it in one process."""
    out = subprocess.run([sys.executable, "-c", _PROBE, *argv], env=env, capture_output=True, text=True, timeout=300,
                         cwd=REPO_ROOT)
    last = out.stderr.strip().splitlines()[-1].split()
    return last[0] == "TORCH", int(last[1]) if last[1].isdigit() else 1


def timed(argv: list[str], env: dict, repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bench", *argv], env=env, capture_output=True, timeout=300, cwd=REPO_ROOT)
        seconds.append(time.perf_counter() - t0)
    return seconds


def run(quick: bool = False) -> dict:
    from bench.data.synth import generate

    repeats = 3 if quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = generate(tmp / "tiny", preset="tiny", seed=0)
        env = _env(tmp / "cache")
        rows = {}
        for name in COMMANDS:
            argv = _argv(name, data, tmp / "runs")
            first = timed(argv, env, 1)[0]  # reads the registries once for this code (the cache is new)
            torch, code = torch_imported(argv, env)
            seconds = timed(argv, env, repeats)
            rows[name] = {"argv": " ".join(["python -m bench", *COMMANDS[name]]), "median_s": statistics.median(seconds),
                          "max_s": max(seconds), "first_s": first, "torch": torch, "exit": code}
    return {"target_s": TARGET_S, "repeats": repeats, "rows": rows}


def section(r: dict) -> list[str]:
    lines = ["## Command-line start-up (commands that neither train nor score)",
             f"Each a fresh process, median of {r['repeats']} runs after one untimed run that reads the registries' "
             "facts for this code version (`bench.registry_facts`; that first run, with torch, in the last column). "
             "Target: <= 1 s and no torch.", "",
             "| command | median s | max s | target | met | torch imported | first run s |", "|---|---|---|---|---|---|---|"]
    for row in r["rows"].values():
        met = "yes" if row["median_s"] <= r["target_s"] and not row["torch"] and row["exit"] in (0, None) else "NO"
        lines.append(f"| `{row['argv']}` | {row['median_s']:.2f} | {row['max_s']:.2f} | <= {r['target_s']:g} s | {met} | "
                     f"{'yes' if row['torch'] else 'no'} | {row['first_s']:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 timed runs instead of 5")
    print("\n".join(section(run(quick=parser.parse_args().quick))))


if __name__ == "__main__":
    main()
