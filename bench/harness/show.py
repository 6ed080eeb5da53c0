"""``python -m bench show SUITE [key=value …]``: what a sweep would run, before it runs.

Prints the suite's recipes (name, version = content hash, file), the resolved schedule of every
dataset × matcher (OAS stage 2 too), every cell with its state in the store, its planned number of
training steps and an estimate of its device hours, and the totals.

The estimate is ``planned steps × recorded seconds per step`` (× GPUs of the cell's resources when
it asks for GPUs). Seconds per step come from the finished cells already in the store (``cost``
of their ``result.json``, measured by the trainer on the device that ran them): the median over
done cells of the same matcher (name and overrides), batch size and strategy, else of the same
matcher and batch size with any strategy (scaled by forward passes per step). A cell with no such
record is estimated from the GPU rates of ``make bench-gpu`` when ``results/gpu-rates.json`` (or
``--gpu-rates FILE``) has its matcher: ``batch_size / train_samples_per_s`` seconds per step (× forward
passes), in the mode of its schedule (``precision``, ``compile``; fp32 by default); the output names
the card. Otherwise it gets no estimate, and the output says how many; train one cell of each matcher
first (``python -m bench run SUITE --cell ID``) to get one. Done cells show their recorded hours.
Beside each estimate: the cell's requested wall time (``resources.time_min``), with a warning when
it is below the estimated wall time (GPU-hours / GPUs); ``sweep --dry-run`` prints the same per array.

Planned steps per epoch: ``ceil(training captions / batch_size)``, at most ``max_steps_per_epoch``;
training captions are counted in ``<data_root>/<dataset>/train_caps.txt`` when it exists, else the
published split sizes (Flickr30K 145,000, COCO 566,435).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from bench.harness.cells import describe, expand, resolve_schedule, topological_order
from bench.harness.config import Suite, recipe_label
from bench.spec import Cell, canonical_json

GPU_RATES_FILE = Path(__file__).resolve().parents[2] / "results" / "gpu-rates.json"
TRAIN_CAPTIONS = {"f30k_precomp": 145_000, "coco_precomp": 566_435}  # 29,000 and 113,287 images × 5


def _train_captions(cell: Cell, cache: dict) -> tuple[int | None, str]:
    ds = cell.dataset
    path = Path(ds.data_root) / ds.name / "train_caps.txt" if ds.data_root else None
    key = str(path) if path else ds.name
    if key not in cache:
        if path is not None and path.is_file():
            with open(path, "rb") as f:
                cache[key] = (sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b"")), "data")
        else:
            cache[key] = (TRAIN_CAPTIONS.get(ds.name), "published size")
    return cache[key]


def planned_steps(cell: Cell, cache: dict | None = None) -> int | None:
    """Training steps the cell's schedule asks for (its stage only: an OAS cell's stage 2)."""
    cache = {} if cache is None else cache
    n, _ = _train_captions(cell, cache)
    sched = cell.schedule
    if n is None:
        return None
    per_epoch = math.ceil(n / sched.batch_size)
    if sched.max_steps_per_epoch:
        per_epoch = min(per_epoch, sched.max_steps_per_epoch)
    return per_epoch * sched.epochs


def _matcher_key(cell: Cell) -> str:
    return canonical_json(cell.matcher.to_dict())


def _strategy_key(cell: Cell) -> str:
    return canonical_json([cell.strategy.name, cell.strategy.params])


def _gpus(cell: Cell) -> int:
    return max(int((cell.resources.gpus if cell.resources else None) or 1), 1)


@dataclass(frozen=True)
class StepRecord:
    """What a done cell in the store says about its speed (its ``result.json``)."""

    id: str | None
    matcher: str  # the canonical JSON of the matcher (name and overrides)
    batch_size: int
    strategy: str  # the canonical JSON of [strategy, params]
    step_time_s: float
    forward_passes: int
    device: str
    hours: float


def _step_record(result: dict) -> StepRecord | None:
    cost = result.get("cost") or {}
    try:
        cell = Cell.from_dict(result.get("cell") or {})
    except (TypeError, ValueError):  # not a cell this code reads: no record
        return None
    if not cost.get("step_time_s"):
        return None
    return StepRecord(id=result.get("cell_id"), matcher=_matcher_key(cell), batch_size=cell.schedule.batch_size,
                      strategy=_strategy_key(cell), step_time_s=float(cost["step_time_s"]),
                      forward_passes=cost.get("forward_passes_per_step") or 1, device=cost.get("device", "?"),
                      hours=float(cost.get("gpu_hours") or 0.0) + float(cost.get("cpu_hours") or 0.0))


def recorded_step_times(root: Path) -> list[StepRecord]:
    """The speed of every done cell under ``root``."""
    out = []
    for result_file in sorted(Path(root).glob("*/*/result.json")):
        if not (result_file.parent / "done").exists():
            continue
        try:
            result = json.loads(result_file.read_text())
        except (OSError, ValueError):
            continue  # a torn result: `status` reports it
        record = _step_record(result) if isinstance(result, dict) else None
        if record is not None:
            out.append(record)
    return out


def _forward_passes(cell: Cell) -> int:
    """Forward passes per step a strategy needs, relative to one model (for scaling a record): one per branch,
    as the trainer runs them."""
    import strategies

    return len(strategies.build(cell.strategy.name, **cell.strategy.params).branches())


@dataclass(frozen=True)
class GpuRates:
    """Training throughput per matcher and mode measured by ``make bench-gpu`` on one card
    (``results/gpu-rates.json``): ``rates[matcher][mode]["train_samples_per_s"]``, mode one of
    ``fp32``, ``tf32``, ``bf16``, ``fp32+compile``, ``bf16+compile``."""

    card: str
    torch: str
    date: str
    commit: str | None
    rates: dict[str, dict[str, dict[str, float | None]]]
    path: str

    def samples_per_s(self, matcher: str, mode: str) -> float | None:
        value = ((self.rates.get(matcher) or {}).get(mode) or {}).get("train_samples_per_s")
        return float(value) if value else None


def load_gpu_rates(path: str | Path | None = None) -> GpuRates | None:
    """The rates of ``make bench-gpu`` (default ``results/gpu-rates.json``), or None when there are none.
    A file that cannot be read as rates raises ``ValueError`` naming the file and what is wrong."""
    path = Path(path) if path is not None else GPU_RATES_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        return GpuRates(card=str(raw["card"]), torch=str(raw["torch"]), date=str(raw["date"]),
                        commit=raw.get("commit"), rates=dict(raw["rates"]), path=str(path))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a GPU rates file ({type(e).__name__}: {e}); rerun make bench-gpu "
                         "or remove the file") from e


def rate_mode(cell: Cell) -> str:
    """The ``make bench-gpu`` mode a cell trains in: its schedule's ``precision`` (default fp32) and
    ``compile``."""
    mode = str(cell.schedule.precision or "fp32")
    return f"{mode}+compile" if cell.schedule.compile else mode


def estimate(cell: Cell, records: list[StepRecord], steps: int | None,
             rates: GpuRates | None = None) -> tuple[float | None, str]:
    """(GPU-hours, basis) for one cell: from done cells in the store (``records``), else from the
    measured GPU ``rates`` of its matcher; hours None when neither knows its matcher."""
    if steps is None:
        return None, "no training-set size"
    m, bs, strat = _matcher_key(cell), cell.schedule.batch_size, _strategy_key(cell)
    same = [r for r in records if r.matcher == m and r.batch_size == bs and r.strategy == strat]
    if same:
        step = statistics.median(r.step_time_s for r in same)
        basis = f"{len(same)} done cell(s) of this matcher, batch and strategy"
    else:
        like = [r for r in records if r.matcher == m and r.batch_size == bs]
        if not like:
            return _rate_estimate(cell, steps, rates)
        step = statistics.median(r.step_time_s / r.forward_passes for r in like) * _forward_passes(cell)
        basis = f"{len(like)} done cell(s) of this matcher and batch, x{_forward_passes(cell)} forward passes"
    return steps * step * _gpus(cell) / 3600.0, basis


def _rate_estimate(cell: Cell, steps: int, rates: GpuRates | None) -> tuple[float | None, str]:
    if rates is None:
        return None, "no recorded step time for this matcher and batch size"
    mode = rate_mode(cell)
    per_s = rates.samples_per_s(cell.matcher.name, mode)
    if per_s is None:
        return None, f"no recorded step time for this matcher and batch size, no {mode} rate in {rates.path}"
    step = cell.schedule.batch_size / per_s * _forward_passes(cell)
    return (steps * step * _gpus(cell) / 3600.0,
            f"{per_s:.0f} samples/s {mode} on {rates.card}, x{_forward_passes(cell)} forward passes")


def wall_minutes(cell: Cell, gpu_hours: float | None) -> float | None:
    """A cell's estimated wall time in minutes from its estimated GPU-hours (hours / its GPUs)."""
    if gpu_hours is None:
        return None
    return gpu_hours * 60 / _gpus(cell)


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
                lines.append(f"  {parameter_count(cell, counted):>13,}  {name}")
            except (OSError, ValueError, KeyError, TypeError) as e:
                lines.append(f"  {'-':>13}  {name} (an input cannot be read: {type(e).__name__}: {e})")
    return lines


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
    lines.append("cells (id, state, dataset/matcher/strategy/seed, planned steps, hours, requested time):")
    cache: dict = {}
    est_total, done_total, unknown, n_done, short, from_rates = 0.0, 0.0, 0, 0, 0, 0
    devices = sorted({r.device for r in records})
    by_id = {r.id: r for r in records}
    for c in cells:
        state = states[c.id]["state"]
        steps = planned_steps(c, cache)
        if state == "done" and c.id in by_id:
            hours, note = by_id[c.id].hours, "recorded"
            done_total += hours
            n_done += 1
        else:
            hours, note = estimate(c, records, steps, rates)
            if hours is None:
                unknown += 1
            else:
                est_total += hours
                from_rates += " samples/s " in note
                note = "estimate: " + note
        shown = "-" if hours is None else f"{hours:.3g} h"
        requested = c.resources.time_min if c.resources else None
        wall = wall_minutes(c, hours) if state != "done" else None
        time_note = f"; requested {requested} min" if requested else ""
        if wall is not None and requested and requested < wall:
            time_note += f" WARNING: below the estimated {wall:.0f} min"
            short += 1
        lines.append(f"  {c.id}  {state:<8} {describe(c):<48} {steps if steps is not None else '-':>8}  "
                     f"{shown} ({note}){time_note}")
    sources = sorted({_train_captions(c, cache)[1] for c in cells})
    lines.append(f"total: {est_total:.3g} h estimated for {len(cells) - unknown - n_done} pending cell(s), "
                 f"{done_total:.3g} h recorded for {n_done} done cell(s), {unknown} cell(s) without an estimate")
    lines.append(f"based on: seconds per step of {len(records)} done cell(s) in {root} "
                 f"(device: {', '.join(devices) or '-'}); steps from the schedule and the training captions "
                 f"({', '.join(sources)}); GPU-hours = hours x the cell's GPUs")
    if rates is not None:
        lines.append(f"  {from_rates} estimate(s) from GPU rates measured on {rates.card} (torch {rates.torch}, "
                     f"{rates.date}, {rates.path}; mode from the schedule's precision/compile, default fp32)")
    if short:
        lines.append(f"WARNING: {short} cell(s) request less time (resources.time_min) than estimated: a cut cell "
                     "resumes from its checkpoint, but costs a requeue and queue time")
    if unknown:
        lines.append("  for an estimate of every matcher, train one cell of each first "
                     f"(python -m bench run {suite.name} --cell ID)")
    return "\n".join(lines)
