"""What a cell will cost before it runs: planned steps, GPU-hours and the wall time a job should ask for.

Used by ``python -m bench show`` (every cell, per table, in total), the SLURM dry run and the sweep's time
requests (``bench.harness.sweep.plan_arrays``).

The estimate of a cell is its training (``planned steps × seconds per step``) plus its evaluations (a dev
evaluation after every epoch and the test protocols), × its GPUs. Seconds per step, in order:

1. done cells in the store (``cost`` of their ``result.json``, measured by the trainer on the device that
   ran them): the median over done cells of the same matcher (name and overrides), batch size and strategy,
   else of the same matcher and batch size with any strategy (scaled by forward passes per step); a done
   cell's measured time covers its evaluations too (``train_wall_s`` is the whole training call);
2. the GPU rates in ``results/gpu-rates.json`` (or ``--gpu-rates FILE``): ``batch_size /
   train_samples_per_s`` (× forward passes) in the mode of its schedule (``precision``, ``compile``; a mode
   without a rate takes the fp32 rate, said so), plus the evaluations at the file's seconds for a
   1,000-image × 5,000-caption evaluation, scaled by (images / 1,000)² for pairwise matchers (they score
   every pair) and linearly for dual encoders. The committed file holds the H200 rates measured on
   2026-12-04 (``shared/reference/gpu-rates-h200.md``, eager, before the precision and compile options
   existed, ``"source"`` says so) until ``make bench-gpu`` on a card replaces it; rates of a ``--quick`` or
   CPU run are refused (``"quick": true``): they are not GPU plans. A matcher the file lists under
   ``not_measured`` (``vse_infty_bert``) gets no estimate, and the output says why.

Planned steps per epoch: ``ceil(training captions / batch_size)``, at most ``max_steps_per_epoch``;
captions (and dev / test images) are counted in ``<data_root>/<dataset>/<split>_caps.txt`` when it exists,
else the published split sizes.

The wall time a job asks for (:func:`time_request`): the estimate × ``TIME_SAFETY_FACTOR`` +
``TIME_MARGIN_MIN``, rounded up to a step of ``TIME_STEPS_MIN`` (so cells of similar length share an array),
at most the cell's own ``resources.time_min`` and the cluster profile's ``max_time_min``. This module is the
one home of that factor.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bench.spec import Cell, canonical_json

GPU_RATES_FILE = Path(__file__).resolve().parents[2] / "results" / "gpu-rates.json"
TRAIN_CAPTIONS = {"f30k_precomp": 145_000, "coco_precomp": 566_435}  # 29,000 and 113,287 images × 5
SPLIT_IMAGES = {("f30k_precomp", "dev"): 1_014, ("f30k_precomp", "test"): 1_000, ("coco_precomp", "dev"): 5_000,
                ("coco_precomp", "test"): 1_000, ("coco_precomp", "testall"): 5_000}  # the SCAN precomp splits
CAPTIONS_PER_IMAGE = 5

#: Time a job asks for = estimate × factor + margin (start-up, data, checkpoints), rounded up to a step of the
#: ladder, at most the cell's ``resources.time_min`` and the profile's ``max_time_min``.
TIME_SAFETY_FACTOR = 1.5
TIME_MARGIN_MIN = 15
TIME_STEPS_MIN = (30, 60, 120, 180, 240, 360, 480, 720, 960, 1440, 2160, 2880, 4320, 5760, 10080)


# ----------------------------------------------------------------------------------------------- the data

def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def split_size(cell: Cell, split: str, cache: dict, captions: bool = False) -> tuple[int | None, str]:
    """(captions or images of ``split`` of the cell's dataset, "data" | "published size"): counted in
    ``<data_root>/<dataset>/<split>_caps.txt`` when it exists, else the published SCAN split."""
    ds = cell.dataset
    path = Path(ds.data_root) / ds.name / f"{split}_caps.txt" if ds.data_root else None
    key = (str(path) if path else ds.name, split)
    if key not in cache:
        if path is not None and path.is_file():
            cache[key] = (_count_lines(path), "data")
        elif split == "train":
            n = TRAIN_CAPTIONS.get(ds.name)
            cache[key] = (n, "published size")
        else:
            n = SPLIT_IMAGES.get((ds.name, split))
            cache[key] = (None if n is None else n * CAPTIONS_PER_IMAGE, "published size")
    n, source = cache[key]
    return (n if captions or n is None else n // CAPTIONS_PER_IMAGE), source


def train_captions(cell: Cell, cache: dict) -> tuple[int | None, str]:
    return split_size(cell, "train", cache, captions=True)


def planned_steps(cell: Cell, cache: dict | None = None) -> int | None:
    """Training steps the cell's schedule asks for (its stage only: an OAS cell's stage 2)."""
    cache = {} if cache is None else cache
    n, _ = train_captions(cell, cache)
    sched = cell.schedule
    if n is None:
        return None
    per_epoch = math.ceil(n / sched.batch_size)
    if sched.max_steps_per_epoch:
        per_epoch = min(per_epoch, sched.max_steps_per_epoch)
    return per_epoch * sched.epochs


def evaluations(cell: Cell, cache: dict | None = None) -> list[tuple[int, int]]:
    """(images, how many times) of the cell's evaluations: the dev evaluation after each epoch (at most
    ``eval.dev_images``) and each test protocol's folds."""
    from bench.protocols import PROTOCOLS

    cache = {} if cache is None else cache
    out = []
    dev, _ = split_size(cell, "dev", cache)
    if dev:
        out.append((min(dev, cell.eval.dev_images or dev), cell.schedule.epochs))
    for name in cell.eval.protocols or []:
        p = PROTOCOLS.get(name)
        n, _ = split_size(cell, p.split, cache) if p else (None, "")
        if n:
            out.append((n // p.n_folds, p.n_folds))
    return out


# ----------------------------------------------------------------------------------------------- the store

def _matcher_key(cell: Cell) -> str:
    return canonical_json(cell.matcher.to_dict())


def _strategy_key(cell: Cell) -> str:
    return canonical_json([cell.strategy.name, cell.strategy.params])


def gpus(cell: Cell) -> int:
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
    """The speed of every done cell under ``root`` (run folders ``<suite>/<id>``; a suite's ``sweeps`` folder
    holds no ``result.json``)."""
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


def forward_passes(cell: Cell) -> int:
    """Forward passes per step a strategy needs, relative to one model (for scaling a record): one per branch,
    as the trainer runs them."""
    from bench.spec import strategy_branches

    return strategy_branches(cell.strategy.name, cell.strategy.params)


# ----------------------------------------------------------------------------------------------- GPU rates

@dataclass(frozen=True)
class GpuRates:
    """Training throughput per matcher and mode on one card (``results/gpu-rates.json``, written by ``make
    bench-gpu`` or committed from a reference measurement, ``source``): ``rates[matcher][mode]
    ["train_samples_per_s"]``, mode one of ``fp32``, ``tf32``, ``bf16``, ``fp32+compile``, ``bf16+compile``;
    ``eval_1k_s[matcher]``: seconds of a 1,000-image × 5,000-caption evaluation; ``not_measured``:
    {matcher: why there is no rate}."""

    card: str
    torch: str
    date: str
    commit: str | None
    rates: dict[str, dict[str, dict[str, float | None]]]
    path: str
    source: str = "make bench-gpu"
    eval_1k_s: dict[str, float] = field(default_factory=dict)
    not_measured: dict[str, str] = field(default_factory=dict)

    def samples_per_s(self, matcher: str, mode: str) -> float | None:
        value = ((self.rates.get(matcher) or {}).get(mode) or {}).get("train_samples_per_s")
        return float(value) if value else None

    def describe(self) -> str:
        return f"{self.card}, {self.date} (torch {self.torch}, commit {self.commit or '-'}; {self.source})"


def load_gpu_rates(path: str | Path | None = None) -> GpuRates | None:
    """The GPU rates (default ``results/gpu-rates.json``), or None when there are none. A file that cannot be
    read as rates, or the rates of a ``--quick`` / CPU run, raises ``ValueError`` naming the file and the fix."""
    path = Path(path) if path is not None else GPU_RATES_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        rates = GpuRates(card=str(raw["card"]), torch=str(raw["torch"]), date=str(raw["date"]),
                         commit=raw.get("commit"), rates=dict(raw["rates"]), path=str(path),
                         source=str(raw.get("source") or "make bench-gpu"),
                         eval_1k_s={k: float(v) for k, v in (raw.get("eval_1k_s") or {}).items()},
                         not_measured=dict(raw.get("not_measured") or {}))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a GPU rates file ({type(e).__name__}: {e}); rerun make bench-gpu "
                         "or remove the file") from e
    if raw.get("quick") or rates.card.upper().startswith("CPU"):
        raise ValueError(f"{path}: rates of a --quick or CPU run of bench.benchmarks.gpu (card {rates.card}), not "
                         "GPU rates: give the rates of make bench-gpu on a GPU (or the committed "
                         "results/gpu-rates.json)")
    return rates


def rate_mode(cell: Cell) -> str:
    """The ``make bench-gpu`` mode a cell trains in: its schedule's ``precision`` (default fp32) and
    ``compile``."""
    mode = str(cell.schedule.precision or "fp32")
    return f"{mode}+compile" if cell.schedule.compile else mode


def eval_seconds(cell: Cell, rates: GpuRates, cache: dict | None = None) -> float | None:
    """Seconds of the cell's evaluations (:func:`evaluations`) at the rates' 1,000 × 5,000 evaluation time of its
    matcher (scaled by (images / 1,000)² for a pairwise matcher, linearly for a dual encoder); None without one."""
    from bench.spec import matcher_fact

    per_1k = rates.eval_1k_s.get(cell.matcher.name)
    if per_1k is None:
        return None
    power = 1 if matcher_fact(cell.matcher.name, "dual_encoder") else 2
    return sum(per_1k * (n / 1000) ** power * times for n, times in evaluations(cell, cache))


# ----------------------------------------------------------------------------------------------- estimates

@dataclass(frozen=True)
class Estimate:
    """A cell's estimated GPU-hours (None: no estimate) and what it is based on."""

    hours: float | None
    basis: str
    from_rates: bool = False


def estimate_cell(cell: Cell, records: list[StepRecord], steps: int | None, rates: GpuRates | None = None,
                  cache: dict | None = None) -> Estimate:
    """The GPU-hours of one cell: from done cells in the store (``records``), else from the GPU ``rates`` of its
    matcher (training and evaluations)."""
    if steps is None:
        return Estimate(None, "no training-set size")
    m, bs, strat = _matcher_key(cell), cell.schedule.batch_size, _strategy_key(cell)
    same = [r for r in records if r.matcher == m and r.batch_size == bs and r.strategy == strat]
    if same:
        step = statistics.median(r.step_time_s for r in same)
        basis = f"{len(same)} done cell(s) of this matcher, batch and strategy"
    else:
        like = [r for r in records if r.matcher == m and r.batch_size == bs]
        if not like:
            return _rate_estimate(cell, steps, rates, cache)
        step = statistics.median(r.step_time_s / r.forward_passes for r in like) * forward_passes(cell)
        basis = f"{len(like)} done cell(s) of this matcher and batch, x{forward_passes(cell)} forward passes"
    return Estimate(steps * step * gpus(cell) / 3600.0, basis)


def estimate(cell: Cell, records: list[StepRecord], steps: int | None,
             rates: GpuRates | None = None) -> tuple[float | None, str]:
    """(GPU-hours, basis) of :func:`estimate_cell`."""
    e = estimate_cell(cell, records, steps, rates)
    return e.hours, e.basis


def _rate_estimate(cell: Cell, steps: int, rates: GpuRates | None, cache: dict | None) -> Estimate:
    if rates is None:
        return Estimate(None, "no recorded step time for this matcher and batch size")
    name = cell.matcher.name
    if name in rates.not_measured:
        return Estimate(None, f"{name}: {rates.not_measured[name]} ({rates.path})")
    mode = rate_mode(cell)
    per_s, used = rates.samples_per_s(name, mode), mode
    if per_s is None and mode != "fp32":
        per_s, used = rates.samples_per_s(name, "fp32"), "fp32"
    if per_s is None:
        return Estimate(None, f"no recorded step time for this matcher and batch size, no {mode} rate in {rates.path}")
    step = cell.schedule.batch_size / per_s * forward_passes(cell)
    evals = eval_seconds(cell, rates, cache)
    seconds = steps * step + (evals or 0.0)
    mode_note = mode if used == mode else f"fp32 for a {mode} cell (no {mode} rate)"
    eval_note = f" + evaluations {evals / 60:.0f} min" if evals is not None else " (evaluations not estimated)"
    return Estimate(seconds * gpus(cell) / 3600.0, f"{per_s:.0f} samples/s {mode_note} on {rates.card}, "
                    f"x{forward_passes(cell)} forward passes{eval_note}", from_rates=True)


def wall_minutes(cell: Cell, gpu_hours: float | None) -> float | None:
    """A cell's estimated wall time in minutes from its estimated GPU-hours (hours / its GPUs)."""
    if gpu_hours is None:
        return None
    return gpu_hours * 60 / gpus(cell)


def time_request(cell: Cell, gpu_hours: float | None, max_time_min: int | None = None) -> tuple[int | None, str]:
    """(minutes a job of this cell asks for, why): the estimated wall time × ``TIME_SAFETY_FACTOR`` +
    ``TIME_MARGIN_MIN``, rounded up to the ladder ``TIME_STEPS_MIN``, at most the cell's ``resources.time_min``
    and ``max_time_min`` (the profile's cap); without an estimate the cell's ``resources.time_min``."""
    own = cell.resources.time_min if cell.resources else None
    wall = wall_minutes(cell, gpu_hours)
    if wall is None:
        minutes, why = own, "the cell's resources.time_min (no estimate)"
    else:
        need = wall * TIME_SAFETY_FACTOR + TIME_MARGIN_MIN
        minutes = next((s for s in TIME_STEPS_MIN if s >= need), math.ceil(need))
        why = f"estimate {wall:.0f} min x {TIME_SAFETY_FACTOR:g} + {TIME_MARGIN_MIN} min"
        if own is not None and own < minutes:
            minutes, why = own, f"{why}, at most the cell's resources.time_min"
    if max_time_min is not None and minutes is not None and minutes > max_time_min:
        minutes, why = max_time_min, f"{why}, capped by the profile's max_time_min"
    return minutes, why


def cell_estimates(cells: list[Cell], root: str | Path, rates_path: str | Path | None = None) -> dict[str, Estimate]:
    """{cell id: :class:`Estimate`} of ``cells`` (done cells in ``root``, else the GPU rates)."""
    records, rates, cache = recorded_step_times(Path(root)), load_gpu_rates(rates_path), {}
    return {c.id: estimate_cell(c, records, planned_steps(c, cache), rates, cache) for c in cells}


def hours_of(estimates: dict[str, Estimate]) -> dict[str, float | None]:
    return {cid: e.hours for cid, e in estimates.items()}
