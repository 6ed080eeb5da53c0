"""``python -m bench collect``: the command around :mod:`bench.harness.collect` — it checks where the tables
and figures go (never a file, a run folder, the committed demo outputs from other cells, or a table of more
done results: :mod:`bench.harness.done_counts`), refuses to write nothing, then writes the tables, the figures
(or a rehearsal's log) and the suite's W&B summary run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.harness import stats
from bench.harness.collect import TABLES_DIR, CollectError, collect, summarize, write_tables
from bench.harness.config import Suite, load_suite
from bench.harness.store import REPO_ROOT


def run(args) -> dict:
    """``python -m bench collect SUITE [key=value …]``: write the tables and figures and a suite-summary W&B run
    (:func:`bench.harness.tracking.log_suite_summary`) as ``args`` say (``suite``, ``overrides``, ``root`` and
    the options of ``bench.harness.collect_options``); returns the tables' paths."""
    from bench.harness.figures import FIGURES_DIR, make_figures
    from bench.harness.rehearsal import REHEARSAL_DIR, is_rehearsal
    from bench.harness.rehearsal_log import store_root

    n_boot = stats.N_BOOT if args.n_boot is None else args.n_boot
    suite = load_suite(args.suite, args.overrides, rehearse=getattr(args, "rehearse", False))
    rehearsal = is_rehearsal(suite.spec)  # its table and log go to results/rehearsal/, never beside real tables
    root = store_root(args.root, suite.spec)
    tables = Path(args.tables or (REHEARSAL_DIR if rehearsal else TABLES_DIR))
    figures = Path(args.figures or FIGURES_DIR)
    check_output_folders(tables, *([] if rehearsal else [figures / suite.name]))
    if not args.overwrite and not rehearsal:  # a rehearsal's files are its latest one's, by design
        check_committed_outputs(suite, args.overrides, tables, figures)
    df = collect(suite, root, pool_mixed_code=args.pool_mixed_code)
    summary = summarize(df, suite, n_boot=n_boot)  # the suite's reference rows are checked here
    if not len(df) or not (df.drop_duplicates("cell_id")["state"] == "done").any():
        raise CollectError(nothing_done(suite, root, args.overrides, df))
    if not getattr(args, "force", False) and not rehearsal:  # a rehearsal's table is its latest one's
        check_not_fewer_done(suite, summary, tables, root)
    paths = write_tables(df, suite, tables, n_boot=n_boot, summary=summary)
    figs = [] if rehearsal else make_figures(df, summary, suite.name, figures)  # a rehearsal's numbers: no figures
    if rehearsal:
        from bench.harness.rehearsal_log import write_log

        log = write_log(suite, root, tables, rates_path=getattr(args, "gpu_rates", None))
        figs += list(log.values())
    counts = df.drop_duplicates("cell_id")["state"].value_counts().to_dict()
    print(f"suite {suite.name}: cells {counts}")
    for p in list(paths.values()) + figs:
        print(f"  wrote {p}")
    if not args.no_wandb:
        from bench.harness.tracking import log_suite_summary

        run_path = log_suite_summary(suite, summary, root, n_boot=n_boot)
        if run_path is not None:
            print(f"  W&B suite summary: {run_path}")
    return paths


def nothing_done(suite: Suite, root, overrides, df: pd.DataFrame) -> str:
    """Why ``collect`` writes nothing: none of the suite's cells is done in ``root`` (tables, figures and the W&B
    summary of an earlier collect are kept), and the recorded sweeps of the suite that have done cells."""
    from bench.harness.named_sweeps import sweeps_with_done_cells

    n = df["cell_id"].nunique() if len(df) else 0
    given = f" with the overrides {' '.join(overrides)}" if overrides else " as declared (no overrides)"
    head = (f"collect {suite.name}: none of its {n} cells{given} is done in {root}, so no table, figure or W&B "
            "summary is written (those of an earlier collect stay)")
    found = sweeps_with_done_cells(root, suite.name)
    if not found:
        return f"{head}; no sweep of {suite.name} recorded there has done cells: run the sweep first"
    named = ", ".join(f"{r.name} ({done} done: {' '.join(r.overrides) or 'no overrides'})" for r, done in found)
    return f"{head}; sweeps with done cells: {named}; collect one with --sweep NAME"


def check_not_fewer_done(suite: Suite, summary: pd.DataFrame, tables: Path, root) -> None:
    """Refuse (CollectError) to replace ``<tables>/<suite>.csv`` (its Markdown when the CSV is gone; and its LaTeX,
    figures) by a table holding fewer done results than it (``bench.harness.done_counts``): a store that lost or
    never had the results (a fresh clone, another ``--root``, overrides selecting other cells) leaves the table as it was."""
    from bench.harness.done_counts import fewer_done, table_done

    count, old = table_done(tables, suite.name)
    new = int(pd.to_numeric(summary.loc[~summary["published"].astype(bool), "n_done"], errors="coerce").fillna(0).sum())
    if problem := fewer_done(new, count, f"collect {suite.name}: the new table (results in {root})", old,
                             "run the sweep first (or give --root the store holding the results), or write the table "
                             "elsewhere with --tables DIR --figures DIR"):
        raise CollectError(problem)


def check_output_folders(*folders: Path) -> None:
    """Refuse (CollectError) an output folder that is a file, or lies inside a run folder of the store."""
    from bench.harness.store import run_folder_holding

    for folder in folders:
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise CollectError(f"collect: cannot write into {folder}: {blocker} is a file, not a folder; give "
                               "--tables/--figures a folder (or move the file away)")
        if held := run_folder_holding(folder / "x"):
            raise CollectError(f"collect: {folder} is inside the run folder {held} of the result store, where the "
                               "tables would mix with the cell's own files: give --tables/--figures elsewhere")


def _tracked(paths: list[Path]) -> list[Path]:
    """The ``paths`` git tracks in this repository (none where git is unavailable)."""
    import subprocess

    inside = [p for p in paths if p.resolve().is_relative_to(REPO_ROOT)]
    if not inside:
        return []
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files", "--", *map(str, inside)],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    listed = {(REPO_ROOT / line).resolve() for line in out.splitlines()}
    return [p for p in inside if p.resolve() in listed or any(x.is_relative_to(p.resolve()) for x in listed)]


def check_committed_outputs(suite: Suite, overrides, tables: Path, figures: Path) -> None:
    """Refuse (CollectError) to overwrite committed tables or figures of ``<name>`` (the README's demo
    table and figures) from anything but ``bench/suites/<name>.yaml`` without overrides."""
    from bench.harness.config import SUITES_DIR

    registered = SUITES_DIR / f"{suite.name}.yaml"
    same = registered.exists() and Path(suite.path).resolve() == registered.resolve() and not overrides
    if same:
        return
    targets = [tables / f"{suite.name}{ext}" for ext in (".md", ".tex", ".csv", "_cells.csv")] + [figures / suite.name]
    committed = _tracked(targets)
    if committed:
        made = f"{suite.path}" + (f" with overrides {' '.join(overrides)}" if overrides else "")
        raise CollectError(f"collect: suite {suite.name!r} from {made} would overwrite the committed "
                           f"{', '.join(str(p) for p in committed)} (made by {registered}); give --tables DIR "
                           "--figures DIR elsewhere, or --overwrite to replace them")
