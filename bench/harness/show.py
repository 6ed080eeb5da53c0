"""``python -m bench show SUITE [key=value …]``: what a sweep would run, before it runs.

Prints the suite's recipes (name, version = content hash, file), the resolved schedule of every
dataset × matcher (OAS stage 2 too), every cell with its state in the store, its planned number of
training steps, its estimated GPU-hours and the wall time its job would ask for, then the GPU-hours per
table (dataset) and in total, naming the card and the date of the rates they come from.

Estimates and time requests: ``bench.harness.estimate`` (done cells in the store, else the GPU rates of
``results/gpu-rates.json``: the committed H200 reference until ``make bench-gpu`` replaces it; a matcher
without a rate is named, never guessed). Done cells show their recorded hours. Beside each estimate: the
time its job asks for (estimate × safety factor, at most the cell's ``resources.time_min``), with a
warning when the cell's own request is below the estimated wall time; ``sweep --dry-run`` prints the same
per array.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from bench.harness.cells import describe, expand, resolve_schedule, topological_order
from bench.harness.config import Suite, recipe_label
from bench.harness.estimate import (  # noqa: F401 - re-exported (the estimate used to live here)
    GPU_RATES_FILE,
    GpuRates,
    estimate,
    estimate_cell,
    load_gpu_rates,
    planned_steps,
    rate_mode,
    recorded_step_times,
    time_request,
    train_captions,
    wall_minutes,
)
from bench.spec import Cell


def input_problems(suite: Suite, cells: list[Cell]) -> list[str]:
    """One line per cause for every problem with the inputs ``cells`` will read (``bench.inputs``: data,
    vocabularies, Karpathy captions and images, local pretrained folders), each naming the cells it affects."""
    from bench.inputs import check_cells, report_lines

    return [f"{suite.path}: {line}" for line in report_lines(check_cells(cells), describe)]


def parameter_lines(spec: dict, cells: list[Cell]) -> list[str]:
    """``  N  dataset/matcher`` per matcher row: the parameters of the model its cells build (on the meta
    device, from the data's headers and the pretrained folders' configs; ``-`` where an input is unreadable)."""
    from bench.inputs import check_cells, parameter_count

    lines, counted = [], {}
    for ds in spec["datasets"]:
        for m in spec["matchers"]:
            cell = next((c for c in cells if c.dataset_label == ds["label"] and c.matcher_label == m["label"]), None)
            if cell is None:
                continue
            name = f"{ds['label']}/{m['label']}"
            if check_cells([cell]):
                lines.append(f"  {'-':>13}  {name} (an input it reads is missing or wrong: see the errors below)")
                continue
            try:
                lines.append(f"  {_counted(cell, counted, parameter_count):>13,}  {name}")
            except (OSError, ValueError, KeyError, TypeError) as e:
                lines.append(f"  {'-':>13}  {name} (an input cannot be read: {type(e).__name__}: {e})")
    return lines


def _counted(cell: Cell, counted: dict, parameter_count) -> int:
    """``parameter_count(cell)``, remembered (``bench.registry_facts``) for this code, matcher and data (its
    fingerprint), so ``show`` counts without torch the second time; a cell reading a pretrained folder is counted
    each time (the folder is no part of the data's fingerprint)."""
    from bench import spec
    from bench.harness.store import cell_fingerprint
    from bench.registry_facts import remembered
    from bench.weights import weights_args

    if any(cell.matcher.overrides.get(arg) for arg in weights_args(cell.matcher.name)):
        return parameter_count(cell, counted)
    r = spec.resolve(cell)
    key = spec.canonical_json([r.matcher.to_dict(), r.matcher.defaults, r.schedule.caption_aug, cell_fingerprint(cell)])
    return remembered("parameter_count", key, lambda: parameter_count(cell, counted))


def _fmt_schedule(s: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in s.items() if k not in ("datasets", "oas_stage2"))


def show(suite: Suite, root: str | Path, rates_path: str | Path | None = None) -> str:
    """The text ``python -m bench show`` prints (see the module docstring)."""
    from bench.harness.sweep import cell_states

    spec, root = suite.spec, Path(root)
    cells = topological_order(expand(suite))
    states = cell_states(cells, root, query_slurm=False)
    records = recorded_step_times(root)
    rates = load_gpu_rates(rates_path)
    lines = [f"suite {suite.name} ({suite.path}), scale {spec['scale']}: {len(cells)} cells",
             f"recipes: {recipe_label(spec.get('recipes'))}"]
    for group, r in (spec.get("recipes") or {}).items():
        lines.append(f"  {group}={r['option']}@{r['version']}  {r['file']}  {r['description']}")
    lines.append("schedules (dataset/matcher: stage 1 | OAS stage 2 updates):")
    for ds in spec["datasets"]:
        for m in spec["matchers"]:
            if m["datasets"] is not None and ds["name"] not in m["datasets"]:
                continue
            base, stage2 = resolve_schedule(spec, m["name"], ds["name"])
            extra = f" | {_fmt_schedule(stage2)}" if stage2 else ""
            lines.append(f"  {ds['label']}/{m['label']}: {_fmt_schedule(base)}{extra}")
    lines.append("parameters of the model each dataset/matcher's cells build:")
    lines += parameter_lines(spec, cells)
    lines.append("cells (id, state, dataset/matcher/strategy/seed, planned steps, GPU-hours, job time):")
    cache: dict = {}
    totals = _Totals()
    devices = sorted({r.device for r in records})
    by_id = {r.id: r for r in records}
    for c in cells:
        state = states[c.id]["state"]
        steps = planned_steps(c, cache)
        if state == "done" and c.id in by_id:
            hours, note, from_rates = by_id[c.id].hours, "recorded", False
        else:
            e = estimate_cell(c, records, steps, rates, cache)
            hours, note, from_rates = e.hours, ("estimate: " + e.basis) if e.hours is not None else e.basis, e.from_rates
        done = state == "done" and c.id in by_id
        totals.add(c, hours, done, from_rates)
        shown = "-" if hours is None else f"{hours:.3g} h"
        lines.append(f"  {c.id}  {state:<8} {describe(c):<48} {steps if steps is not None else '-':>8}  "
                     f"{shown} ({note}){'' if done else _time_note(c, hours, totals)}")
    sources = sorted({train_captions(c, cache)[1] for c in cells})
    lines += totals.lines(rates)
    lines.append(f"based on: seconds per step of {len(records)} done cell(s) in {root} "
                 f"(device: {', '.join(devices) or '-'}); steps from the schedule and the training captions "
                 f"({', '.join(sources)}); GPU-hours = hours x the cell's GPUs")
    if totals.short:
        lines.append(f"WARNING: {totals.short} cell(s) request less time (resources.time_min) than estimated: a cut "
                     "cell resumes from its checkpoint, but costs a requeue and queue time")
    if totals.unknown:
        lines.append("  for an estimate of every matcher, train one cell of each first "
                     f"(python -m bench run {suite.name} --cell ID)")
    return "\n".join(lines)


def _time_note(cell, hours: float | None, totals: _Totals) -> str:
    """``; job time N min (why)`` of a cell not done, with a warning when its own request is below the estimate."""
    requested, why = time_request(cell, hours)
    note = f"; job time {requested} min ({why})" if requested else ""
    wall, own = wall_minutes(cell, hours), cell.resources.time_min if cell.resources else None
    if wall is not None and own and own < wall:
        note += f" WARNING: resources.time_min {own} min is below the estimated {wall:.0f} min"
        totals.short += 1
    if requested:
        totals.requested[cell.dataset_label or cell.dataset.name] += requested / 60 * _gpus(cell)
    return note


def _gpus(cell) -> int:
    return max(int((cell.resources.gpus if cell.resources else None) or 1), 1)


class _Totals:
    """GPU-hours per table (dataset) and in total: estimated (pending), recorded (done), requested."""

    def __init__(self) -> None:
        self.estimated: dict[str, float] = defaultdict(float)
        self.recorded: dict[str, float] = defaultdict(float)
        self.requested: dict[str, float] = defaultdict(float)
        self.counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # pending estimated, done, unknown
        self.unknown = self.from_rates = self.short = 0
        self.unknown_matchers: dict[str, None] = {}

    def add(self, cell, hours: float | None, done: bool, from_rates: bool) -> None:
        table = cell.dataset_label or cell.dataset.name
        if done:
            self.recorded[table] += hours
            self.counts[table][1] += 1
        elif hours is None:
            self.unknown += 1
            self.unknown_matchers[cell.matcher.name] = None
            self.counts[table][2] += 1
        else:
            self.estimated[table] += hours
            self.counts[table][0] += 1
            self.from_rates += from_rates

    def lines(self, rates: GpuRates | None) -> list[str]:
        card = f"{rates.card} ({rates.date})" if rates is not None else "-"
        out = ["GPU-hours per table (dataset):"]
        for table, (n_est, n_done, n_unknown) in self.counts.items():
            out.append(f"  {table}: {self.estimated[table]:.4g} estimated for {n_est} pending cell(s), "
                       f"{self.recorded[table]:.4g} recorded for {n_done} done, {self.requested[table]:.4g} requested"
                       + (f", {n_unknown} cell(s) without an estimate" if n_unknown else ""))
        n_est, n_done = sum(c[0] for c in self.counts.values()), sum(c[1] for c in self.counts.values())
        out.append(f"total: {sum(self.estimated.values()):.4g} GPU-hours estimated for {n_est} pending cell(s) "
                   f"({self.from_rates} from the GPU rates of {card}, {n_est - self.from_rates} from done cells), "
                   f"{sum(self.recorded.values()):.4g} recorded for {n_done} done cell(s), "
                   f"{sum(self.requested.values()):.4g} GPU-hours requested, {self.unknown} cell(s) without an estimate"
                   + (f" ({', '.join(self.unknown_matchers)}: not in the estimated total; requested at their "
                      "resources.time_min)" if self.unknown else ""))
        if rates is not None:
            out.append(f"  GPU rates: {rates.describe()}, {rates.path}; mode from the schedule's precision/compile, "
                       "default fp32")
        return out
