"""What a dress rehearsal measured (``bench.harness.rehearsal``), written for a user to plan with, and read back
before the real table is submitted.

:func:`write_log` reads every cell of a rehearsal suite in the store and writes ``<dir>/<suite>-log.md`` (for a
reader) and ``<dir>/<suite>-log.json`` (what a sweep reads; ``<suite>`` ends in ``-rehearsal``). Per cell:

- its state (a failed cell's error line and log);
- peak memory beside what the cell requests (``resources.mem_gb``): the trainer's host high-water mark
  (``cost.peak_rss_mb``, what a job's ``--mem`` must hold; on a CPU rehearsal it also holds the model,
  activations and optimiser state a GPU would), and on a GPU torch's peak allocation (``peak_gpu_mb``) beside
  the card's memory;
- seconds per step on the device that ran it (the mean over its steps, the first one's warm-up included);
- the full-scale cell's planned steps (the published split sizes unless the rehearsal read the user's own data)
  and its extrapolated training time beside its time limit (``resources.time_min``): steps × seconds per step
  from the GPU rates of ``make bench-gpu`` (``results/gpu-rates.json``) where its matcher was measured, from this
  rehearsal's own seconds per step when it ran on a GPU, else none (a CPU's time is not a GPU plan);
- what is wrong: peak memory over the request, time over the limit, the cell failed.

:func:`check_before_submission` is what ``sweep``, its dry run and ``show`` of the real table say before anything
is submitted: each configuration whose rehearsal failed or needed more memory than its cells request is an
``error`` (a SLURM sweep and its dry run stop, exit 2; inline and local sweeps, which request no memory, warn),
each over its time limit a warning (a cut cell resumes from its checkpoint, at the cost of a requeue); a table
never rehearsed, or configurations its rehearsal did not run, are named in a note. A configuration is matched by
what decides its memory and speed (:func:`config_key`: dataset, matcher and its arguments less the weights
folders, strategy and parameters, batch size, precision, compile), not by its id.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.harness.cells import describe, expand, topological_order
from bench.harness.config import Suite
from bench.harness.estimate import estimate, load_gpu_rates, planned_steps, wall_minutes
from bench.harness.rehearsal import REHEARSAL_DIR, REHEARSAL_ROOT, SUFFIX, is_rehearsal, table_name
from bench.harness.store import DEFAULT_ROOT, git_info, load_result
from bench.provenance import REPO_ROOT
from bench.spec import Cell, Rehearsal, canonical_json

GB = 1024.0  # MiB per GiB: memory is shown in GiB, as SLURM's --mem=<N>G


def config_key(cell: Cell) -> str:
    """What decides a cell's memory and speed: dataset, matcher with its arguments (less the local weights
    folders: their content does not change the architecture the cell names), strategy with its parameters,
    batch size, precision, compile. A rehearsal cell and the full-scale cells it stands for share it."""
    from bench.weights import weights_args

    folders = set(weights_args(cell.matcher.name))
    sched = cell.schedule
    return canonical_json({"dataset": cell.dataset.name,
                           "matcher": {k: v for k, v in cell.matcher.to_dict().items() if k not in folders},
                           "strategy": [cell.strategy.name, cell.strategy.params], "batch_size": sched.batch_size,
                           "precision": sched.precision, "compile": sched.compile})


def log_paths(table: str, folder: str | Path | None = None) -> dict[str, Path]:
    """``{"md", "json"}``: the log of table ``table``'s rehearsal in ``folder`` (default ``results/rehearsal``)."""
    base = Path(folder or REHEARSAL_DIR) / f"{table}{SUFFIX}-log"
    return {"md": base.with_suffix(".md"), "json": base.with_suffix(".json")}


def store_root(root: str | Path, spec: dict) -> Path:
    """A rehearsal's result store: ``results/rehearsal/runs`` (``bench.harness.rehearsal.REHEARSAL_ROOT``) when
    ``root`` is the default store (``results/runs``), else ``root``; a real suite's: ``root``."""
    if is_rehearsal(spec) and Path(root).resolve() == Path(DEFAULT_ROOT).resolve():
        return REHEARSAL_ROOT
    return Path(root)


def log_folder(root: str | Path) -> Path:
    """Where a rehearsal sweep writes its log: ``results/rehearsal/`` for the default rehearsal store
    (``results/rehearsal/runs``), else the store ``root`` itself (``collect --rehearse`` writes it with the table,
    in ``--tables``)."""
    return REHEARSAL_DIR if Path(root).resolve() == REHEARSAL_ROOT.resolve() else Path(root)


# ----------------------------------------------------------------------------------------------- measuring


def full_scale(cell: Cell, spec: dict) -> Cell:
    """The cell a rehearsal cell stands for, as a plan counts it: no rehearsal, and the published split sizes
    when the rehearsal read generated data."""
    out = cell.replace(rehearsal=None)
    if "data" in (spec.get("generated") or {}) or generated_data(out.dataset.data_root):
        out = out.replace(dataset=replace(out.dataset, data_root=None, vocab_root=None))
    return out


def generated_data(data_root: str | None) -> bool:
    """Whether ``data_root`` holds data of ``bench.data.synth`` (its ``MANIFEST.json``), whose sizes plan nothing."""
    try:
        manifest = json.loads((Path(data_root) / "MANIFEST.json").read_text())
    except (TypeError, OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("generator") == "bench.data.synth"


def extrapolated(full: Cell, cost: dict, rates) -> tuple[float | None, str]:
    """(minutes, basis): the full-scale cell's training time from GPU rates, or this rehearsal's own seconds per
    step when it ran on a GPU; None on a CPU without a rate."""
    steps = planned_steps(full)
    if steps is None:
        return None, "no training-set size"
    device = str(cost.get("device") or "")
    if device.startswith("cuda") and cost.get("step_time_s"):
        return steps * float(cost["step_time_s"]) / 60.0, f"this rehearsal's s/step on {device}"
    hours, basis = estimate(full, [], steps, rates)
    if hours is None:
        return None, f"no GPU rate of {full.matcher.name} (make bench-gpu): a CPU's s/step is no GPU plan"
    return wall_minutes(full, hours), basis


@dataclass
class Entry:
    """One cell of a rehearsal: what it is, what it asks for, what it used."""

    id: str
    name: str
    config: str
    state: str
    error: str | None = None
    mem_request_gb: float | None = None
    time_limit_min: float | None = None
    peak_rss_gb: float | None = None
    rss_start_gb: float | None = None  # of the peak, what the process held when the cell began
    peak_gpu_gb: float | None = None
    gpu_total_gb: float | None = None
    step_time_s: float | None = None
    steps_run: int | None = None
    device: str | None = None
    planned_steps: int | None = None
    extrapolated_min: float | None = None
    time_basis: str = ""
    batch_reduced: bool = False
    problems: list = field(default_factory=list)

    def judge(self) -> None:
        """``problems``: what the full-scale cells of this configuration would hit after their GPU is allocated."""
        self.problems = []
        if self.state == "failed":
            self.problems.append(f"failed: {self.error}")
        elif self.state != "done":
            self.problems.append(f"not run ({self.state})")
        if self.peak_rss_gb is not None and self.mem_request_gb and self.peak_rss_gb > self.mem_request_gb \
                and not self.batch_reduced:
            self.problems.append(f"peak memory {self.peak_rss_gb:.1f} GB > request {self.mem_request_gb:g} GB")
        if self.peak_gpu_gb is not None and self.gpu_total_gb and self.peak_gpu_gb > 0.95 * self.gpu_total_gb:
            self.problems.append(f"GPU memory {self.peak_gpu_gb:.1f} of the card's {self.gpu_total_gb:.1f} GB")
        if self.extrapolated_min is not None and self.time_limit_min and self.extrapolated_min > self.time_limit_min:
            self.problems.append(f"time {self.extrapolated_min:,.0f} min > limit {self.time_limit_min:g} min")


def _entry(cell: Cell, state: dict, spec: dict, rates) -> Entry:
    res = cell.resources
    e = Entry(id=cell.id, name=describe(cell), config=config_key(cell), state=state["state"],
              mem_request_gb=res.mem_gb if res else None, time_limit_min=res.time_min if res else None,
              batch_reduced=bool(cell.rehearsal and cell.rehearsal.batch_size not in (None, cell.schedule.batch_size)))
    if e.state == "failed":
        e.error = state.get("error")
    result = load_result(state["run_dir"]) if e.state == "done" else None
    cost = (result or {}).get("cost") or {}
    if cost:
        rss = cost.get("peak_rss_mb", cost.get("peak_mem_mb") if str(cost.get("device", "")).startswith("cpu") else None)
        e.peak_rss_gb = None if rss is None else rss / GB
        e.rss_start_gb = cost["rss_start_mb"] / GB if cost.get("rss_start_mb") is not None else None
        e.peak_gpu_gb = cost["peak_gpu_mb"] / GB if cost.get("peak_gpu_mb") is not None else None
        e.gpu_total_gb = cost["gpu_total_mb"] / GB if cost.get("gpu_total_mb") is not None else None
        e.step_time_s, e.steps_run, e.device = cost.get("step_time_s"), cost.get("steps"), cost.get("device")
    full = full_scale(cell, spec)
    e.planned_steps = planned_steps(full)
    if cost:
        e.extrapolated_min, e.time_basis = extrapolated(full, cost, rates)
    e.judge()
    return e


def measure(suite: Suite, root: str | Path, rates_path: str | Path | None = None) -> dict:
    """The log of a rehearsal suite's cells in store ``root`` (a dict, as the JSON file holds it)."""
    from bench.harness.sweep import cell_states

    if not is_rehearsal(suite.spec):
        raise ValueError(f"suite {suite.name} is not a rehearsal (no `rehearsal:`; sweep --rehearse makes one)")
    cells = topological_order(expand(suite))
    states = cell_states(cells, Path(root), query_slurm=False)
    rates = load_gpu_rates(rates_path)
    entries = [_entry(c, states[c.id], suite.spec, rates) for c in cells]
    plan = Rehearsal.from_dict(suite.spec["rehearsal"])
    reduced: dict = {}
    for c in cells:
        for what, (published, rehearsed) in plan.reduced(c.schedule, c.eval).items():
            reduced.setdefault(what, {}).setdefault(_shown(rehearsed), set()).add(_shown(published))
    return {"table": table_name(suite.spec), "suite": suite.name, "suite_file": _where(suite.path),
            "date": time.strftime("%Y-%m-%d %H:%M %Z"), "commit": git_info().get("commit"),
            "rehearsal": plan.to_dict(), "seed": suite.spec["seeds"][0], "scale": suite.spec["scale"],
            "reduced": {what: {r: sorted(p) for r, p in v.items()} for what, v in reduced.items()},
            "data": _data_note(suite.spec), "weights": _weights_note(suite.spec),
            "gpu_rates": _where(rates.path) if rates else None, "root": _where(root),
            "cells": [e.__dict__ for e in entries]}


def _where(path) -> str:
    """A path as the log shows it: from the repository root when it is inside it (a log committed from one
    checkout reads the same in another), else as it is."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _shown(v) -> str:
    return "all" if v is None else f"{v:,}" if isinstance(v, int) else str(v)


def _data_note(spec: dict) -> str:
    generated = spec.get("generated") or {}
    if "data" in generated:
        return (f"{_where(generated['data'])} (generated: python -m bench.data.synth --preset rehearsal, the published "
                "shapes with few images)")
    roots = sorted({d.get("data_root") or spec.get("data_root") or "$DATA" for d in spec["datasets"]})
    return ", ".join(roots) + " (given)"


def _weights_note(spec: dict) -> dict:
    generated = spec.get("generated") or {}
    return {kind: f"{_where(folder)} ({'generated: published architecture, random weights' if kind in generated else 'given'})"
            for kind, folder in (spec.get("weights") or {}).items() if folder}


# ----------------------------------------------------------------------------------------------- writing


def _gb(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def _markdown(log: dict, command: str | None) -> str:
    cells = log["cells"]
    states: dict = {}
    for c in cells:
        states[c["state"]] = states.get(c["state"], 0) + 1
    flagged = [c for c in cells if c["problems"]]
    r = log["rehearsal"]
    lines = [f"# REHEARSAL of table `{log['table']}` (suite `{log['suite']}`): measurements to plan with, not results",
             "",
             f"Every distinct configuration of the table at {log['scale']} scale (one seed, {log['seed']}: seeds change "
             f"only the random state), run for at most {r['epochs']} epoch(s) of {r['steps']} step(s) with its "
             "published model, recipe, precision and resources, then evaluated on a small slice through the same "
             "code path. Its Recall@K numbers mean nothing; what it says is whether each configuration runs, and "
             "what it needs.",
             "",
             f"- made by: `{command or 'python -m bench sweep ' + log['table'] + ' --rehearse'}`, {log['date']}, "
             f"commit {(log['commit'] or '?')[:10]}",
             f"- data: {log['data']}",
             *(f"- weights `{k}`: {v}" for k, v in log["weights"].items()),
             "- reduced (rehearsed ← full scale): " + "; ".join(
                 f"{what} {r_} ← {', '.join(p)}" for what, by in log["reduced"].items() for r_, p in by.items()),
             f"- cells: {len(cells)} (" + ", ".join(f"{k} {v}" for k, v in sorted(states.items())) + f"); "
             f"{len(flagged)} with a problem",
             f"- time basis: {'GPU rates of ' + log['gpu_rates'] if log['gpu_rates'] else 'no GPU rates file'}; "
             "planned steps from the published split sizes unless the data is the user's own",
             "",
             "| cell | dataset/matcher/strategy | state | peak memory GB (host) | of it at start GB | request GB "
             "| GPU peak GB | s/step | device | planned steps | extrapolated min | limit min | problems |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        ext = "-" if c["extrapolated_min"] is None else f"{c['extrapolated_min']:,.0f}"
        steps = "-" if c["planned_steps"] is None else f"{c['planned_steps']:,}"
        step = "-" if c["step_time_s"] is None else f"{c['step_time_s']:.2f}"
        lines.append(f"| {c['id']} | {c['name']} | {c['state']} | {_gb(c['peak_rss_gb'])} | {_gb(c.get('rss_start_gb'))} | "
                     f"{c['mem_request_gb']} | "
                     f"{_gb(c['peak_gpu_gb'])} | {step} | {c['device'] or '-'} | {steps} | {ext} | "
                     f"{c['time_limit_min']} | {'; '.join(c['problems']) or 'none'} |")
    bases = sorted({c["time_basis"] for c in cells if c["time_basis"]})
    lines += ["", "Extrapolated time: " + ("; ".join(bases) if bases else "none") + ".",
              "Peak memory: the trainer's process high-water mark while the cell ran (on a CPU it also holds what "
              "a GPU would); of it at start: what the process held when the cell began (Python, torch and the "
              "data's headers in a process of its own, as `--executor local` and `slurm` give each cell; after other "
              "cells in one `--executor inline` process also what they left allocated, so a peak is then too high); "
              "s/step: the mean over the cell's steps, the first one's warm-up included."]
    return "\n".join(lines) + "\n"


def write_log(suite: Suite, root: str | Path, folder: str | Path | None = None, command: str | None = None,
              rates_path: str | Path | None = None) -> dict[str, Path]:
    """Write the rehearsal's log (``<folder>/<suite>-log.{md,json}``, default ``results/rehearsal``); returns the paths."""
    from bench.atomic import atomic_write_bytes

    log = measure(suite, root, rates_path)
    log["command"] = command
    paths = log_paths(log["table"], folder)
    paths["md"].parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(paths["json"], (json.dumps(log, indent=1, sort_keys=True) + "\n").encode())
    atomic_write_bytes(paths["md"], _markdown(log, command).encode())
    return paths


def summary_lines(log: dict) -> list[str]:
    """A few lines for the terminal: the counts and every cell with a problem."""
    cells = log["cells"]
    done = sum(c["state"] == "done" for c in cells)
    out = [f"REHEARSAL of table {log['table']}: {len(cells)} configuration(s), {done} done, "
           f"{sum(c['state'] == 'failed' for c in cells)} failed"]
    out += [f"  {c['id']}  {c['name']}: {'; '.join(c['problems'])}" for c in cells if c["problems"]]
    return out


# ----------------------------------------------------------------------------------------------- before submitting


def read_log(path: str | Path) -> dict | None:
    try:
        log = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return log if isinstance(log, dict) and isinstance(log.get("cells"), list) else None


@dataclass
class Findings:
    """What a table's latest rehearsal says about the cells about to be submitted."""

    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def _limits(cell: Cell, profile: dict | None) -> tuple[float | None, float | None, str]:
    """(memory GB, minutes) a cell's job gets: its ``resources``, capped by the cluster ``profile`` when given."""
    res = cell.resources
    if res is None:
        return None, None, ""
    if profile is None:
        return res.mem_gb, res.time_min, ""
    from bench.harness.slurm import job_request

    got = job_request(res, profile).resources
    capped = " (capped by the cluster profile)" if (got.mem_gb, got.time_min) != (res.mem_gb, res.time_min) else ""
    return got.mem_gb, got.time_min, capped


def check_before_submission(suite: Suite, cells: list[Cell], executor: str, log_path: str | Path | None = None,
                            profile: dict | None = None) -> Findings:
    """Findings (module docstring) for the not-yet-done ``cells`` of a real table from its latest rehearsal log
    (``log_path``, default ``results/rehearsal/<table>-rehearsal-log.json``), against what each job gets (its
    ``resources``, capped by the cluster ``profile`` of a SLURM sweep). Nothing for a rehearsal itself, nor for a
    table at another scale than full that was never rehearsed."""
    out = Findings()
    if is_rehearsal(suite.spec) or not cells:
        return out
    path = Path(log_path) if log_path else log_paths(suite.name)["json"]
    log = read_log(path)
    full = suite.spec["scale"] == "full"
    if log is None:
        if full:
            out.notes.append(f"table {suite.name} has no rehearsal ({path}): `make rehearse-{suite.name}` (python -m "
                             f"bench sweep {suite.name} --rehearse) runs each configuration for a few steps and "
                             "measures its memory and time before you submit")
        return out
    entries = {e["config"]: e for e in log["cells"]}
    by_config: dict[str, list[Cell]] = {}
    for c in cells:
        by_config.setdefault(config_key(c), []).append(c)
    missing = []
    made = f"rehearsal {path} ({log.get('date')}, commit {(log.get('commit') or '?')[:10]})"
    for key, group in by_config.items():
        e = entries.get(key)
        ids = ", ".join(c.id for c in group)
        what = f"{describe(group[0]).rsplit('/', 1)[0]} (cells {ids})"
        if e is None:
            missing.append(what)
            continue
        matcher = group[0].matcher.name
        mem, minutes_allowed, capped = _limits(group[0], profile)
        if e["state"] == "failed":
            out.errors.append(f"{made}: {what}: its rehearsal failed ({e.get('error')}); the full-scale cells would "
                              f"fail the same way after their GPU is allocated: fix it and rehearse again "
                              f"(make rehearse-{suite.name})")
        peak = e.get("peak_rss_gb")
        if peak is not None and mem and peak > mem and not e.get("batch_reduced"):
            line = (f"{made}: {what}: peak memory {peak:.1f} GB > resources.mem_gb {mem:g} GB{capped}; raise it "
                    f"(resources.{matcher}.mem_gb={math.ceil(peak * 1.25)}) or the job is killed for memory")
            (out.errors if executor == "slurm" else out.warnings).append(line)
        minutes = e.get("extrapolated_min")
        if minutes is not None and minutes_allowed and minutes > minutes_allowed:
            out.warnings.append(f"{made}: {what}: training extrapolated to {minutes:,.0f} min ({e.get('planned_steps'):,} "
                                f"steps, {e.get('time_basis')}) > resources.time_min {minutes_allowed:g} min{capped}: "
                                "a cut cell resumes from its checkpoint at the cost of a requeue "
                                f"(resources.{matcher}.time_min={math.ceil(minutes * 1.2)})")
    if missing and (full or len(missing) < len(by_config)):
        out.notes.append(f"{len(missing)} configuration(s) of table {suite.name} not in its {made}: "
                         + "; ".join(missing) + f" (make rehearse-{suite.name} measures them)")
    return out
