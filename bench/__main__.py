"""Command line of the suite: ``python -m bench <command> …``.

    run SUITE --cell ID [key=value …]      train one cell in this process
    sweep SUITE [key=value …] [--sweep NAME] --executor inline|local|slurm [--cluster PROFILE] [--force]
          [--retry-failed] [--no-wait] [--dry-run]   (records the sweep: <root>/<suite>/sweeps/<name>.yaml;
                                           --dry-run: each job array's script and cells, nothing submitted)
          [--rehearse]                    (every distinct full-scale configuration for a few steps: a REHEARSAL
                                           table and log of memory and time; any suite command takes --rehearse)
    status SUITE [key=value …]             every cell's state with its log path
    show SUITE [key=value …]               cells a sweep would run, resolved recipes, estimated GPU-hours
    collect SUITE [key=value …]            tables (md, tex, csv) and figures
    list                                   suites, their sweeps in the store and each sweep's cells by state
                                           (run, status and collect take a sweep's overrides: --sweep NAME,
                                           by default the latest sweep when no key=value is given)
    migrate [--root DIR] [--dry-run]       move run folders made before a change of cell ids to their ids now
    demo                                   the demo suite end to end, then its table
    sync [PATH]                            upload offline W&B runs (wandb sync)
    readme                                 put the demo table into README.md
    evaluate CHECKPOINT … --data-root DIR --dataset D [--protocol P …] [--out J]   Recall@K of a checkpoint
                                           (ours or official; several = score-averaged ensemble)
    export RUN_DIR --format official OUT   a run's best checkpoint in the official program's layout
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bench.harness.store import DEFAULT_ROOT, REPO_ROOT
from bench.values import path_arg

README_BEGIN, README_END = "<!-- demo-table:begin -->", "<!-- demo-table:end -->"


def _suite_args(p, sweep_help: str | None = None):
    p.add_argument("suite", help="suite name (bench/suites/<name>.yaml) or path to a YAML file")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. scale=smoke seeds=[0,1]")
    p.add_argument("--root", type=path_arg, default=str(DEFAULT_ROOT),
                   help="result store (default results/runs; a rehearsal's: results/rehearsal/runs)")
    p.add_argument("--rehearse", action="store_true",
                   help="the suite's dress rehearsal: every distinct full-scale configuration for a few steps "
                        "(rehearsal.steps=N, rehearsal.eval_images=N, rehearsal.batch_size=N tune it)")
    p.add_argument("--sweep", default=None, metavar="NAME", help=sweep_help or (
        "the overrides of this recorded sweep (python -m bench list shows them); default: the latest sweep of "
        "the suite in --root when no key=value is given"))


def chosen_suite(args, latest_by_default: bool = True):
    """(the suite, the :class:`bench.harness.named_sweeps.Choice`) a command works on: ``--sweep NAME``, the
    overrides given, or the latest recorded sweep (saying which on stderr); with ``--rehearse`` its dress rehearsal
    (the overrides given), whose store is ``results/rehearsal/runs`` unless ``--root`` names another."""
    from bench.harness.named_sweeps import choose

    rehearse = getattr(args, "rehearse", False)
    choice = choose(args.suite, args.overrides, args.root, args.sweep, latest_by_default and not rehearse)
    if choice.note:  # on stdout: stderr keeps its one line for an error
        print(choice.note, flush=True)
    return load(args, choice.suite, choice.overrides), choice


def load(args, suite: str, overrides) -> object:
    """The suite (its dress rehearsal with ``--rehearse``, ``bench.harness.rehearsal``); a rehearsal's store is
    ``results/rehearsal/runs`` unless ``--root`` names another (``args.root`` is set)."""
    from bench.harness.config import load_suite
    from bench.harness.rehearsal_log import store_root

    loaded = load_suite(suite, overrides, rehearse=getattr(args, "rehearse", False))
    args.root = str(store_root(args.root, loaded.spec))
    return loaded


def _rehearsal_log_arg(p):
    p.add_argument("--rehearsal-log", default=None,
                   help="the rehearsal log checked before submitting (default results/rehearsal/<table>-rehearsal-log"
                        ".json, written by sweep --rehearse)")


def check_rehearsal(suite, cells, executor: str, args, profile: dict | None = None) -> list[str]:
    """A real table's latest rehearsal (``bench.harness.rehearsal_log``): its configurations that failed or need
    more memory than requested stop the command (``error:`` lines, exit 2; memory only for SLURM), time over the
    limit is a ``warning:`` (stderr); returns the ``note:`` lines on what was never rehearsed (the caller prints them
    on stdout after its own output)."""
    from bench.harness.rehearsal_log import check_before_submission
    from bench.harness.sweep import cell_states

    states = cell_states(cells, Path(args.root), query_slurm=False)
    todo = [c for c in cells if states[c.id]["state"] != "done"]
    found = check_before_submission(suite, todo, executor, getattr(args, "rehearsal_log", None), profile)
    for kind, lines in (("warning", found.warnings), ("error", found.errors)):
        for line in lines:
            print(f"{kind}: {line}", file=sys.stderr)
    if found.errors:
        sys.exit(EXIT_USAGE)
    return [f"note: {line}" for line in found.notes]


def _rates_arg(p):
    p.add_argument("--gpu-rates", type=path_arg, default=None,
                   help="GPU rates of make bench-gpu for time estimates (default results/gpu-rates.json if present)")


def _store_args(p, force_help: str):
    """The options of how a cell runs (``bench.run_folder.RunOptions``; :func:`run_options` reads them)."""
    p.add_argument("--force", action="store_true", help=force_help)
    p.add_argument("--wait-lock", action="store_true",
                   help="wait for a cell another process is training instead of skipping it")
    p.add_argument("--allow-code-change", action="store_true",
                   help="resume a checkpoint written by other code (both commits are recorded in the provenance)")


def run_options(args):
    """The :class:`bench.run_folder.RunOptions` of a ``run`` or ``sweep`` command line."""
    from bench.run_folder import RunOptions

    return RunOptions(force=args.force, wait_lock=args.wait_lock, allow_code_change=args.allow_code_change)


def check_data_roots(suite, cells) -> None:
    """Before anything is submitted or trained: every input the cells will read (``bench.inputs``: data
    roots, split files, vocabularies, Karpathy captions and images, local pretrained folders); one
    ``error:`` line per cause naming the cells it affects, exit 2."""
    from bench.harness.show import input_problems

    lines = input_problems(suite, cells)
    for line in lines:
        print(f"error: {line}", file=sys.stderr)
    if lines:
        sys.exit(EXIT_USAGE)


def check_eccv_ids(cells) -> None:
    """Before any cell trains: every cell reporting ECCV Caption and CxC on COCO 5K (``eval.eccv``, the
    default) evaluates a split whose COCO ids are the annotations' (:func:`bench.eccv.check_cell`); each
    (dataset, input kind) once."""
    from bench import eccv
    from bench.data.errors import DataError
    from bench.registry_facts import matcher_attr

    seen = set()
    for cell in cells:
        kind = matcher_attr(cell.matcher.name, "input_kind")
        key = (cell.dataset, kind, eccv.wanted(cell))
        if key in seen:
            continue
        seen.add(key)
        try:
            eccv.check_cell(cell, kind)
        except DataError as e:
            fail(str(e))


def cmd_run(args):
    from bench.harness.cells import expand
    from bench.harness.store import run_cell_in_store

    suite, choice = chosen_suite(args)
    cells = expand(suite)
    match = [c for c in cells if c.id.startswith(args.cell)]
    if len(match) != 1:
        fail(_no_such_cell(args, suite, choice, cells, match))
    check_data_roots(suite, match)
    check_eccv_ids(match)
    from dataclasses import replace

    from bench.harness.store import anchor_problem
    from bench.harness.sweep import anchor_ids

    if why := anchor_problem(match[0], args.root):  # before anything is written: no `failed` folder for it
        fail(f"cell {match[0].id}: {why}: train that baseline first (`run --cell {match[0].depends_on[0]}` with the same "
             "suite and overrides, or a sweep of the suite, which trains the baselines first)")

    out = run_cell_in_store(match[0], args.root, replace(run_options(args), anchors=anchor_ids(cells)))
    print(f"{out['state']}: {out['run_dir']}")
    if out["state"] == "locked":
        from bench.harness.store import lock_path

        print(f"error: cell {match[0].id} is being trained by another process now (its lock "
              f"{lock_path(match[0], args.root)} is held): nothing was done; --wait-lock waits for it", file=sys.stderr)
        sys.exit(EXIT_LOCKED)
    if out.get("signal") and out["state"] == "done":
        sys.exit(f"stopped by {out['signal']} during the final evaluation: the cell finished and its result is kept")
    if out.get("signal"):
        sys.exit(f"stopped by {out['signal']}: last.pt saved; the same command resumes the cell")


def _no_such_cell(args, suite, choice, cells, match) -> str:
    """The error of a ``--cell`` prefix that names no cell (or several): the nearest ids with their full names,
    and the recorded sweeps of the suite that hold the id."""
    import difflib

    from bench.harness.cells import describe

    where = f"sweep {choice.sweep.name} of suite {suite.name}" if choice.sweep else f"suite {suite.name}"
    if match:
        head, shown = f"--cell {args.cell!r} matches {len(match)} of the {len(cells)} cells of {where}", match
    else:
        ids = [c.id for c in cells]
        near = difflib.get_close_matches(args.cell, [i[:len(args.cell)] for i in ids], n=5, cutoff=0.0)
        shown = [c for p in dict.fromkeys(near) for c in cells if c.id.startswith(p)][:5]
        head = f"--cell {args.cell!r} matches none of the {len(cells)} cells of {where}"
        others = _sweeps_holding(args, suite.name, args.cell, choice)
        if others:
            head += f"; it is a cell of {', '.join(others)}"
    listed = "; ".join(f"{c.id} {describe(c)}" for c in shown)
    return f"{head}; give a longer prefix of one id. {'Matching' if match else 'Nearest'}: {listed}"


def _sweeps_holding(args, suite_name: str, prefix: str, choice) -> list[str]:
    """``sweep NAME (--sweep NAME)`` for each other recorded sweep of the suite with a cell id starting ``prefix``."""
    from bench.harness.named_sweeps import list_sweeps, sweep_cells

    out = []
    for record in list_sweeps(args.root, suite_name):
        if choice.sweep is not None and record.name == choice.sweep.name:
            continue
        try:
            if any(c.id.startswith(prefix) for c in sweep_cells(record)):
                out.append(f"sweep {record.name} (--sweep {record.name})")
        except Exception:  # noqa: BLE001 - a sweep that no longer loads holds nothing to suggest
            continue
    return out


def _bad_input(message: str):
    """One clear line, exit code 2 (bad input found before anything ran)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def cmd_sweep(args):
    from bench.harness.dryrun import dry_run
    from bench.harness.rehearsal import generate_inputs, is_rehearsal
    from bench.harness.slurm import ProfileError, ResourceError
    from bench.harness.sweep import sweep

    if args.executor is None:  # a rehearsal measures each cell's memory in a process of its own
        args.executor = "local" if args.rehearse else "inline"
    ignored = [o for o, given in (("--cluster", args.cluster), ("--no-wait", args.no_wait),
                                  ("--dry-run", args.dry_run)) if given]
    if ignored and args.executor != "slurm":
        both = len(ignored) > 1
        fail(f"{' and '.join(ignored)} {'apply' if both else 'applies'} to --executor slurm only, not "
             f"{args.executor} (which would ignore {'them' if both else 'it'}); add --executor slurm or leave "
             f"{' and '.join(ignored)} out")
    if args.executor == "slurm" and not args.cluster:
        fail("--executor slurm needs --cluster PROFILE (a name in slurm/profiles/ or a path, e.g. "
             "slurm/profiles/example-gpu.yaml): the profile says where jobs go and what the cluster allows")
    suite, choice = _sweep_suite(args)
    rehearsal = is_rehearsal(suite.spec)
    if rehearsal:  # the generated data and weights it reads where the user gives none (kept when there)
        generate_inputs(suite.spec, log=lambda line: print(line, file=sys.stderr))
    from bench.harness.cells import expand
    from bench.harness.named_sweeps import check_sweep_name

    check_sweep_name(args.root, suite.name, args.sweep, choice.overrides)

    try:
        cells, profile = expand(suite), None
        if args.executor == "slurm":  # what the cluster cannot hold is named before the data is looked at
            from bench.harness.slurm import load_profile
            from bench.harness.sweep import plan_arrays

            profile = load_profile(args.cluster)
            plan_arrays(cells, profile)
        check_data_roots(suite, cells)  # the dry run too: what the sweep would refuse, it refuses
        check_eccv_ids(cells)
        notes = check_rehearsal(suite, cells, args.executor, args, profile)
        if args.dry_run:  # submits nothing, records nothing
            print(dry_run(suite, root=args.root, cluster=args.cluster, force=args.force,
                          retry_failed=args.retry_failed, rates_path=args.gpu_rates))
            for line in notes:
                print(line)
            return
        _record(args, suite, choice)
        report = sweep(suite, executor=args.executor, root=args.root, cluster=args.cluster, options=run_options(args),
                       retry_failed=args.retry_failed, wait=not args.no_wait, rates_path=args.gpu_rates)
    except (ProfileError, ResourceError) as e:  # named before anything is submitted
        _bad_input(str(e).replace("\n", "\n  "))
    for line in notes:
        print(line)
    if rehearsal:
        _rehearsal_report(suite, args)
    if code := _report(suite, report):  # a failed or blocked cell: exit 1 (`sweep && collect` stops)
        sys.exit(code)


def _rehearsal_report(suite, args) -> None:
    """A rehearsal's log (``bench.harness.rehearsal_log``: cells, peak memory vs request, s/step, what was
    reduced), written beside its table, and its summary."""
    import shlex

    from bench.harness.rehearsal_log import log_folder, read_log, summary_lines, write_log

    paths = write_log(suite, args.root, log_folder(args.root), command="python -m bench " + shlex.join(sys.argv[1:]),
                      rates_path=getattr(args, "gpu_rates", None))
    for line in summary_lines(read_log(paths["json"])):
        print(line)
    print(f"rehearsal log: {paths['md']} ({paths['json'].name}, read by the sweep of the real table); table: "
          f"python -m bench collect {shlex.join([args.suite, *args.overrides])} --rehearse")


def _sweep_suite(args):
    """A sweep's suite: the recorded sweep ``--sweep NAME`` run again (no key=value given), else the suite with
    the overrides given (recorded under ``--sweep NAME`` or a name of its own when it runs)."""
    from bench.harness.named_sweeps import Choice, list_sweeps, suite_name_of

    recorded = args.sweep is not None and not args.overrides and any(
        r.name == args.sweep for r in list_sweeps(args.root, suite_name_of(args.suite)))
    if recorded:
        return chosen_suite(args)
    return load(args, args.suite, args.overrides), Choice(args.suite, list(args.overrides), None, None)


def _record(args, suite, choice):
    """Record the sweep in the store (``bench.harness.named_sweeps``), saying where."""
    from bench.harness.named_sweeps import record_sweep

    given = choice.sweep.suite if choice.sweep else args.suite
    record = record_sweep(args.root, given, suite.name, suite.path, choice.overrides, name=args.sweep)
    print(f"sweep {record.name} ({'run ' + str(record.runs) + ' times' if record.runs > 1 else 'new'}): {record.path}; "
          f"`python -m bench status {suite.name} --root {shlex.quote(str(args.root))}` shows it (the latest), --sweep {record.name} "
          "names it", flush=True)  # stdout: an error that follows stays the one line of stderr
    return record


def _report(suite, report) -> int:
    """Print the sweep's states and errors; its exit code: 0 when no cell failed or is blocked, else
    ``EXIT_FAILED`` (a stop by a signal exits here with its message, code 1 too)."""
    _print_states(suite.name, report["states"])
    for cid, error in report.get("errors", {}).items():
        print(f"cell {cid} failed: {error}", file=sys.stderr)
    if report.get("signal"):
        interrupted = [cid for cid, s in report["states"].items() if s.get("interrupted")]
        left = [cid for cid, s in report["states"].items() if s["state"] not in ("done", "failed")]
        if interrupted:
            sys.exit(f"sweep stopped by {report['signal']}: {len(interrupted)} running cell(s) saved last.pt and are "
                     f"interrupted ({', '.join(interrupted)}); a plain sweep resumes them")
        sys.exit(f"sweep stopped by {report['signal']}: no cell was interrupted (a cell finishing its evaluation "
                 f"kept its result); {len(left)} cell(s) not run yet, a plain sweep runs them")
    bad = sorted({s["state"] for s in report["states"].values()} & {"failed", "blocked"})
    if bad:
        print(f"some cells are {' or '.join(bad)} (exit code {EXIT_FAILED}); see their log and `--retry-failed` to "
              "rerun only the failed ones", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _print_states(name, states):
    from collections import Counter

    counts = Counter(s["state"] for s in states.values())
    print(f"suite {name}: {len(states)} cells: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for cid, s in states.items():
        extra = f"  job {s['job_id']}" if "job_id" in s else ""
        err = "".join(f"  {s[k]}" for k in ("error", "unverified", "note") if s.get(k))
        print(f"  {cid}  {s['state']:<8} {s['run_dir']}{extra}{err}")


def cmd_status(args):
    from bench.harness.cells import expand, topological_order
    from bench.harness.config import recipe_label
    from bench.harness.sweep import cell_states

    suite, _ = chosen_suite(args)
    cells = topological_order(expand(suite))
    _print_states(suite.name, cell_states(cells, Path(args.root)))
    print(f"recipes (as composed now; a run records its own in result.json, cell.recipe): "
          f"{recipe_label(suite.spec.get('recipes'))}")
    from bench.harness.migrate import waiting_moves

    if moves := waiting_moves(cells, args.root):
        print(f"{len(moves)} cell(s) of this suite have results under the ids of an earlier version "
              f"({', '.join(m.folder.name for m in moves)}): `python -m bench migrate --root {shlex.quote(str(args.root))}` moves them")


def cmd_show(args):
    from bench.harness.show import show

    suite, _ = chosen_suite(args, latest_by_default=False)
    try:
        text = show(suite, Path(args.root), rates_path=args.gpu_rates)
    except ValueError as e:  # an unreadable GPU rates file
        _bad_input(str(e))
    print(text)
    from bench.harness.cells import expand

    cells = expand(suite)
    check_data_roots(suite, cells)  # the plan above, then what a sweep of it would refuse
    for line in check_rehearsal(suite, cells, "slurm", args):
        print(line)


def cmd_collect(args):
    from bench.harness import collect_command

    _, choice = chosen_suite(args)
    args.suite, args.overrides = choice.suite, choice.overrides
    paths = collect_command.run(args)
    print(paths["md"].read_text())  # the suite's own table (its `name:`, not the file's stem)


def cmd_demo(args):
    from bench.harness.config import load_suite
    from bench.harness.sweep import sweep

    suite = load_suite("demo", args.overrides)
    from bench.harness.named_sweeps import Choice

    _record(argparse.Namespace(root=args.root, suite="demo", sweep=None), suite,
            Choice("demo", list(args.overrides), None, None))
    # Local jobs: the demo's 1-CPU cells run side by side, one per core (1.7x the cells per minute of
    # one 2-thread cell at a time on 2 cores); each line printed is a cell that finished.
    report = sweep(suite, executor="local", root=args.root)
    if code := _report(suite, report):
        sys.exit(code)  # no table from a demo with failed cells
    cmd_collect(build_parser().parse_args(["collect", "demo", *args.overrides, "--root", args.root,
                                           *(["--force"] if args.force else [])]))
    print(f"W&B runs (offline unless you have an API key): {args.root}/demo/<cell>/wandb — `make sync` uploads "
          "them; figures: results/figures/demo/; `make readme` puts this table into README.md")


def cmd_list(args):
    from bench.harness.config import available_suites, load_suite
    from bench.harness.named_sweeps import SWEEPS_DIR, describe_counts, list_sweeps, state_counts

    root = Path(args.root)
    in_store = sorted(p.parent.name for p in root.glob(f"*/{SWEEPS_DIR}") if p.is_dir())
    print(f"suites (bench/suites/) and their sweeps in {root}:")
    for name in dict.fromkeys([*available_suites(), *in_store]):
        registered = name in available_suites()
        about = load_suite(name).spec.get("description", "") if registered else "(a suite file outside bench/suites/)"
        print(f"{name}: {about}")
        for record in list_sweeps(root, name):
            try:
                counts = describe_counts(state_counts(record, root))
            except Exception as e:  # noqa: BLE001 - a sweep whose suite no longer loads is listed with why
                counts = f"cannot be read now ({type(e).__name__}: {str(e).splitlines()[0]})"
            print(f"  sweep {record.name}  last run {record.updated}  {' '.join(record.overrides) or '(no overrides)'}")
            print(f"    {counts}")
        if not list_sweeps(root, name):
            print("  no sweeps")


def cmd_migrate(args):
    from bench.harness.migrate import migrate

    root = Path(args.root)
    if not root.is_dir():
        fail(f"--root {root} is not a folder: give the result store to migrate (default {DEFAULT_ROOT})")
    migrate(root, dry_run=args.dry_run)


def _offline_runs_in(path: Path) -> list[Path]:
    """``path`` itself when it is an offline W&B run, else the offline runs under it (none for a file)."""
    from bench.harness.tracking import offline_runs

    if not path.is_dir():
        return []
    return [path] if any(path.glob("run-*.wandb")) else offline_runs(path)


def cmd_sync(args):
    from bench.harness.tracking import offline_runs

    if not args.paths and not Path(args.root).is_dir():
        fail(f"--root {args.root}: no such results folder; give --root the store whose offline W&B runs to upload "
             f"(default {DEFAULT_ROOT})")
    given = [Path(p) for p in args.paths]
    missing = [str(p) for p in given if not p.exists()]
    if missing:
        fail(f"{', '.join(missing)} does not exist; give offline W&B run folders (<run>/wandb/offline-run-*) "
             "or none for every offline run under --root")
    empty = [str(p) for p in given if not _offline_runs_in(p)]
    if empty:
        fail(f"{', '.join(empty)}: no offline W&B run there (a folder <run>/wandb/offline-run-* holding a run-*.wandb "
             "file); give such folders, folders holding them, or none for every offline run under --root")
    runs = [run for p in given for run in _offline_runs_in(p)] or offline_runs(args.root)
    if not runs:
        print(f"no offline W&B runs under {args.root}")
        return
    from bench.harness import wandb_sync

    sys.exit(wandb_sync.sync(runs, args.dry_run, args.timeout))


def cmd_readme(args):
    table = Path(args.table)
    if not table.exists():
        fail(f"{table} does not exist: run `make demo` first")
    readme = REPO_ROOT / "README.md"
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        fail(f"README.md lacks the markers {README_BEGIN} … {README_END}")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    lines = table.read_text().strip().splitlines()
    if not lines or not lines[0].startswith("# Suite `demo`"):
        print(f"error: {table} is not the demo suite's table (its first line: {lines[0][:60] if lines else 'empty'!r}); "
              "README.md shows the demo's table: give results/tables/demo.md (make demo writes it)", file=sys.stderr)
        sys.exit(2)
    from bench.harness.done_counts import fewer_done, md_done

    shown_now = rest.split(README_END, 1)[0]
    if not args.force and (problem := fewer_done(md_done("\n".join(lines)), md_done(shown_now), f"{table}",
                                                 "the demo table README.md shows now",
                                                 "give the table of a store holding the results (make demo)")):
        fail(problem)
    body = "\n".join(f"**{line[2:]}** (regenerate with `make demo` then `make readme`)"
                     if line.startswith("# ") else line for line in lines)
    # the headline figure: the paired ΔRSUM of each strategy with the interval of the verdict (figures.py)
    found = sorted((REPO_ROOT / "results" / "figures" / "demo").glob("delta_rsum_*.png"))
    fig = f"\n\n![ΔRSUM against the baseline]({found[0].relative_to(REPO_ROOT).as_posix()})" if found else ""
    from bench.atomic import atomic_write_bytes

    # whole or not at all: a full disk leaves README.md as it was
    try:
        atomic_write_bytes(readme, f"{head}{README_BEGIN}\n{body}{fig}\n{README_END}{tail}".encode(),
                           fault="readme.write")
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"README.md: demo table from {table}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="train one cell in this process")
    _suite_args(p)
    p.add_argument("--cell", required=True, help="cell id (or a unique prefix)")
    _store_args(p, "train the cell again from scratch (a done result is replaced when the new one is complete)")
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("sweep", help="run the pending cells of a suite")
    _suite_args(p, "record the sweep under this name (default: the sweep with the same overrides, else the "
                   "time); with no key=value, run the recorded sweep NAME again")
    p.add_argument("--executor", choices=["inline", "local", "slurm"], default=None,
                   help="inline: one cell after another in this process (the default); local: a process per cell; "
                        "with --rehearse the default is local, so each cell's peak memory is its own")
    p.add_argument("--cluster", type=path_arg, default=None, help="SLURM profile name or path (slurm/profiles/*.yaml)")
    p.add_argument("--retry-failed", action="store_true", help="re-run only the failed cells")
    p.add_argument("--no-wait", action="store_true", help="slurm: submit and return")
    p.add_argument("--dry-run", action="store_true",
                   help="slurm: print each job array's sbatch script and cells; submit nothing (no cluster needed)")
    _rates_arg(p)
    _rehearsal_log_arg(p)
    _store_args(p, "re-run every cell (done ones are replaced when complete)")
    p.set_defaults(fn=cmd_sweep)
    p = sub.add_parser("status", help="every cell's state")
    _suite_args(p)
    p.set_defaults(fn=cmd_status)
    p = sub.add_parser("show", help="the cells a sweep would run, their recipes and estimated device hours")
    _suite_args(p, "the overrides of this recorded sweep (default: the overrides given)")
    _rates_arg(p)
    _rehearsal_log_arg(p)
    p.set_defaults(fn=cmd_show)
    p = sub.add_parser("collect", help="tables and figures")
    _suite_args(p)
    from bench.harness.collect_options import add_arguments as add_collect_arguments

    add_collect_arguments(p)
    p.set_defaults(fn=cmd_collect)
    p = sub.add_parser("demo", help="the demo suite end to end")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--root", type=path_arg, default=str(DEFAULT_ROOT))
    p.add_argument("--force", action="store_true",
                   help="write the demo table even when it holds fewer done results than the one it replaces")
    p.set_defaults(fn=cmd_demo)
    p = sub.add_parser("list", help="suites, their sweeps in the store and each sweep's cells by state")
    p.add_argument("--root", type=path_arg, default=str(DEFAULT_ROOT), help="result store (default results/runs)")
    p.set_defaults(fn=cmd_list)
    p = sub.add_parser("migrate", help="move run folders made before a change of cell ids to their ids now")
    p.add_argument("--root", type=path_arg, default=str(DEFAULT_ROOT), help="result store (default results/runs)")
    p.add_argument("--dry-run", action="store_true", help="print the moves, change nothing")
    p.set_defaults(fn=cmd_migrate)
    p = sub.add_parser("sync", help="upload offline W&B runs")
    p.add_argument("paths", nargs="*")
    p.add_argument("--root", type=path_arg, default=str(REPO_ROOT / "results"))
    p.add_argument("--dry-run", action="store_true")
    from bench.harness import wandb_sync

    p.add_argument("--timeout", type=wandb_sync.seconds, default=wandb_sync.TIMEOUT_S,
                   help=f"stop wandb sync after this many seconds without an end (default {wandb_sync.TIMEOUT_S})")
    p.set_defaults(fn=cmd_sync)
    p = sub.add_parser("readme", help="put the demo table into README.md")
    p.add_argument("--table", type=path_arg, default=str(REPO_ROOT / "results" / "tables" / "demo.md"))
    p.add_argument("--force", action="store_true",
                   help="put the table in even when it holds fewer done results than the one README.md shows")
    p.set_defaults(fn=cmd_readme)
    from bench.cli_eval import add_subparsers as add_checkpoint_commands

    add_checkpoint_commands(sub)  # evaluate, export
    for name, p in sub.choices.items():  # each command's --help ends with its exit codes
        p.formatter_class = argparse.RawDescriptionHelpFormatter
        p.epilog = exit_codes_text(EXIT_CODES.get(name, {}))
    return ap


def exit_codes_text(codes: dict[int, str]) -> str:
    """The ``exit codes:`` section of a command's ``--help``: its own codes (for 2, what it adds to bad input),
    and what every command means by 1 (also: an unexpected error) and 2 (bad input)."""
    bug, bad = "an unexpected error (a bug: its traceback is shown)", (
        "bad input: one line `error: <file or key>: <value>: <what is wrong>; <fix>`; nothing was run, trained "
        "or written")
    codes = dict(codes)
    codes[1] = f"{codes[1]}; also {bug}" if 1 in codes else bug
    codes[EXIT_USAGE] = f"{bad}; also {codes[EXIT_USAGE]}" if EXIT_USAGE in codes else bad
    return "exit codes:\n" + "\n".join(f"  {code}  {what}" for code, what in sorted(codes.items()))


# Errors a user can cause and fix (a bad suite, profile, checkpoint, data folder, path): printed as one
# ``error: …`` line, exit code 2. Named by module so that a command does not import what it never uses
# (an error of a module not imported cannot have been raised). Anything else is a bug: its traceback shows.
USER_ERRORS = (
    ("bench.harness.config", "ConfigError"),
    ("bench.harness.slurm", "ProfileError"),
    ("bench.harness.slurm", "SlurmUnavailable"),  # no SLURM client, configuration or controller here
    ("bench.harness.published", "PublishedCSVError"),  # a row of results/reference/published.csv
    ("bench.cli_eval", "EvaluateError"),
    ("models.official", "OfficialCheckpointError"),
    ("bench.data.errors", "DataError"),
    ("bench.checkpoint", "CheckpointError"),
    ("bench.train", "TrainingDiverged"),  # the schedule's lr (or the data) made the loss NaN: the fix is named
    ("bench.harness.collect", "CollectError"),
    ("bench.harness.store", "StoreError"),
    ("bench.harness.sweep", "SweepError"),
)
EXIT_FAILED = 1  # a cell failed, is blocked, or a signal stopped it (also Python's code for a traceback)
EXIT_USAGE = 2  # as argparse exits for a bad command line
EXIT_LOCKED = 3  # `run --cell`: another process trains the cell now (nothing was done)
#: What each command's exit codes mean (its --help lists them, README.md "Exit codes"); 2 is bad input everywhere.
EXIT_CODES: dict[str, dict[int, str]] = {
    "run": {0: "the cell is done (trained now, or found done)",
            EXIT_FAILED: "the cell failed, or SIGTERM / Ctrl-C stopped it (last.pt saved: the same command resumes)",
            EXIT_LOCKED: "another process trains the cell now (its lock is held): nothing was done; --wait-lock waits"},
    "sweep": {0: "no cell failed or is blocked (each is done, or queued or running elsewhere); --dry-run: printed",
              EXIT_FAILED: "some cell failed or is blocked, or SIGTERM / Ctrl-C stopped the sweep (a plain sweep "
                           "resumes; --retry-failed reruns the failed cells)"},
    "status": {0: "every cell's state was printed"},
    "show": {0: "the plan was printed and its inputs passed the checks"},
    "collect": {0: "the tables and figures were written",
                EXIT_USAGE: "a table holding fewer done results than the one it would replace (--force), or a "
                            "file that could not be written (the previous one is unchanged)"},
    "demo": {0: "every cell is done and the table written", EXIT_FAILED: "some cell failed (no table written)"},
    "migrate": {0: "the run folders were moved (or, --dry-run, listed)"},
    "sync": {0: "the offline runs were uploaded", EXIT_FAILED: "wandb sync failed or did not end within --timeout"},
    "readme": {0: "README.md shows the table", EXIT_FAILED: "README.md could not be written (it is unchanged)",
               EXIT_USAGE: "a table holding fewer done results than the one README.md shows (--force)"},
    "evaluate": {0: "the metrics were printed (and written with --out)"},
    "export": {0: "the checkpoint was written"},
}


def user_error(e: BaseException) -> bool:
    """Whether ``e`` is an expected user error (``USER_ERRORS`` or an OSError: a path, a full disk)."""
    if isinstance(e, OSError):
        return True
    return any(isinstance(e, getattr(sys.modules[m], name)) for m, name in USER_ERRORS if m in sys.modules)


#: The commands whose --root is the result store itself (``sync`` and ``migrate`` may be given a part of one).
STORE_COMMANDS = ("sweep", "run", "status", "collect", "show", "list", "demo")


def _inside_a_store(root: Path) -> str | None:
    """Why ``root`` is a part of a result store, not the store (a suite's folder or a run folder given as --root:
    every cell read as pending under it, and a sweep retrained them all into ``<root>/<suite>/``), or None."""
    if (root / "config.yaml").is_file() and any((root / f).exists() for f in ("done", "result.json", "last.pt")):
        store = root.parent.parent
        return (f"--root {root} is a run folder of the result store {store}, not a store: give --root {store} (every "
                "cell would read as pending here, and a sweep would train them all again inside this run folder)")
    if (root / "sweeps").is_dir() or (root.parent / ".locks" / root.name).is_dir():
        return (f"--root {root} is the folder of suite {root.name} in the result store {root.parent}, not a store: give "
                f"--root {root.parent} (every cell would read as pending here, and a sweep would train them all again "
                f"under {root / root.name})")
    return None


def fail(message: str) -> None:
    """Exit with one ``error: …`` line on stderr and exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def main(argv=None):
    args = parse_args(build_parser(), argv)
    root = getattr(args, "root", None)
    if root and Path(root).exists() and not Path(root).is_dir():
        fail(f"--root {root} is a file, not a results folder; give a folder (default {DEFAULT_ROOT})")
    if root and args.command in STORE_COMMANDS and (inside := _inside_a_store(Path(root))):
        fail(inside)
    try:
        args.fn(args)
    except KeyboardInterrupt:  # a second Ctrl-C (the first one stops a training cell after its step)
        print("error: stopped by Ctrl-C" + (
            " at once: the training cell is interrupted without a checkpoint of this step; `status` says how a plain "
            "sweep goes on (from its last.pt, or from scratch when it has none)"
            if args.command in ("run", "sweep", "demo") else ""), file=sys.stderr)
        sys.exit(EXIT_FAILED)
    except Exception as e:  # noqa: BLE001 - user errors become one line; the rest is re-raised
        if not user_error(e):
            raise
        fail(str(e).strip() or type(e).__name__)


def parse_args(ap: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse ``argv`` with ``key=value`` overrides accepted anywhere on the line.

    argparse stops filling a ``nargs="*"`` positional at the first option, so ``sweep oss --executor
    inline scale=smoke`` leaves ``scale=smoke`` unrecognised (and ``parse_intermixed_args`` refuses
    subparsers). Every subcommand that takes overrides (an ``overrides`` positional) gets the
    leftover ``key=value`` tokens appended in the order typed; anything else left over is the usual
    "unrecognized arguments" error.
    """
    args, extra = ap.parse_known_args(argv)
    overrides = [t for t in extra if "=" in t and not t.startswith("-")]
    rest = [t for t in extra if t not in overrides]
    if overrides and isinstance(getattr(args, "overrides", None), list):
        args.overrides = [*args.overrides, *overrides]
    else:
        rest = extra
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    return args


if __name__ == "__main__":
    main()
