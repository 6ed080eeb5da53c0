"""The one training loop for every matcher × strategy.

``run_cell(cell, run_dir)`` trains the branches a strategy declares on one dataset, evaluates the
reported branch on dev after every epoch, keeps the best checkpoint by dev RSUM, and finally
evaluates that checkpoint under the dataset's test protocols. The loop itself is ``_train_epoch``:

    for batch in loader:
        scores = {b: model_b(batch) for b in branches}        # anchors without grad
        losses = strategy.losses(scores, ctx)                  # one loss per optimised branch
        sum(losses).backward(); clip(2.0); step(); EMA updates

Everything a resumed run needs is in ``last.pt`` (branches, EMA anchor, optimisers, RNG, epoch and
step, dev curve, best score): a run resumed from any checkpoint finishes with bitwise-equal metrics
on CPU. Data order and augmentation are functions of (seed, epoch, index), so skipping the batches
already done reproduces the same stream.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import logging
import math
import os
import random
import resource
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import models
import strategies
from bench import checkpoint as ckpt
from bench import distributed, eccv, spec
from bench.data.open import Data, open_data  # noqa: F401 - re-exported (tests)
from bench.data.vocab import other_vocabulary
from bench.faults import point as fault_point
from bench.metrics import retrieval_metrics
from bench.precision import RunMode, prepare_model
from bench.provenance import cell_fingerprint, git_info, source_fingerprint
from bench.spec import SCHEDULE_DEFAULTS  # noqa: F401 - the schedule's defaults, re-exported for the trainer's callers

log = logging.getLogger("bench.train")

CHECKPOINT_FORMAT = "itm-coop-bench/1"

#: Phases of a cell's time in ``cost["time_split_s"]`` (process start, imports and W&B set-up happen before
#: run_cell; ``other_s`` is the loop's remainder, e.g. the progress bar and lr updates).
TIME_SPLIT = ("setup_s", "data_s", "steps_s", "tracker_s", "checkpoint_s", "dev_eval_s", "test_eval_s")


class TrainingDiverged(RuntimeError):
    """A loss became NaN/inf; the last good checkpoint is kept."""


# --------------------------------------------------------------------------------------------
# configuration


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------
# branches


def build_matcher(cell: spec.Cell, data: Data) -> models.Matcher:
    """The cell's matcher; sizes that come from the data (vocabulary, region shape) and the schedule's
    weight decay are passed where the constructor takes them, and the cell's own overrides win."""
    return models.build(cell.matcher.name, **matcher_kwargs(cell, data.build_kwargs))


matcher_kwargs = spec.matcher_kwargs  # what the trainer builds a cell's matcher with (``bench.inputs`` counts it)


def build_strategy(cell: spec.Cell, model: models.Matcher) -> strategies.Strategy:
    # the arguments the trainer sets (spec.TRAINER_STRATEGY_ARGS): the matcher's loss, the rest from the schedule
    trainer_args = {k: model.base_loss if k == "base_loss" else getattr(cell.schedule, k)
                    for k in spec.TRAINER_STRATEGY_ARGS}
    return strategies.build(cell.strategy.name, **trainer_args, **cell.strategy.params)


def load_reported_weights(path: str | Path) -> dict:
    """The reported branch's weights from a run's ``best.pt`` (the OAS anchor/teacher)."""
    state = ckpt.load(path)
    if state.get("format") != CHECKPOINT_FORMAT or "weights" not in state:
        raise ckpt.CheckpointError(f"{path} is not a best-model checkpoint of this suite ({CHECKPOINT_FORMAT})")
    return state


def load_anchor_weights(path: str | Path, cell: spec.Cell, data: Data) -> dict:
    """The OAS anchor: this suite's ``best.pt`` (:func:`load_reported_weights`) or an official release
    (``models.official``, embedding fitted to the data's vocabulary) of the cell's matcher."""
    from models import official

    if official.detect(official.read(path), path) == "ours":
        return load_reported_weights(path)
    model, info = official.load(path, vocab_size=data.build_kwargs.get("vocab_size"))
    if info["matcher"]["name"] != cell.matcher.name:
        raise ckpt.CheckpointError(f"{path} is an {info['source']} (matcher {info['matcher']['name']}) but this "
                                   f"cell trains {cell.matcher.name}: use a checkpoint of the same matcher")
    return {"official": True, "matcher": info["matcher"], "source": info["source"], "weights": model.state_dict()}


def _make_branches(cell: spec.Cell, strategy, data, anchor_checkpoint):
    branches = {}
    matcher = cell.matcher.to_dict()
    anchor_state = None
    if strategy.needs_anchor_checkpoint:
        if anchor_checkpoint is None:
            raise ValueError(f"strategy {strategy.name!r} ({strategy.scenario}) needs the trained baseline "
                             "checkpoint of the same matcher/dataset/seed (anchor_checkpoint=.../best.pt)")
        anchor_state = load_anchor_weights(anchor_checkpoint, cell, data)
        if anchor_state.get("official"):
            pass  # a released checkpoint: its sizes are checked when loaded below
        elif anchor_state["matcher"] != matcher or anchor_state.get("vocab_size") != data.build_kwargs.get(
                "vocab_size"):
            raise ckpt.CheckpointError(
                f"{anchor_checkpoint} was trained with matcher {anchor_state['matcher']} and vocabulary size "
                f"{anchor_state.get('vocab_size')}, this cell uses {matcher} and "
                f"{data.build_kwargs.get('vocab_size')}: use the baseline run of the same matcher and data")
        elif why := other_vocabulary(anchor_checkpoint, anchor_state.get("vocab_fingerprint"), data.vocab):
            raise ckpt.CheckpointError(why)
    for b in strategy.branches():
        if b.init.startswith("copy:"):
            continue
        model = build_matcher(cell, data)
        if b.init == "checkpoint":
            try:
                model.load_state_dict(anchor_state["weights"])
            except RuntimeError as e:
                raise ckpt.CheckpointError(
                    f"{anchor_checkpoint} ({anchor_state.get('source', 'anchor')}, matcher {anchor_state['matcher']}) "
                    f"does not fit this cell's matcher {matcher}: give the matcher the checkpoint's sizes "
                    f"as overrides. {e}") from e
        branches[b.name] = model
    for b in strategy.branches():
        if b.init.startswith("copy:"):
            branches[b.name] = copy.deepcopy(branches[b.init.split(":", 1)[1]])
    for b in strategy.branches():
        if not b.optimised:
            for p in branches[b.name].parameters():
                p.requires_grad_(False)
    return branches


def _make_optimizer(model: models.Matcher, sched: spec.Schedule):
    """The matcher's optimiser over its parameter groups; weight decay: the schedule's (None: the
    matcher's published value), which is what ``resolve`` records. Groups may set their own (CLIP's
    gains and biases: 0)."""
    groups = model.param_groups(sched.lr)
    for g in groups:
        g["initial_lr"] = g["lr"]
    weight_decay = sched.weight_decay
    if weight_decay is None:
        weight_decay = float(getattr(model, "weight_decay", 0.0))
    extra = getattr(model, "optimizer_kwargs", {})  # e.g. CLIP's betas/eps
    if model.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=sched.lr, weight_decay=weight_decay, **extra)
    return torch.optim.Adam(groups, lr=sched.lr, weight_decay=weight_decay, **extra)


def train_augment(model: models.Matcher, sched: spec.Schedule) -> dict:
    """The training augmentation of a cell: the matcher's, with caption-token augmentation as the
    schedule's ``caption_aug`` says (the matcher's rule for ``<start>``/``<end>``)."""
    augment = dict(model.augment)
    if sched.caption_aug is not None:
        augment["token_aug"] = bool(sched.caption_aug)
    return augment


def lr_factor(epoch: int, sched: spec.Schedule) -> float:
    """Step schedule: lr × lr_decay^(number of decay epochs ≤ epoch); constant: 1."""
    if sched.lr_schedule == "constant":
        return 1.0
    if sched.lr_schedule != "step":
        raise ValueError(f"schedule.lr_schedule must be 'step' or 'constant', got {sched.lr_schedule!r}")
    return sched.lr_decay ** sum(1 for e in sched.lr_decay_epochs if epoch >= e)


@torch.no_grad()
def ema_update(anchor: torch.nn.Module, target: torch.nn.Module, momentum: float) -> None:
    """θ_anchor ← m·θ_anchor + (1 − m)·θ_target; buffers (BatchNorm statistics) are copied."""
    for pa, pt in zip(anchor.parameters(), target.parameters()):
        pa.mul_(momentum).add_(pt.detach(), alpha=1.0 - momentum)
    for ba, bt in zip(anchor.buffers(), target.buffers()):
        ba.copy_(bt)


# --------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def evaluate_dev(model, data: Data, cell: spec.Cell, device) -> dict:
    from bench.evaluate import encode_all, score_matrix

    n = min(cell.eval.dev_images, data.dev.n_images)
    imgs, caps = data.eval_batches(data.dev, cell.eval.batch_size, n_images=n)
    img_enc, cap_enc = encode_all(model, imgs, caps, device=device)
    fault_point("eval.dev")
    sims = score_matrix(model, img_enc, cap_enc, device=device)
    return retrieval_metrics(sims, captions_per_image=cell.dataset.captions_per_image)


@torch.no_grad()
def evaluate_test(model, data: Data, cell: spec.Cell, device) -> tuple[dict, dict]:
    """Metrics per protocol and per-query ranks (``"<protocol>/i2t"``, ``"<protocol>/t2i"``)."""
    from bench.evaluate import encode_all, score_matrix
    from bench.protocols import PROTOCOLS, evaluate_protocol, protocols_for

    names = cell.eval.protocols or [p.name for p in protocols_for(cell.dataset.name)]
    metrics, ranks = {}, {}
    by_split: dict[str, list[str]] = {}
    for name in names:
        by_split.setdefault(PROTOCOLS[name].split, []).append(name)
    for split_name, protos in by_split.items():
        split = data.test_splits[split_name]
        imgs, caps = data.eval_batches(split, cell.eval.batch_size, n_images=rehearsal_images(cell, split, protos))
        img_enc, cap_enc = encode_all(model, imgs, caps, device=device)
        fault_point("eval.test")
        sims = score_matrix(model, img_enc, cap_enc, device=device)
        for name in protos:
            m, r_i2t, r_t2i = evaluate_protocol(PROTOCOLS[name], sims, return_ranks=True)
            metrics[name] = {k: v for k, v in m.items() if k != "folds"}
            ranks[f"{name}/i2t"], ranks[f"{name}/t2i"] = np.asarray(r_i2t), np.asarray(r_t2i)
            if name == eccv.PROTOCOL and eccv.wanted(cell):  # ECCV Caption and CxC beside Recall@K
                metrics[name].update(eccv.coco_metrics(sims, first_images(eccv.split_ids(split, cell.dataset.data_root),
                                                                         sims.shape[0])))
    return metrics, ranks


def first_images(ids, n: int):
    """The COCO ids (``eccv.SplitIds``) of a split's first ``n`` images and their captions: what a rehearsal's slice
    of the split scores (``ids`` unchanged for the whole split)."""
    if n >= ids.n_images:
        return ids
    per_image = len(ids.caption_ids) // ids.n_images
    return dataclasses.replace(ids, image_ids=ids.image_ids[:n], caption_ids=ids.caption_ids[: n * per_image])


def rehearsal_images(cell: spec.Cell, split, protocols: list[str]) -> int | None:
    """Images of a test split a rehearsal evaluates (``Rehearsal.eval_images``, cut to a multiple of the folds of
    the protocols that read the split, at most the split); None (the whole split) for a real cell."""
    from bench.protocols import PROTOCOLS

    if cell.rehearsal is None:
        return None
    folds = math.lcm(*(PROTOCOLS[p].n_folds for p in protocols))
    return min(split.n_images, max(folds, cell.rehearsal.eval_images // folds * folds))


def eval_sizes(cell: spec.Cell, data: Data) -> dict:
    """What each test protocol evaluated (``cell`` resolved): ``{protocol: {images, captions, folds, fold_images,
    captions_per_image}}`` (result.json's ``eval_data``: the tables say it beside the numbers; a rehearsal's slice)."""
    from bench.protocols import PROTOCOLS, protocols_for

    out = {}
    names = cell.eval.protocols or [p.name for p in protocols_for(cell.dataset.name)]
    for name in names:
        p = PROTOCOLS[name]
        split = data.test_splits[p.split]
        n = rehearsal_images(cell, split, [q for q in names if PROTOCOLS[q].split == p.split]) or int(split.n_images)
        out[name] = {"images": n, "captions": int(split.n_captions) * n // int(split.n_images), "folds": p.n_folds,
                     "fold_images": n // p.n_folds,
                     "captions_per_image": int(cell.dataset.captions_per_image or p.captions_per_image)}
    return out


# --------------------------------------------------------------------------------------------
# the run


@dataclass
class RunState:
    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # batches of the current epoch done
    global_step: int = 0
    best_rsum: float = -math.inf
    best_epoch: int = -1
    dev_curve: list = field(default_factory=list)
    step_time_sum: float = 0.0
    steps_timed: int = 0
    train_wall_s: float = 0.0
    code_changes: list = field(default_factory=list)  # resumes allowed across a code change (provenance)


class StopRequest:
    """SIGTERM (what SLURM and ``kill`` send) and Ctrl-C set a flag instead of killing the run: the loop
    saves ``last.pt`` after the current step and returns ``{"status": "interrupted"}``, so a plain sweep
    resumes the cell. A second Ctrl-C stops at once. Installed only in the main thread."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is None:  # a later SIGTERM (e.g. a sweep passing a Ctrl-C on) keeps the first name
            self.signum = signum
        log.warning("received %s: saving last.pt after this step, then stopping (a plain sweep resumes)",
                    signal.Signals(signum).name)

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            if handler is not None:
                signal.signal(s, handler)

    def requested(self) -> bool:
        flag = self.signum is not None
        return bool(distributed.broadcast_object(flag)) if distributed.world_size() > 1 else flag

    @property
    def name(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum is not None else None


_rss_at_reset_mb: list[float] = []  # the resident set when this process's current cell began (reset_peak_memory)


def reset_peak_memory(device) -> None:
    """Start this cell's peak-memory count: the process's resident-set high-water mark (Linux: ``clear_refs``;
    elsewhere the count stays the process's since its start) and, on CUDA, torch's peak of allocated memory.
    The host count restarts from the resident set now, which in a process that trained cells before (an inline
    sweep) holds what they left allocated: ``rss_start_mb`` in the cost says how much."""
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set
    _rss_at_reset_mb[:] = [_status_mb("VmRSS:")]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _status_mb(field: str) -> float | None:
    """A memory line of ``/proc/self/status`` in MiB (None where there is none)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith(field))
        return int(line.split()[1]) / 1024.0
    return None


def peak_rss_mb() -> float:
    """The process's resident-set high-water mark in MiB (``VmHWM``, since :func:`reset_peak_memory`; where
    /proc is absent, ``ru_maxrss``: since the process started)."""
    peak = _status_mb("VmHWM:")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _peak_memory(device) -> dict:
    """What this cell's call of the trainer used at its peak: host memory (``peak_rss_mb``, what a job's memory
    request must hold) and, on CUDA, the GPU memory torch allocated (``peak_gpu_mb``) beside the card's
    (``gpu_total_mb``); ``rss_start_mb``: the resident set when the cell began, which the host peak includes.
    ``peak_mem_mb``: the GPU's on CUDA, else the host's (as before)."""
    out = {"peak_rss_mb": peak_rss_mb(), "rss_start_mb": _rss_at_reset_mb[0] if _rss_at_reset_mb else None}
    if device.type == "cuda":
        out.update(peak_gpu_mb=torch.cuda.max_memory_allocated(device) / 2**20,
                   gpu_total_mb=torch.cuda.get_device_properties(device).total_memory / 2**20)
    out["peak_mem_mb"] = out.get("peak_gpu_mb", out["peak_rss_mb"])
    return out


def run_cell(cell: spec.Cell, run_dir: str | Path, tracker=None, anchor_checkpoint: str | Path | None = None,
             stop_after_steps: int | None = None, allow_code_change: bool = False) -> dict:
    """Train and evaluate one cell in ``run_dir``; resume from ``run_dir/last.pt`` when present.

    ``stop_after_steps`` ends the process's work after that many optimiser steps of this call,
    having written a checkpoint (a clean preemption, used by tests and the SLURM requeue path);
    the result is then ``{"status": "interrupted"}``, as after a SIGTERM or Ctrl-C (:class:`StopRequest`,
    with ``"signal"``). ``last.pt`` records the code's commit and the resolved cell; resuming one
    written by other code or for another resolved cell is refused unless ``allow_code_change`` (then
    both commits are recorded in the result's ``code_changes``).
    """
    with StopRequest() as stop:
        body = _run_cell(cell, run_dir, tracker, anchor_checkpoint, stop_after_steps, allow_code_change, stop)
    if body.get("status") == "done" and stop.signum is not None:  # a stop during the final test evaluation:
        body["signal"] = stop.name  # the result is whole and kept; the caller (a sweep) stops after this cell
    return body


class PhaseTimer:
    """Where one call's time goes (``cost["time_split_s"]``): ``with timer.phase("steps_s") as lap:`` adds the
    block's seconds to that phase (``lap.seconds``); :meth:`timed` adds the wait for each item of an iterable.
    ``wall()`` is the training time since the last checkpoint was written (``RunState.train_wall_s``)."""

    class _Lap:
        seconds = 0.0

    def __init__(self) -> None:
        self.start = self._wall_from = time.perf_counter()
        self.split = dict.fromkeys(TIME_SPLIT, 0.0)

    @contextlib.contextmanager
    def phase(self, name: str):
        lap, t = self._Lap(), time.perf_counter()
        try:
            yield lap
        finally:
            lap.seconds = time.perf_counter() - t
            self.split[name] += lap.seconds

    def timed(self, iterable, name: str):
        it = iter(iterable)
        while True:
            t = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            self.split[name] += time.perf_counter() - t
            yield item

    def wall(self) -> float:
        return time.perf_counter() - self._wall_from

    def restart_wall(self) -> None:
        self._wall_from = time.perf_counter()

    def finish(self) -> dict:
        split = dict(self.split)
        split["total_s"] = time.perf_counter() - self.start
        split["other_s"] = split["total_s"] - sum(v for k, v in split.items() if k not in ("total_s", "other_s"))
        return split


@dataclass
class _Run:
    """What the steps of one call share: the resolved cell and everything built from it."""

    cell: spec.Cell
    record: dict  # the resolved cell as recorded (result.json, checkpoints)
    run_dir: Path
    code: dict  # what last.pt records of the code, cell and data
    device: torch.device
    mode: RunMode
    rank: int
    world: int
    tracker: object
    data: Data
    strategy: strategies.Strategy
    branches: dict
    specs: dict
    optimizers: dict
    dataset: object
    steps_per_epoch: int
    total_steps: int
    state: RunState

    @property
    def reported(self) -> str:
        return self.strategy.reported

    @property
    def last(self) -> Path:
        return self.run_dir / "last.pt"


def _run_cell(cell, run_dir, tracker, anchor_checkpoint, stop_after_steps, allow_code_change, stop) -> dict:
    timer = PhaseTimer()
    with timer.phase("setup_s"):
        run = _set_up(cell, Path(run_dir), tracker, anchor_checkpoint, allow_code_change)
    timer.restart_wall()
    budget = [stop_after_steps]  # optimiser steps this call may still take (None: no limit)
    while run.state.epoch < run.cell.schedule.epochs:
        epoch = run.state.epoch
        stopped = _one_epoch(run, timer, stop, budget)
        if stopped:
            return stopped
        _end_of_epoch(run, timer, epoch)
        fault_point("train.between_epochs")
        if stop.requested():
            return {"status": "interrupted", "global_step": run.state.global_step, "signal": stop.name}
    return _final_test(run, timer)


def _set_up(cell, run_dir: Path, tracker, anchor_checkpoint, allow_code_change) -> _Run:
    """Resolve the cell, open its data, build the strategy's branches and optimisers (fixed order after
    seeding, so every run starts identically), and resume from ``last.pt`` when there is one."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cell = spec.resolve(cell)
    code = {"commit": git_info()["commit"], "source": source_fingerprint(), "cell": spec.result_key(cell),
            "data_fingerprint": cell_fingerprint(cell)}
    sched, device = cell.schedule, distributed.torch_device(cell.device, "device")
    reset_peak_memory(device)
    # DISTRIBUTED: join the ranks of a multi-task job (no-op for one process); only rank 0 logs and writes
    rank, world = distributed.init_from_env(device.type)
    if not distributed.is_main():
        tracker = None
    seed_everything(cell.seed)

    data = open_data(cell, models.input_kind(cell.matcher.name))
    if eccv.wanted(cell):  # the coco_5k split's COCO ids are the ECCV Caption / CxC annotations' (before training)
        eccv.split_ids(data.test_splits[eccv.protocol_split()], cell.dataset.data_root)
    strategy = build_strategy(cell, build_matcher(cell, data))
    seed_everything(cell.seed)
    branches = _make_branches(cell, strategy, data, anchor_checkpoint)
    mode = RunMode.of(sched.to_dict(), device)
    for m in branches.values():
        prepare_model(m.to(device), mode)
    specs = {b.name: b for b in strategy.branches()}
    optimizers = {b.name: _make_optimizer(branches[b.name], sched) for b in strategy.branches() if b.optimised}

    reported = branches[strategy.reported]
    augment = train_augment(reported, sched)
    for m in branches.values():
        m.augment = augment  # towers that augment inside the model (BERT) follow the schedule too
    dataset = data.train_dataset(augment, cell.seed, one_caption_per_image=reported.base_loss == "infonce")
    n_items, bs = len(dataset), sched.batch_size
    steps_per_epoch = n_items // bs
    if sched.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, sched.max_steps_per_epoch)
    if steps_per_epoch < 1:
        raise ValueError(f"training split has {n_items} items, fewer than one batch of {bs}: lower "
                         "schedule.batch_size")
    if bs % world:  # DISTRIBUTED: every rank takes an equal contiguous slice of each global batch
        raise ValueError(f"schedule.batch_size={bs} (the global batch) is not divisible by the {world} ranks "
                         f"of this job: use a multiple of {world}")
    run = _Run(cell=cell, record=cell.to_dict(), run_dir=run_dir, code=code, device=device, mode=mode, rank=rank,
               world=world, tracker=tracker, data=data, strategy=strategy, branches=branches, specs=specs,
               optimizers=optimizers, dataset=dataset, steps_per_epoch=steps_per_epoch,
               total_steps=steps_per_epoch * sched.epochs, state=RunState())
    if run.last.exists() or _previous(run.last).exists():
        with distributed.main_first():  # DISTRIBUTED: rank 0 repairs a torn rotation before the others read
            run.state = _resume(run.last, branches, optimizers, cell, code, allow_code_change)
        _say(run, f"resumed {run_dir} at epoch {run.state.epoch + 1}/{sched.epochs} step "
                  f"{run.state.step_in_epoch}/{steps_per_epoch} (global step {run.state.global_step})")
    return run


def _log(run: _Run, timer: PhaseTimer, values: dict) -> None:
    if run.tracker is not None:
        with timer.phase("tracker_s"):
            run.tracker.log(values, step=run.state.global_step)


def _save(run: _Run, timer: PhaseTimer, best: dict | None = None) -> None:
    """Write ``best.pt`` (when given) and ``last.pt``; the time since the last one counts as training time."""
    with timer.phase("checkpoint_s"):
        if best is not None and distributed.is_main():  # DISTRIBUTED
            ckpt.save(best, run.run_dir / "best.pt")
        _save_last(run.last, run.branches, run.optimizers, run.state, run.cell, timer.wall(), run.code)
    timer.restart_wall()


def _one_epoch(run: _Run, timer: PhaseTimer, stop: StopRequest, budget: list) -> dict | None:
    """The optimiser steps of the current epoch (from where a resumed run left it); the ``interrupted``
    result when a stop was asked for or this call's step budget is spent (``last.pt`` written)."""
    cell, state, sched, device = run.cell, run.state, run.cell.schedule, run.device
    epoch, bs, world = state.epoch, sched.batch_size, run.world
    for opt in run.optimizers.values():
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"] * lr_factor(epoch, sched)
    if hasattr(run.dataset, "set_epoch"):
        run.dataset.set_epoch(epoch)
    order = torch.randperm(len(run.dataset), generator=torch.Generator().manual_seed(cell.seed * 100003 + epoch))
    batches = [order[i * bs:(i + 1) * bs].tolist() for i in range(run.steps_per_epoch)]
    if world > 1:  # DISTRIBUTED: this rank's contiguous slice of every global batch
        batches = [b[run.rank * (bs // world):(run.rank + 1) * (bs // world)] for b in batches]
    loader = torch.utils.data.DataLoader(run.dataset, batch_sampler=batches[state.step_in_epoch:],
                                         collate_fn=run.data.collate(), num_workers=loader_workers(sched, device),
                                         pin_memory=device.type == "cuda")
    for name, m in run.branches.items():
        m.train(run.specs[name].mode == "train")
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{sched.epochs}", unit="step", leave=False,
               initial=state.step_in_epoch, total=run.steps_per_epoch,
               disable=not (_on_terminal() and distributed.is_main()))
    pending: list = []  # CUDA: (epoch, step, {branch: loss tensor}) not yet checked on the host
    for batch in timer.timed(bar, "data_s"):
        ctx = strategies.StepContext(epoch=epoch, step=state.global_step, total_steps=run.total_steps,
                                     logit_scales={n: getattr(m, "logit_scale", None) for n, m in run.branches.items()})
        with timer.phase("steps_s") as lap:
            losses = _train_step(batch, run.branches, run.specs, run.optimizers, run.strategy, ctx, sched, device,
                                 run.run_dir, run.mode)
            if device.type == "cuda":  # no host read per step: checked at log points, epoch ends and checkpoints
                pending.append((ctx.epoch, ctx.step, losses))
        state.step_time_sum += lap.seconds
        state.steps_timed += 1
        state.global_step += 1
        state.step_in_epoch += 1
        if budget[0] is not None:
            budget[0] -= 1
        at_log = state.global_step % sched.log_every == 0
        at_epoch_end = state.step_in_epoch == run.steps_per_epoch  # at least one line per epoch, however short
        at_checkpoint = bool(sched.checkpoint_every) and state.global_step % sched.checkpoint_every == 0
        if pending and (at_log or at_epoch_end or at_checkpoint):
            _check_finite(pending, run.run_dir)
        if at_log or at_epoch_end:
            _progress(run, timer, losses, bar)
        if at_checkpoint and state.step_in_epoch < run.steps_per_epoch:
            _save(run, timer)
        if (budget[0] is not None and budget[0] <= 0) or stop.requested():
            _check_finite(pending, run.run_dir)
            _save_last(run.last, run.branches, run.optimizers, state, run.cell, timer.wall(), run.code)
            return {"status": "interrupted", "global_step": state.global_step, "signal": stop.name}
    _check_finite(pending, run.run_dir)  # a non-finite loss since the last check: no dev evaluation, no checkpoint
    return None


def _on_terminal() -> bool:
    """Whether a person watches this process's output (then the progress bar shows, not the lines)."""
    return sys.stderr.isatty()


def _say(run: _Run, line: str) -> None:
    """One progress line (rank 0): into ``log.txt`` (the run's log) and, off a terminal, on stdout, which is the
    ``.out`` of a local or SLURM job."""
    if not distributed.is_main():  # DISTRIBUTED
        return
    log.info(line)
    if not _on_terminal():
        print(line, flush=True)


def _eta(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def progress_line(epoch: int, epochs: int, step: int, steps: int, losses: dict[str, float], lrs: dict[str, float],
                  step_s: float, steps_left: int) -> str:
    """``epoch e/E [i/N] loss … lr … s/step … eta …``: ``losses`` and ``lrs`` per branch (one value shown alone),
    the eta of the steps left at this step time (evaluations not counted)."""
    def values(d: dict[str, float], fmt: str) -> str:
        if len(set(d.values())) == 1 and (len(d) == 1 or fmt == ".2e"):
            return format(next(iter(d.values())), fmt)
        return " ".join(f"{n}={v:{fmt}}" for n, v in d.items())

    return (f"epoch {epoch + 1}/{epochs} [{step}/{steps}] loss {values(losses, '.4f')} lr {values(lrs, '.2e')} "
            f"s/step {step_s:.3f} eta {_eta(step_s * steps_left)}")


def _progress(run: _Run, timer: PhaseTimer, losses: dict, bar) -> None:
    """The training losses and learning rates now: to W&B, and as a progress line (:func:`progress_line`)."""
    state = run.state
    values = {n: float(v) for n, v in losses.items()}
    lrs = {n: o.param_groups[0]["lr"] for n, o in run.optimizers.items()}
    _log(run, timer, {**{f"train/loss/{n}": v for n, v in values.items()},
                      **{f"lr/{n}": v for n, v in lrs.items()}, "epoch": state.epoch})
    step_s = state.step_time_sum / max(state.steps_timed, 1)
    line = progress_line(state.epoch, run.cell.schedule.epochs, state.step_in_epoch, run.steps_per_epoch, values, lrs,
                         step_s, run.total_steps - state.global_step)
    if not bar.disable:
        bar.set_postfix_str(line.split("] ", 1)[1].split(" eta")[0], refresh=False)
    _say(run, line)


def _end_of_epoch(run: _Run, timer: PhaseTimer, epoch: int) -> None:
    """Dev evaluation of the reported branch, the best checkpoint when it improved, the full checkpoint."""
    state = run.state
    with timer.phase("dev_eval_s"):
        with run.mode.autocast():
            dev = evaluate_dev(run.branches[run.reported], run.data, run.cell, run.device)
        dev = distributed.broadcast_object(dev)  # DISTRIBUTED: every rank takes rank 0's decision
        state.dev_curve.append({"epoch": epoch, **dev})
    _log(run, timer, {**{f"dev/{k}": v for k, v in dev.items()}, "epoch": epoch})
    _say(run, f"epoch {epoch + 1}/{run.cell.schedule.epochs} dev rsum {dev['rsum']:.2f} "
              f"(best {max(dev['rsum'], state.best_rsum):.2f})")
    state.epoch += 1
    state.step_in_epoch = 0
    best = None
    if dev["rsum"] > state.best_rsum:
        state.best_rsum, state.best_epoch = dev["rsum"], epoch
        best = {"format": CHECKPOINT_FORMAT, "matcher": run.cell.matcher.to_dict(),
                "vocab_size": run.data.build_kwargs.get("vocab_size"),
                "vocab_fingerprint": run.data.vocab.fingerprint() if run.data.vocab is not None else None,
                "branch": run.reported,
                "epoch": epoch, "dev": dev, "weights": run.branches[run.reported].state_dict()}
    _save(run, timer, best)


def _final_test(run: _Run, timer: PhaseTimer) -> dict:
    """Test evaluation of the best dev checkpoint of the reported branch; the result."""
    distributed.barrier()  # DISTRIBUTED: rank 0 has written best.pt; every rank evaluates it identically
    state, device = run.state, run.device
    with timer.phase("test_eval_s"):
        best = load_reported_weights(run.run_dir / "best.pt")
        best_sha256 = (run.run_dir / "best.pt.sha256").read_text().strip()  # whose model the result is
        final = prepare_model(build_matcher(run.cell, run.data).to(device), run.mode)
        final.load_state_dict(best["weights"])
        with run.mode.autocast():
            metrics, ranks = evaluate_test(final, run.data, run.cell, device)
        buf = io.BytesIO()
        np.savez_compressed(buf, **ranks, cell_id=np.array(str(run.cell.id or "")))  # whose ranks these are
        if distributed.is_main():  # DISTRIBUTED
            ckpt.atomic_write_bytes(run.run_dir / "ranks.npz", buf.getvalue())
    bs = run.cell.schedule.batch_size
    cost = {
        "step_time_s": state.step_time_sum / max(state.steps_timed, 1),
        "samples_per_s": bs * state.steps_timed / max(state.step_time_sum, 1e-12),
        "train_wall_s": state.train_wall_s,
        "steps": state.global_step,
        "forward_passes_per_step": len(run.branches),
        "backward_passes_per_step": len(run.optimizers),
        **_peak_memory(device),
        "cpu_hours": state.train_wall_s / 3600.0 if device.type == "cpu" else 0.0,
        "gpu_hours": state.train_wall_s / 3600.0 if device.type == "cuda" else 0.0,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "time_split_s": timer.finish(),  # this call's time (a resumed cell: since its resume), seconds per phase
    }
    return {"status": "done", "metrics": metrics, "dev_curve": state.dev_curve, "best_epoch": state.best_epoch,
            "best_dev_rsum": state.best_rsum, "reported_branch": run.reported, "strategy": run.strategy.describe(),
            "cost": cost, "ranks_file": "ranks.npz", "best_sha256": best_sha256, "resolved_cell": run.record,
            "run_mode": run.mode.record(),
            "eval_data": eval_sizes(run.cell, run.data),
            **({"code_changes": state.code_changes} if state.code_changes else {})}


def use_amp(sched: spec.Schedule, device: torch.device) -> bool:
    """bf16 autocast for the forward passes (``precision: bf16``, or the legacy ``amp: true`` on CUDA)."""
    return RunMode.of(sched.to_dict(), device).effective == "bf16"


def loader_workers(sched: spec.Schedule, device: torch.device) -> int:
    """The schedule's ``workers``; on CUDA, 0 means enough to keep the GPU fed (half the CPUs, at most 4)."""
    workers = sched.workers
    if workers or device.type != "cuda":
        return workers
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def _divergence(epoch: int, step: int, bad: dict, run_dir) -> TrainingDiverged:
    return TrainingDiverged(
        f"non-finite loss {bad} at epoch {epoch}, step {step}; stopped without saving, {_kept(run_dir)}. "
        "Lower schedule.lr or check the data for NaN/inf.")


def _kept(run_dir) -> str:
    last = Path(run_dir) / "last.pt"
    return f"the last good checkpoint {last} is kept" if last.is_file() else \
        "no checkpoint was written before it (the cell starts from scratch when run again)"


def _check_finite(pending: list, run_dir) -> None:
    """One host read for all steps since the last check (CUDA); raise at the first non-finite loss."""
    if not pending:
        return
    flat = torch.stack([v.float() for _, _, losses in pending for v in losses.values()])
    if not bool(torch.isfinite(flat).all()):
        for epoch, step, losses in pending:
            bad = {n: float(v) for n, v in losses.items() if not math.isfinite(float(v))}
            if bad:
                raise _divergence(epoch, step, bad, run_dir)
    pending.clear()


def _train_step(batch, branches, specs, optimizers, strategy, ctx, sched, device, run_dir, mode=None) -> dict:
    """One optimiser step; the losses come back as detached tensors. On CPU they are checked here (a NaN stops
    before the step); on CUDA the caller checks them in groups (no host synchronisation per step)."""
    batch = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
    mode = mode or RunMode.of(sched.to_dict(), device)
    scores = {}
    with mode.autocast():
        for name, model in branches.items():
            if specs[name].optimised:
                scores[name] = distributed.global_scores(model, batch).float()  # model(batch) in 1 process
            else:
                with torch.no_grad():
                    scores[name] = distributed.global_scores(model, batch).float()
    fault_point("train.after_forward")
    losses = strategy.losses(scores, ctx)
    values = {n: v.detach() for n, v in losses.items()}
    if device.type != "cuda":  # no asynchrony to lose: check before the step, as always
        bad = {n: float(v) for n, v in values.items() if not math.isfinite(float(v))}
        if bad:
            raise _divergence(ctx.epoch, ctx.step, bad, run_dir)
    for opt in optimizers.values():
        opt.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    fault_point("train.after_backward")
    for name, opt in optimizers.items():
        distributed.average_gradients(branches[name])  # DISTRIBUTED: the 1-process gradient (no-op in 1 process)
        if sched.grad_clip:
            torch.nn.utils.clip_grad_norm_(branches[name].parameters(), sched.grad_clip)
        opt.step()
        branches[name].after_optimizer_step()
        fault_point("train.after_optimizer_step")
    for name, branch in specs.items():
        if branch.update.startswith("ema:"):
            ema_update(branches[name], branches[branch.update.split(":", 1)[1]],
                       strategy.momentum(ctx.step, ctx.total_steps))
    return values


def _previous(path: Path) -> Path:
    return path.with_name(path.stem + ".prev" + path.suffix)


def _save_last(path, branches, optimizers, state: RunState, cell: spec.Cell, wall_s: float,
               code: dict | None = None) -> None:
    """Write ``last.pt``; the one it replaces stays as ``last.prev.pt`` (the fallback when corrupted)."""
    state.train_wall_s += wall_s
    if not distributed.is_main():  # DISTRIBUTED: only rank 0 writes checkpoints
        return
    _finish_rotation(path)
    if path.exists():
        os.replace(path, _previous(path))
        fault_point("checkpoint.rotate")
        _finish_rotation(path)
    ckpt.save({"format": CHECKPOINT_FORMAT, "matcher": cell.matcher.to_dict(), "strategy": cell.strategy.to_dict(),
               "seed": cell.seed, "state": state.__dict__, "code": code,
               **ckpt.state_dicts(branches=branches, optimizers=optimizers, rng=ckpt.RNG)}, path)


def _finish_rotation(path: Path) -> None:
    """Complete a rotation cut short between moving ``last.pt`` and moving its digest: without this
    ``last.prev.pt`` would be checked against the older digest and fail (tests/test_faults.py)."""
    digest, prev = Path(str(path) + ".sha256"), _previous(Path(path))
    if not Path(path).exists() and digest.exists() and prev.exists():
        os.replace(digest, Path(str(prev) + ".sha256"))


def _diff(a, b, prefix="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


def _check_code(path, saved: dict, code: dict, allow: bool, state: RunState) -> None:
    """Refuse (or, allowed, record) a resume across a change of the code (its source fingerprint: a commit
    that changes no training code is no change: store.source_fingerprint), resolved cell or data."""
    before = saved.get("code") or {}
    changes = _diff(before.get("cell"), code["cell"]) if before else ["no record of the code that wrote it"]
    if before and before.get("source") != code["source"]:
        changes.insert(0, f"code: commit {before.get('commit')} -> {code['commit']} (source fingerprint "
                          f"{before.get('source')} -> {code['source']})")
    if before.get("data_fingerprint") != code["data_fingerprint"]:
        changes.append(f"data fingerprint: {before.get('data_fingerprint')} -> {code['data_fingerprint']}")
    if not changes:
        return
    if not allow:
        raise ckpt.CheckpointError(
            f"{path} was written by other code or for another cell ({'; '.join(changes)}): resuming would mix "
            "two versions in one result. Run again with --force to train the cell from scratch, or with "
            "--allow-code-change to resume anyway (both commits are then recorded in the provenance)")
    warnings.warn(f"resuming {path} across a code change ({'; '.join(changes)}), as --allow-code-change asked",
                  stacklevel=3)
    state.code_changes.append({"from_commit": before.get("commit"), "to_commit": code["commit"], "changes": changes,
                               "at_step": state.global_step})


def _resume(path, branches, optimizers, cell: spec.Cell, code: dict | None = None,
            allow_code_change: bool = False) -> RunState:
    _finish_rotation(Path(path))
    try:
        saved = ckpt.load(path)
    except ckpt.CheckpointError as e:
        prev = _previous(Path(path))
        if not prev.exists():
            raise ckpt.CheckpointError(f"{e}; delete {path} to restart the cell from scratch") from e
        warnings.warn(f"{e}; resuming from the previous checkpoint {prev}", stacklevel=2)
        saved = ckpt.load(prev)
    if saved.get("format") != CHECKPOINT_FORMAT:
        raise ckpt.CheckpointError(f"{path} is not a checkpoint of this suite (format {saved.get('format')!r})")
    if (saved["matcher"], saved["strategy"], saved["seed"]) != (
            cell.matcher.to_dict(), cell.strategy.to_dict(), cell.seed):
        raise ckpt.CheckpointError(
            f"{path} belongs to another cell (matcher {saved['matcher']}, strategy {saved['strategy']}, seed "
            f"{saved['seed']}); move it away or use a fresh run folder")
    ckpt.restore(saved, path, branches=branches, optimizers=optimizers, rng=ckpt.RNG)
    state = RunState(**saved["state"])
    if code is not None:
        _check_code(path, saved, code, allow_code_change, state)
    return state


# --------------------------------------------------------------------------------------------
# threads and the standalone command


def set_cell_threads(cell: spec.Cell) -> int | None:
    """Give torch as many intra-op threads as the cell's ``resources.cpus`` (at most the CPUs this process
    may use), so cells that run side by side (the local executor runs as many as the CPUs hold) do not
    each take every core. Returns the thread count set, or None when the cell names no cpus."""
    cpus = cell.resources.cpus if cell.resources is not None else None
    if not cpus:
        return None
    threads = max(1, min(int(cpus), len(os.sched_getaffinity(0))))
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # what the cell's own child processes (loader workers) inherit
    return threads


@contextlib.contextmanager
def cell_threads(cell: spec.Cell):
    """``set_cell_threads`` for the duration of one cell, then the process's previous setting again.

    Every executor (inline, local, SLURM) trains a cell with the same thread count, so a cell's numbers
    do not depend on which executor ran it (CPU reductions may sum in another order with other counts)."""
    before, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    try:
        yield set_cell_threads(cell)
    finally:
        torch.set_num_threads(before)
        if env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env


TRAIN_EXIT_CODES = """exit codes:
  0  the cell is done
  1  SIGTERM / Ctrl-C stopped it (last.pt saved: the same command resumes), or it failed while training (the run
     folder says why: failed, traceback.txt); also an unexpected error (a bug: its traceback is shown)
  2  bad input: one line `error: <file or key>: <value>: <what is wrong>; <fix>` per cause; nothing was written
     (a bad cell value, a missing input, a run folder holding a finished run, another cell's or one training now)"""


def _path(text: str) -> Path:
    from bench.values import path_arg

    return Path(path_arg(text))


def _parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m bench.train",
        description="Train one cell alone (no suite, store or lock) and write what a run folder of the store holds: "
                    "config.yaml, the checkpoints, log.txt, ranks.npz, result.json, then done (or interrupted after "
                    "SIGTERM / Ctrl-C: the same command resumes).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="e.g. python -m bench.train results/runs/demo/<id>/config.yaml --run-dir /tmp/again "
               "schedule.epochs=1 seed=3\n\n" + TRAIN_EXIT_CODES)
    parser.add_argument("config", type=_path, help="a cell's YAML (a run folder's config.yaml) or JSON")
    parser.add_argument("--run-dir", type=_path, required=True, help="folder for the checkpoints and results "
                        "(resumed from its last.pt when present)")
    parser.add_argument("--anchor-checkpoint", type=_path, default=None,
                        help="an OAS cell's trained baseline (its best.pt) or an official checkpoint")
    parser.add_argument("--allow-code-change", action="store_true",
                        help="resume a checkpoint written by other code (both commits are recorded)")
    parser.add_argument("overrides", nargs="*", help="key=value changes of the cell, e.g. schedule.epochs=1 "
                        "(the grammar of every command: bench.overrides)")
    return parser


def read_cell(path: Path, overrides=()) -> spec.Cell:
    """The cell of a YAML or JSON file (a run folder's ``config.yaml``) with ``key=value`` overrides
    (``bench.overrides``) and its id for what it now says; ConfigError / ValueError naming the file."""
    from bench.config_files import ConfigError, read_yaml
    from bench.overrides import apply_overrides

    if not path.is_file():
        raise ConfigError(f"{path} is not a file: give a cell's config.yaml (a run folder of the store has one)")
    raw = read_yaml(path, "cell file")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} does not hold a cell (a mapping with dataset, matcher, strategy)")
    try:
        cell = spec.Cell.from_dict(apply_overrides(raw, list(overrides)))
        return cell.replace(id=spec.cell_id(cell))  # unchanged without overrides of what decides it
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{path}: {e.args[0] if isinstance(e, KeyError) else e}") from None


def before_training(cell: spec.Cell, run_dir: Path) -> list[str]:
    """What stops ``python -m bench.train`` before it writes anything (each an ``error:`` line): the device, every
    input the cell reads (``bench.inputs``: data root, splits, vocabulary, pretrained folders) and the run folder
    (``bench.run_folder.refusal``: a finished run, one that trains now, another cell's)."""
    from bench.inputs import check_cells
    from bench.run_folder import refusal

    try:
        distributed.torch_device(cell.device or "auto", "device")
    except ValueError as e:
        return [str(e)]
    problems = [f.problem.line() for f in check_cells([cell])]
    return problems or [p for p in [refusal(run_dir, cell)] if p]


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.train CONFIG --run-dir DIR [key=value ...]``: train one cell alone (no suite, store or
    lock) and write what a cell of the store holds (``bench.run_folder``, the store's writer too):
    ``config.yaml``, the checkpoints, ``log.txt``, ``ranks.npz``, ``result.json``, then ``done`` (or
    ``interrupted`` after SIGTERM / Ctrl-C: run it again to resume)."""
    from bench.config_files import ConfigError
    from bench.run_folder import LOG_FORMAT, RunOptions, train_in_folder

    parser = _parser()
    args = parser.parse_intermixed_args(argv)
    try:
        cell = read_cell(args.config, args.overrides)
        problems = before_training(cell, args.run_dir)
    except ConfigError as e:  # one line, exit 2, before any folder is made
        problems = [str(e)]
    for problem in problems:  # one line each, exit 2: nothing was written
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 2
    args.run_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    anchor = args.anchor_checkpoint
    try:
        with cell_threads(cell):
            out = train_in_folder(cell, args.run_dir, run_cell, cell_fingerprint(cell),
                                  options=RunOptions(allow_code_change=args.allow_code_change),
                                  anchor_checkpoint=(lambda: anchor) if anchor else None)
    except (ValueError, ckpt.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C stops at once (the first one saves last.pt after the step)
        kept = "from its last.pt" if (args.run_dir / "last.pt").exists() else "from scratch (no last.pt was saved)"
        print(f"error: stopped at once by a second Ctrl-C; run the same command again to train the cell {kept}",
              file=sys.stderr)
        return 1
    if out["state"] != "done":
        print(f"interrupted at step {out.get('global_step')}: run the same command again to resume", file=sys.stderr)
        return 1
    rsum = {p: round(m.get("rsum", float("nan")), 2) for p, m in out["result"]["metrics"].items()}
    print(f"cell {cell.id} done in {args.run_dir}: rsum {rsum}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
