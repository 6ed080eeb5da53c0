"""The options of ``python -m bench collect`` (tables, figures, the suite's W&B summary), defined once and read
by ``bench.harness.collect_command.run``. A module of its own, importing nothing heavy: every ``python -m bench``
command builds its parser from it. Defaults left None are the collect modules' own (``run`` fills them)."""

from __future__ import annotations

import argparse

from bench.values import path_arg


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tables", type=path_arg, default=None, help="folder for the tables (default results/tables; a "
                   "rehearsal's, with its log: results/rehearsal)")
    p.add_argument("--figures", type=path_arg, default=None, help="folder for the figures (default results/figures)")
    p.add_argument("--n-boot", type=n_boot, default=None,
                   help="bootstrap resamples of the test-set variance (default bench.harness.stats.N_BOOT; 0: the "
                        "bootstrap's closed-form limit)")
    p.add_argument("--no-wandb", action="store_true", help="no suite-summary W&B run (also: WANDB_MODE=disabled)")
    p.add_argument("--pool-mixed-code", action="store_true",
                   help="pool results made by different training code (the table lists each row's version)")
    p.add_argument("--overwrite", action="store_true",
                   help="let a suite other than bench/suites/<name>.yaml (or one with overrides) replace the "
                        "committed tables and figures of <name>")
    p.add_argument("--force", action="store_true",
                   help="replace a table even when the new one holds fewer done results (it is refused otherwise)")


def n_boot(text: str) -> int:
    """argparse type of ``--n-boot``: 0 (the closed-form limit) or at least 2 resamples. One resample has no
    variance (the test-set part of every interval silently became 0) and a negative count put scipy's message into
    the table's ΔRSUM cells, exit 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0 or value == 1:
        raise argparse.ArgumentTypeError(
            f"must be 0 (the bootstrap's closed-form limit) or at least 2 resamples, got {value}: one resample has "
            "no variance and a negative count none at all")
    return value
