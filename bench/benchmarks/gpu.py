"""``make bench-gpu``: what a user plans GPU time with, measured on one CUDA device, into results/perf.md.

    python -m bench.benchmarks.gpu [--quick | --device cpu] [--out results/perf.md] [--only sgr,saf,...]
                                   [--modes fp32,bf16+compile,...] [--sections matchers,reference,...]

One run, sized for <= 8 minutes on an H100/H200 under an internal time budget (``--budget-s``, default
480 s): sections run in order, each guarded (an exception is reported in its section and the run goes
on), and the ``bench-gpu`` section of the output file plus the rates file (``--rates``, default
``gpu-rates.json`` next to ``--out``; ``gpu-rates.quick.json`` for a ``--quick`` / CPU run, marked ``"quick":
true``, which GPU plans refuse) are rewritten after EACH section, so a run cut short keeps what it
measured. Sections:

1. ``matchers`` — per matcher (VSE∞, SGR, SAF, DBL's cross-attention matcher ``xattn``, CLIP ViT-B/32)
   at published sizes, batch 128, in each mode of ``bench.precision.MODE_NAMES`` (fp32, tf32, bf16,
   fp32+compile, bf16+compile; compile only for the pairwise matchers, whose tile scoring it compiles):
   training samples/s (forward + loss + backward + clip + Adam, timed after a warm-up), scoring µs per
   pair (an F30K-shaped tile of 128 images × 1,000 captions, eval mode), and the compilation time, shown
   apart (first steps / first tile minus their steady time). Final loss per mode vs fp32.
2. ``reference`` — the official programs' loops re-implemented in ``bench/benchmarks`` on the same GPU
   and weights: VSE∞'s official training step (``vse_reference.train_step``) vs ours, and SGRAF's
   per-caption scoring loop (``sgraf_loop.loop_scores``) vs ours (eager fp32 and the fastest mode).
3. ``eval`` — F30K-1K (1,000 × 5,000) and COCO-5K (5,000 × 25,000) evaluation time of each matcher in
   its fastest scoring mode (pairwise COCO-5K extrapolated from the image tiles that fit the budget:
   the table says so).
4. ``cells_per_gpu`` — 2 and 4 demo-size training processes on one GPU at once, without and with an MPS
   daemon started inside the job (``nvidia-cuda-mps-control -d``; reported when absent): aggregate
   samples/s over one common window against one process alone; ``cells_per_gpu`` is offered only at a
   gain >= 1.5×.
5. ``demo`` — the demo suite's cells (``bench/suites/demo.yaml``, on freshly generated demo data) trained
   on the GPU in VSE∞'s fastest mode, seed 0 of each strategy first, as many as the budget holds; their
   test RSUM against the CPU table's seed spread (results/tables/demo.csv: mean ± 2 sd).

Without CUDA it refuses, except with ``--quick`` (or ``--device cpu``): tiny sizes and a few steps on CPU,
what the tests run, so the script cannot rot. It needs no git checkout (the commit is then "none").
Synthetic inputs (random features and ids): the timings do not depend on the values.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

import models
from bench.atomic import atomic_write_bytes
from bench.benchmarks.bench_matchers import VOCAB_SIZE, build_with, hinge_loss, synthetic_batch
from bench.benchmarks.report import parse_only, replace_section
from bench.harness.store import REPO_ROOT, git_info
from bench.precision import MODE_NAMES, RunMode, set_compiled
from bench.values import path_arg

SECTION = "bench-gpu"
MATCHERS = ["vse_infty", "sgr", "saf", "xattn", "clip"]
# Datasheet dense peaks in TFLOP/s (SXM parts; no sparsity): fp32 (non-tensor), bf16 tensor cores.
DATASHEET = {"H200": (67.0, 989.0), "H100": (67.0, 989.0), "A100": (19.5, 312.0), "L40S": (91.6, 362.0),
             "A10": (31.2, 125.0), "L4": (30.3, 121.0)}
FULL = dict(batch=128, steps=30, warmup=5, n_eval_img=1000, n_eval_cap=5000, coco=(5000, 25000),
            score_tile=(100, 1000), overrides={}, clip_preset="vit_b32", matmul=8192, ref_steps=5,
            ref_loop=(100, 1000), demo_seconds=5.0, budget_s=480.0)
QUICK = dict(batch=4, steps=3, warmup=1, n_eval_img=6, n_eval_cap=30, coco=(10, 50), score_tile=(4, 10),
             overrides=dict(embed_size=32, word_dim=16, sim_dim=16, img_dim=32), clip_preset="tiny", matmul=256,
             ref_steps=1, ref_loop=(4, 10), demo_seconds=1.0, budget_s=900.0)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def card_name(device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"


def datasheet_peak(name: str) -> tuple[float, float] | None:
    """(fp32, bf16) TFLOP/s of a known card, matched by its model name inside ``name``."""
    for key, peaks in DATASHEET.items():
        if key in name.upper().replace("NVIDIA ", ""):
            return peaks
    return None


def matmul_tflops(device, dtype, n: int, reps: int = 10) -> float:
    """Measured rate of an n × n × n matmul: the reachable dense peak on this device."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


# --------------------------------------------------------------------------------------------- inputs
class Workload:
    """A matcher with its synthetic training batches, a held-out batch and its loss."""

    def __init__(self, name: str, cfg: dict, device, seed: int = 0):
        self.name, self.device = name, device
        torch.manual_seed(seed)
        if name == "clip":
            self.words = [f"w{i}" for i in range(200)]
            self.model = models.build("clip", preset=cfg["clip_preset"], vocab_words=self.words)
        else:
            self.model = build_with(name, dict(vocab_size=VOCAB_SIZE, **cfg["overrides"]))
        self.model.to(device)
        self.img_dim = cfg["overrides"].get("img_dim", 2048)
        self.batch_size = cfg["batch"]
        self.batches = [self.batch(cfg["batch"], seed=100 + k) for k in range(8)]
        self.held_out = self.batch(cfg["batch"], seed=99)

    def batch(self, n: int, seed: int) -> dict:
        if self.model.input_kind == "regions":
            return synthetic_batch(n, self.img_dim, seed=seed, device=str(self.device))
        g = torch.Generator().manual_seed(seed)
        size = self.model.image_size
        words = torch.randint(len(self.words), (n, 12), generator=g, device="cpu").tolist()  # host draws, then moved
        tokens = self.model.prepare({"raw_captions": [" ".join(self.words[i] for i in row) for row in words]})
        return {"pixel_values": torch.rand(n, 3, size, size, generator=g, device="cpu").to(self.device),
                "input_ids": tokens["input_ids"].to(self.device),
                "attention_mask": tokens["attention_mask"].to(self.device)}

    def loss(self, model, batch: dict) -> torch.Tensor:
        scores = model(batch).float()
        if model.base_loss == "infonce":
            logits = model.infonce_logits(scores)
            target = torch.arange(len(logits), device=logits.device)
            return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
        return hinge_loss(scores)


# ---------------------------------------------------------------------------------------------- FLOPs
def _rnn_flops(module: torch.nn.RNNBase, inputs) -> float:
    """Forward FLOPs of a GRU/LSTM call from its input (padded or packed): 2·gates·H·(I+H) per step and direction."""
    x = inputs[0]
    steps = x.data.shape[0] if isinstance(x, torch.nn.utils.rnn.PackedSequence) else x.shape[0] * x.shape[1]
    gates = {"GRU": 3, "LSTM": 4}.get(module.mode, 1)
    dirs = 2 if module.bidirectional else 1
    total, in_size = 0.0, module.input_size
    for _ in range(module.num_layers):
        total += 2.0 * gates * module.hidden_size * (in_size + module.hidden_size) * steps * dirs
        in_size = module.hidden_size * dirs
    return total


def step_flops(work: Workload) -> float:
    """FLOPs of one training step (forward + backward) on the first batch.

    ``FlopCounterMode`` counts matmuls, convolutions and attention; an RNN that runs as one fused
    kernel (cuDNN) is invisible to it, so its FLOPs (forward, ×3 with backward) are added from its
    shapes when the counter saw none under that module.
    """
    from torch.utils.flop_counter import FlopCounterMode

    rnn_calls: list[tuple[str, float]] = []
    names = {m: n for n, m in work.model.named_modules()}
    hooks = [m.register_forward_hook(lambda mod, inp, out: rnn_calls.append((names[mod], _rnn_flops(mod, inp))))
             for m in work.model.modules() if isinstance(m, torch.nn.RNNBase)]
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            work.loss(work.model, work.batches[0]).backward()
    finally:
        for h in hooks:
            h.remove()
    work.model.zero_grad(set_to_none=True)
    counted = counter.get_flop_counts()
    total = float(counter.get_total_flops())
    prefix = type(work.model).__name__
    for name, fwd in rnn_calls:
        seen = sum(counted.get(f"{prefix}.{name}", {}).values())
        if not seen:
            total += 3 * fwd
    return total


MODE_ORDER = ("fp32", "fp32+compile", "bf16+compile", "bf16", "tf32")  # measured in this order (budget)
PAIRWISE = ("sgr", "saf", "xattn")
SECTIONS = ("matchers", "reference", "eval", "cells_per_gpu", "demo")


def parse_mode(name: str, device) -> RunMode:
    precision, _, rest = name.partition("+")
    return RunMode(precision, rest == "compile", torch.device(device).type)


class Budget:
    """The run's wall-clock budget: what is left, and whether a piece of work still fits."""

    def __init__(self, seconds: float):
        self.t0, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.t0)

    def fits(self, need_s: float) -> bool:
        return self.left() > need_s


# ------------------------------------------------------------------------------------------- training
def train_run(work: Workload, state: dict, steps: int, warmup: int, mode: RunMode | None = None,
              bf16: bool = False) -> dict:
    """``steps`` Adam steps from ``state`` over the workload's batches in ``mode``; timed after ``warmup``
    (the warm-up steps' excess over the steady step time is the compilation time). Losses stay on the
    device until the end (no host read per step)."""
    mode = mode or RunMode("bf16" if bf16 else "fp32", False, work.device.type)
    model = copy.deepcopy(work.model)
    model.load_state_dict(state)
    set_compiled(model, mode.compile)
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    device = work.device
    torch.manual_seed(1)  # the same dropout masks for every mode
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    losses, t_start = [], None
    t0 = time.perf_counter()
    for k in range(steps):
        if k == warmup:
            _sync(device)
            t_start = time.perf_counter()
        batch = work.batches[k % len(work.batches)]
        with mode.autocast():
            loss = work.loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        opt.step()
        model.after_optimizer_step()
        losses.append(loss.detach())
    _sync(device)
    timed = steps - warmup
    seconds = time.perf_counter() - t_start if t_start is not None and timed > 0 else float("nan")
    warm_s = (t_start or time.perf_counter()) - t0
    losses = torch.stack(losses).float().cpu().tolist()
    model.eval()
    with torch.no_grad():
        held = model(work.held_out).float().cpu()
    return {"samples_per_s": work.batch_size * timed / seconds, "step_s": seconds / timed,
            "compile_s": max(0.0, warm_s - warmup * seconds / timed) if mode.compile else None,
            "peak_mem_mb": (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None),
            "losses": losses, "final_loss": sum(losses[-5:]) / len(losses[-5:]), "held_out_scores": held,
            "model": model}


@torch.no_grad()
def score_rate(work: Workload, model, mode: RunMode, n_img: int, n_cap: int, reps: int = 3) -> dict:
    """µs per pair of ``bench.evaluate.score_matrix`` (its tiles, eval mode) on n_img images × n_cap
    captions, and the first call's excess (compilation) when compiled."""
    from bench.evaluate import encode_all, score_matrix

    model.eval()
    set_compiled(model, mode.compile)
    with mode.autocast():
        img, cap = encode_all(model, _eval_batches(work, n_img, "images", 30_000),
                              _eval_batches(work, n_cap, "captions", 40_000), device=work.device)
        times = []
        for _ in range(reps + 1):
            _sync(work.device)
            t0 = time.perf_counter()
            score_matrix(model, img, cap, device=work.device, progress=False)
            _sync(work.device)
            times.append(time.perf_counter() - t0)
    steady = statistics.median(times[1:])
    return {"score_us_per_pair": steady / (n_img * n_cap) * 1e6,
            "score_compile_s": max(0.0, times[0] - steady) if mode.compile else None}


# ----------------------------------------------------------------------------------------- evaluation
def _eval_batches(work: Workload, n: int, kind: str, seed: int, chunk: int = 128):
    for start in range(0, n, chunk):
        b = work.batch(min(chunk, n - start), seed=seed + start)
        if kind == "images":
            yield {k: v for k, v in b.items() if k in ("images", "image_lengths", "pixel_values")}
        else:
            yield {k: v for k, v in b.items() if k in ("captions", "caption_lengths", "input_ids", "attention_mask")}


def eval_time(work: Workload, model, n_img: int, n_cap: int, budget_s: float | None = None,
              mode: RunMode | None = None) -> dict:
    """Seconds to encode n_img images and n_cap captions and score all pairs (in ``mode``); with ``budget_s``,
    when the first image tile says the whole matrix would not fit, only the tiles that fit are scored and
    the scoring time is extrapolated per image."""
    from bench.evaluate import PAIRWISE_TILE, encode_all, score_matrix

    mode = mode or RunMode("fp32", False, work.device.type)
    set_compiled(model, mode.compile)
    device = work.device
    with mode.autocast():
        _sync(device)
        t0 = time.perf_counter()
        img, cap = encode_all(model, _eval_batches(work, n_img, "images", 10_000),
                              _eval_batches(work, n_cap, "captions", 20_000), device=device)
        _sync(device)
        t_enc = time.perf_counter() - t0
        tile = PAIRWISE_TILE[0] if not model.dual_encoder else n_img
        scored = n_img
        if budget_s is not None and not model.dual_encoder and n_img > tile:
            t1 = time.perf_counter()
            score_matrix(model, tuple(t[:tile] for t in img), cap, device=device, progress=False)
            per_image = (time.perf_counter() - t1) / tile
            if per_image * n_img > budget_s:
                scored = max(tile, int(budget_s / per_image) // tile * tile)
        sub = img if scored == n_img else tuple(t[:scored] for t in img)
        t1 = time.perf_counter()
        score_matrix(model, sub, cap, device=device, progress=False)
        _sync(device)
        t_score = (time.perf_counter() - t1) * n_img / scored
    return {"images": n_img, "captions": n_cap, "encode_s": t_enc, "score_s": t_score, "mode": mode.name,
            "total_s": t_enc + t_score, "scored_images": scored, "extrapolated": scored < n_img}


# ------------------------------------------------------------------------------------------- sections
def modes_for(name: str, modes: list[str]) -> list[str]:
    """The modes measured for a matcher: compile only where there is a tile scoring to compile."""
    return [m for m in MODE_ORDER if m in modes and (name in PAIRWISE or not m.endswith("+compile"))]


def section_matchers(res: dict, cfg: dict, device, budget: Budget, only: list[str], modes: list[str], report) -> None:
    weight = {n: (3.0 if n in PAIRWISE else 1.0) for n in only}  # compilation is where the time goes
    unit = max(budget.left() * 0.62, 1.0) / sum(weight.values())  # the matchers' part of the budget
    for name in only:
        t_m = time.perf_counter()
        print(f"[bench-gpu] {name} …", flush=True)
        entry = res["matchers"].setdefault(name, {"modes": {}})
        try:
            work = Workload(name, cfg, device)
            state = copy.deepcopy(work.model.state_dict())
            entry["params_m"] = sum(p.numel() for p in work.model.parameters()) / 1e6
            entry["step_gflop"] = step_flops(work) / 1e9
            fp32_loss = None
            share = unit * weight[name]
            for mname in modes_for(name, modes):
                spent = time.perf_counter() - t_m
                if mname != "fp32" and (spent > share or not budget.fits(60.0)):
                    entry["modes"][mname] = {"skipped": f"time budget ({spent:.0f} s spent on {name})"}
                    continue
                mode = parse_mode(mname, device)
                try:
                    r = train_run(work, state, cfg["steps"], cfg["warmup"], mode)
                    sr = score_rate(work, r["model"], mode, *cfg["score_tile"])
                    if mname == "fp32":
                        fp32_loss = r["final_loss"]
                    entry["modes"][mname] = {
                        "train_samples_per_s": r["samples_per_s"], "step_s": r["step_s"],
                        "compile_s": r["compile_s"], "peak_mem_mb": r["peak_mem_mb"], "final_loss": r["final_loss"],
                        "loss_vs_fp32": (None if fp32_loss is None else
                                         abs(r["final_loss"] - fp32_loss) / max(abs(fp32_loss), 1e-12)),
                        **sr}
                    del r
                except Exception as err:  # noqa: BLE001 - one failing mode must not hide the others
                    traceback.print_exc()
                    entry["modes"][mname] = {"error": f"{type(err).__name__}: {err}"[:300]}
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                print(f"[bench-gpu]   {name} {mname}: {entry['modes'][mname]}", flush=True)
                report()
        except Exception as err:  # noqa: BLE001
            traceback.print_exc()
            entry["error"] = f"{type(err).__name__}: {err}"[:300]
        print(f"[bench-gpu] {name} done in {time.perf_counter() - t_m:.0f} s", flush=True)
        report()


def fastest(entry: dict, key: str, lower_is_better: bool) -> str | None:
    ok = {m: r[key] for m, r in entry.get("modes", {}).items() if r.get(key) is not None}
    if not ok:
        return None
    return (min if lower_is_better else max)(ok, key=ok.get)


def section_reference(res: dict, cfg: dict, device, budget: Budget, quick: bool) -> None:
    from bench.benchmarks.bench_reference import bench_train_step
    from bench.benchmarks.sgraf_loop import loop_scores
    from bench.evaluate import score_matrix

    out = res["reference"]
    out["train"] = bench_train_step("demo" if quick else "published", cfg["batch"], cfg["ref_steps"], device)
    n_img, n_cap = cfg["ref_loop"]
    work = Workload("sgr", cfg, device)
    model = work.model.eval()
    img_b = next(_eval_batches(work, n_img, "images", 50_000, chunk=n_img))
    cap_b = next(_eval_batches(work, n_cap, "captions", 60_000, chunk=n_cap))
    best = fastest(res["matchers"].get("sgr", {}), "score_us_per_pair", True) or "fp32"
    with torch.no_grad():
        img, cap = model.encode_images(img_b), model.encode_captions(cap_b)
        loop_scores(model, tuple(t[:2] for t in img), tuple(t[:4] for t in cap))  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        ref = loop_scores(model, img, cap).float()
        _sync(device)
        t_ref = time.perf_counter() - t0
        rows = {}
        for mname in dict.fromkeys(["fp32", best]):
            mode = parse_mode(mname, device)
            set_compiled(model, mode.compile)
            with mode.autocast():
                score_matrix(model, img, cap, device=device, progress=False)  # warm-up (and compilation)
                _sync(device)
                t0 = time.perf_counter()
                ours = score_matrix(model, img, cap, device=device, progress=False).to(ref.device)
                _sync(device)
            rows[mname] = {"s": time.perf_counter() - t0, "max_abs_diff": float((ours - ref).abs().max())}
        set_compiled(model, False)
    out["sgr_loop"] = {"images": n_img, "captions": n_cap, "loop_s": t_ref, "ours": rows}


def section_eval(res: dict, cfg: dict, device, budget: Budget, only: list[str]) -> None:
    for name in only:
        entry = res["matchers"].get(name, {})
        if not budget.fits(45.0):
            entry["eval_skipped"] = "time budget"
            continue
        mname = fastest(entry, "score_us_per_pair", True) or "fp32"
        mode = parse_mode(mname, device)
        try:
            work = Workload(name, cfg, device)
            print(f"[bench-gpu] eval {name} ({mname}) …", flush=True)
            entry["eval_1k"] = eval_time(work, work.model, cfg["n_eval_img"], cfg["n_eval_cap"],
                                         budget_s=max(min(budget.left() * 0.15, 30.0), 5.0), mode=mode)
            entry["eval_coco5k"] = eval_time(work, work.model, *cfg["coco"],
                                             budget_s=max(min(budget.left() * 0.1, 20.0), 5.0), mode=mode)
        except Exception as err:  # noqa: BLE001
            traceback.print_exc()
            entry["eval_error"] = f"{type(err).__name__}: {err}"[:300]
        res["matchers"][name] = entry
        if device.type == "cuda":
            torch.cuda.empty_cache()


def cpu_demo_spread(path: Path = REPO_ROOT / "results" / "tables" / "demo.csv") -> dict:
    """strategy label -> (mean, sd) of the CPU demo table's test RSUM."""
    import csv

    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {r["strategy"]: (float(r["rsum_mean"]), float(r["rsum_std"] or 0.0)) for r in csv.DictReader(f)
                if r.get("published") in ("False", "false", "0")}


def section_demo(res: dict, cfg: dict, device, budget: Budget, quick: bool) -> None:
    from bench.harness.cells import expand
    from bench.harness.config import load_suite
    from bench.train import run_cell

    out = res["demo"]
    entry = res["matchers"].get("vse_infty", {})
    best = fastest(entry, "train_samples_per_s", False) or "fp32"
    out["mode"] = best
    tmp = Path(tempfile.mkdtemp(prefix="bench-gpu-demo-"))
    try:
        t0 = time.perf_counter()
        preset = "tiny" if quick else "demo"
        subprocess.run([sys.executable, "-m", "bench.data.synth", "--preset", preset, "--out", str(tmp / "data"),
                        "--seed", "0"], check=True, capture_output=True, text=True, cwd=REPO_ROOT)
        out["data_s"] = time.perf_counter() - t0
        cells = expand(load_suite("demo"))
        cells.sort(key=lambda c: c.seed)  # seed 0 of every strategy first
        spread = cpu_demo_spread()
        precision, _, comp = best.partition("+")
        out["cells"] = []
        for cell in cells:
            if out["cells"] and not budget.fits(out["cells"][-1]["wall_s"] * 1.3 + 10.0):
                out["skipped"] = len(cells) - len(out["cells"])
                break
            sched = replace(cell.schedule, precision=precision, compile=comp == "compile")
            if quick:
                sched = replace(sched, epochs=1, max_steps_per_epoch=2, batch_size=8, lr_decay_epochs=[])
            c = cell.replace(dataset=replace(cell.dataset, data_root=str(tmp / "data"),
                                             vocab_root=str(tmp / "data" / "vocab")),
                             schedule=sched, eval=replace(cell.eval, dev_images=10) if quick else cell.eval,
                             device=device.type)
            t1 = time.perf_counter()
            r = run_cell(c, tmp / "runs" / cell.id)
            rsum = r["metrics"][next(iter(r["metrics"]))]["rsum"]
            mean, sd = spread.get(cell.strategy.label, (None, None))
            out["cells"].append({"strategy": cell.strategy.label, "seed": cell.seed, "rsum": rsum,
                                 "cpu_mean": mean, "cpu_sd": sd, "wall_s": time.perf_counter() - t1,
                                 "samples_per_s": r["cost"]["samples_per_s"],
                                 "within": None if mean is None else abs(rsum - mean) <= 2 * sd + 1e-9})
            print(f"[bench-gpu] demo {out['cells'][-1]}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def worker_main(seconds: float, quick: bool, device: str, sync_dir: str, n: int) -> None:
    """One demo-size training process of the cells_per_gpu section: set up and warm up, wait until all ``n``
    processes are ready (files in ``sync_dir``), train for ``seconds``, print its samples/s as JSON. The
    windows of the processes coincide, so their rates add up."""
    cfg = dict(QUICK if quick else FULL)
    cfg.update(batch=64 if not quick else 4, overrides=dict(embed_size=128, word_dim=64) if not quick
               else cfg["overrides"])
    dev = torch.device(device)
    work = Workload("vse_infty", cfg, dev)
    model = work.model.train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)

    def step(k):
        loss = work.loss(model, work.batches[k % len(work.batches)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for k in range(3):
        step(k)
    _sync(dev)
    sync = Path(sync_dir)
    (sync / f"ready-{os.getpid()}").touch()
    t_wait = time.perf_counter()
    while len(list(sync.glob("ready-*"))) < n and time.perf_counter() - t_wait < 120:
        time.sleep(0.01)
    t0, k = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        step(k)
        _sync(dev)
        k += 1
    print(json.dumps({"samples_per_s": work.batch_size * k / (time.perf_counter() - t0)}), flush=True)


def _concurrent(n: int, seconds: float, quick: bool, device, env: dict) -> float:
    sync = tempfile.mkdtemp(prefix="bench-gpu-sync-")
    cmd = [sys.executable, "-m", "bench.benchmarks.gpu", "--worker-seconds", str(seconds), "--device", device.type,
           "--worker-sync", sync, "--worker-n", str(n)]
    if quick:
        cmd.append("--quick")
    try:
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                  cwd=REPO_ROOT) for _ in range(n)]
        rates = []
        for p in procs:
            so, se = p.communicate(timeout=300)
            if p.returncode != 0:
                raise RuntimeError(f"worker failed: {se.strip().splitlines()[-1:] or p.returncode}")
            rates.append(json.loads(so.strip().splitlines()[-1])["samples_per_s"])
    finally:
        shutil.rmtree(sync, ignore_errors=True)
    return sum(rates)


def section_cells_per_gpu(res: dict, cfg: dict, device, budget: Budget, quick: bool) -> None:
    out = res["cells_per_gpu"]
    steps = cfg["demo_seconds"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    out["one"] = _concurrent(1, steps, quick, device, env)
    for n in (2, 4):
        if budget.fits(40.0):
            out[f"x{n}"] = _concurrent(n, steps, quick, device, env)
    mps = shutil.which("nvidia-cuda-mps-control")
    if device.type != "cuda" or mps is None:
        out["mps"] = "not run: " + ("no CUDA device" if device.type != "cuda" else "nvidia-cuda-mps-control absent")
    else:
        d = Path(tempfile.mkdtemp(prefix="mps-"))
        menv = dict(env, CUDA_MPS_PIPE_DIRECTORY=str(d / "pipe"), CUDA_MPS_LOG_DIRECTORY=str(d / "log"))
        (d / "pipe").mkdir()
        (d / "log").mkdir()
        started = subprocess.run([mps, "-d"], env=menv, capture_output=True, text=True)
        if started.returncode != 0:
            out["mps"] = f"not run: nvidia-cuda-mps-control -d failed ({started.stderr.strip()[:200]})"
        else:
            try:
                out["mps"] = "ran"
                for n in (2, 4):
                    if budget.fits(40.0):
                        out[f"mps_x{n}"] = _concurrent(n, steps, quick, device, menv)
            finally:
                subprocess.run([mps], input="quit\n", env=menv, capture_output=True, text=True, timeout=30)
                shutil.rmtree(d, ignore_errors=True)
    gains = {k: v / out["one"] for k, v in out.items() if k.startswith(("x", "mps_x")) and isinstance(v, float)}
    out["gains"] = gains
    best = max(gains.items(), key=lambda kv: kv[1], default=(None, 0.0))
    out["offer"] = best[0] if best[1] >= 1.5 else None


# ---------------------------------------------------------------------------------------------- report
def _f(x, fmt: str = ",.0f") -> str:
    return "–" if x is None else format(x, fmt)


def _mb(x) -> str:
    return _f(x)


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def section(res: dict) -> list[str]:
    cfg, peaks = res["config"], res["peaks"]
    sheet = (f"datasheet peak fp32 {peaks['fp32']:.0f} / bf16 {peaks['bf16']:.0f} TFLOP/s"
             if peaks.get("fp32") else "no datasheet peak known for this card")
    lines = [f"## GPU: matchers at published sizes ({res['card']})",
             f"Generated by `make bench-gpu`{' --quick (tiny sizes on CPU: a smoke run, not GPU figures)' if res['quick'] else ''} "
             f"({res['when']}, commit {res['commit'] or 'none (not a git checkout)'}), torch {res['torch']}, "
             f"device {res['card']}. Batch {cfg['batch']}; {cfg['steps']} steps per mode from one initialisation on "
             f"the same batches, timed after {cfg['warmup']} warm-up steps (their excess is the compile time). "
             f"Measured large-matmul rate fp32 {_f(peaks.get('matmul_fp32'), '.1f')} / bf16 "
             f"{_f(peaks.get('matmul_bf16'), '.1f')} TFLOP/s; {sheet}. Modes: fp32 (default), tf32 (TF32 matmuls), "
             "bf16 (autocast), +compile (torch.compile of the pairwise tile scoring; n/a for dual encoders). "
             f"Scoring: one eval tile of {cfg['score_tile'][0]} images × {cfg['score_tile'][1]:,} captions.", ""]
    if res.get("running"):
        lines += [f"**Partial: still running or cut short after section `{res['running']}`.**", ""]
    lines += ["| matcher | mode | samples/s | × fp32 | µs/pair scoring | × fp32 | compile s (train + score) | "
              "peak MB | final loss (rel. diff vs fp32) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in res["matchers"].items():
        if "error" in r:
            lines.append(f"| {name} | FAILED: {r['error']} | | | | | | | |")
        base = r.get("modes", {}).get("fp32", {})
        for mname, m in r.get("modes", {}).items():
            if "skipped" in m or "error" in m:
                lines.append(f"| {name} | {mname} | {'skipped: ' + m['skipped'] if 'skipped' in m else 'FAILED: ' + m['error']} | | | | | | |")
                continue
            sx = (m["train_samples_per_s"] / base["train_samples_per_s"]) if base.get("train_samples_per_s") else None
            px = (base["score_us_per_pair"] / m["score_us_per_pair"]) if base.get("score_us_per_pair") else None
            comp = ("–" if m.get("compile_s") is None else
                    f"{m['compile_s']:.1f} + {_f(m.get('score_compile_s'), '.1f')}")
            lines.append(f"| {name} | {mname} | {m['train_samples_per_s']:,.0f} | {_f(sx, '.2f')}× | "
                         f"{m['score_us_per_pair']:.3f} | {_f(px, '.2f')}× | {comp} | {_mb(m['peak_mem_mb'])} | "
                         f"{m['final_loss']:.4f} ({_pct(m.get('loss_vs_fp32'))}) |")
    ref = res.get("reference", {})
    lines += ["", "Official loops (re-implemented in bench/benchmarks) on the same GPU and weights:", ""]
    if "error" in ref:
        lines.append(f"FAILED: {ref['error']}")
    if "train" in ref:
        t = ref["train"]
        lines.append(f"- VSE∞ training step ({t['size']} size, batch {t['batch']}): ours {1000 * t['ours_s']:.1f} ms, "
                     f"official loop {1000 * t['ref_s']:.1f} ms ({t['ref_s'] / t['ours_s']:.2f}×); first losses "
                     f"equal: {t['losses_equal']}.")
    if "sgr_loop" in ref:
        s = ref["sgr_loop"]
        pairs = s["images"] * s["captions"]
        parts = ", ".join(f"ours {m} {v['s']:.3f} s ({s['loop_s'] / v['s']:.1f}× faster, {1e6 * v['s'] / pairs:.3f} "
                          f"µs/pair, max |Δ| {v['max_abs_diff']:.1e})" for m, v in s["ours"].items())
        lines.append(f"- SGR scoring of {s['images']} images × {s['captions']:,} captions: official per-caption loop "
                     f"{s['loop_s']:.3f} s ({1e6 * s['loop_s'] / pairs:.3f} µs/pair); {parts}.")
    lines += ["", "Evaluation (encode every item, then the full score matrix in `bench.evaluate` tiles, in the "
              "matcher's fastest scoring mode):", "",
              "| matcher | mode | split | encode s | score s | total s |", "|---|---|---|---|---|---|"]
    for name, r in res["matchers"].items():
        for key in ("eval_1k", "eval_coco5k"):
            if key in r:
                e = r[key]
                note = (f" (extrapolated from {e['scored_images']:,} images)" if e["extrapolated"] else "")
                lines.append(f"| {name} | {e['mode']} | {e['images']:,} × {e['captions']:,} | {e['encode_s']:.2f} | "
                             f"{e['score_s']:.2f}{note} | {e['total_s']:.2f} |")
        for key in ("eval_error", "eval_skipped"):
            if key in r:
                lines.append(f"| {name} | | {key}: {r[key]} | | | |")
    demo = res.get("demo", {})
    lines += ["", f"Demo suite on this device (mode {demo.get('mode', '–')}; CPU spread = results/tables/demo.csv "
              "mean ± 2 sd):", ""]
    if "error" in demo:
        lines.append(f"FAILED: {demo['error']}")
    if demo.get("cells"):
        lines += ["| strategy | seed | test RSUM | CPU mean ± sd | within | samples/s | wall s |", "|---|---|---|---|---|---|---|"]
        for c in demo["cells"]:
            lines.append(f"| {c['strategy']} | {c['seed']} | {c['rsum']:.1f} | {_f(c['cpu_mean'], '.1f')} ± "
                         f"{_f(c['cpu_sd'], '.1f')} | {c['within']} | {c['samples_per_s']:,.0f} | {c['wall_s']:.1f} |")
        if demo.get("skipped"):
            lines.append(f"\n{demo['skipped']} cell(s) not run (time budget).")
    cg = res.get("cells_per_gpu", {})
    lines += ["", "Several demo-size cells per GPU (VSE∞ small, batch 64: aggregate training samples/s of N processes over one common window):", ""]
    if "error" in cg:
        lines.append(f"FAILED: {cg['error']}")
    if "one" in cg:
        row = ", ".join(f"{k}: {v:,.0f}/s ({cg['gains'].get(k, 0):.2f}×)" for k, v in cg.items()
                        if k.startswith(("x", "mps_x")) and isinstance(v, float))
        lines.append(f"- one process {cg['one']:,.0f}/s; {row}; MPS: {cg.get('mps', '–')}.")
        lines.append(f"- offer `cells_per_gpu`: {cg['offer'] or 'no (no setting gains >= 1.5×)'}.")
    lines += ["", f"Total `make bench-gpu` time: {res['total_s']:.0f} s."]
    return lines


def rates(res: dict) -> dict:
    """The machine-readable rates (results/gpu-rates.json) for GPU-hour estimates."""
    out = {}
    for name, r in res["matchers"].items():
        modes = {m: {"train_samples_per_s": v["train_samples_per_s"], "score_us_per_pair": v.get("score_us_per_pair")}
                 for m, v in r.get("modes", {}).items() if "train_samples_per_s" in v}
        if modes:
            out[name] = modes
    marks = {"quick": True, "source": "make bench-gpu --quick / on CPU: reduced sizes, not GPU rates (never used "
                                      "for GPU plans)"} if res["quick"] else {"source": "make bench-gpu"}
    return {"card": res["card"], "torch": res["torch"], "date": res["when"], "commit": res["commit"], **marks,
            "rates": out}


def run(quick: bool = False, only: list[str] | None = None, budget_s: float | None = None,
        steps: int | None = None, modes: list[str] | None = None, sections: list[str] | None = None,
        device: str | None = None, out: Path | None = None, rates_path: Path | None = None) -> dict:
    if device is None:
        device = "cuda" if torch.cuda.is_available() and not quick else ("cpu" if quick else None)
    if device is None:
        raise SystemExit("bench-gpu: no CUDA device here (torch.cuda.is_available() is False). Run it on a GPU "
                         "machine with a CUDA build of torch (make setup TORCH_SPEC=\"torch==<version> --index-url "
                         "<CUDA wheel index>\"), or pass --quick for the reduced CPU form.")
    device = torch.device(device)
    quick = quick or device.type == "cpu"
    cfg = dict(QUICK if quick else FULL)
    if steps is not None:
        cfg["steps"] = steps
    cfg["warmup"] = min(cfg["warmup"], cfg["steps"] - 1)
    budget = Budget(budget_s if budget_s is not None else cfg["budget_s"])
    card = card_name(device)
    print(f"[bench-gpu] device: {card}", flush=True)
    sheet = datasheet_peak(card) if device.type == "cuda" else None
    commit = git_info().get("commit")
    res = {"card": card, "quick": quick, "config": cfg, "matchers": {}, "reference": {}, "demo": {},
           "cells_per_gpu": {}, "torch": torch.__version__, "commit": commit[:10] if commit else None,
           "peaks": {"fp32": sheet[0] if sheet else None, "bf16": sheet[1] if sheet else None},
           "when": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}", "total_s": 0.0}

    def report():
        res["total_s"] = time.perf_counter() - budget.t0
        if out is not None:
            replace_section(out, SECTION, section(res))
        if rates_path is not None:
            atomic_write_bytes(rates_path, (json.dumps(rates(res), indent=1) + "\n").encode(),
                               fault="report.before_rename")

    try:
        res["peaks"].update(matmul_fp32=matmul_tflops(device, torch.float32, cfg["matmul"]),
                            matmul_bf16=matmul_tflops(device, torch.bfloat16, cfg["matmul"]))
    except Exception as err:  # noqa: BLE001
        print(f"[bench-gpu] matmul peak: {err}", flush=True)
    only = only or MATCHERS
    modes = modes or list(MODE_NAMES)
    steps_of = {
        "matchers": lambda: section_matchers(res, cfg, device, budget, only, modes, report),
        "reference": lambda: section_reference(res, cfg, device, budget, quick),
        "eval": lambda: section_eval(res, cfg, device, budget, only),
        "demo": lambda: section_demo(res, cfg, device, budget, quick),
        "cells_per_gpu": lambda: section_cells_per_gpu(res, cfg, device, budget, quick),
    }
    for name in sections or SECTIONS:
        res["running"] = name
        report()
        t1 = time.perf_counter()
        print(f"[bench-gpu] section {name} ({budget.left():.0f} s of the budget left) …", flush=True)
        if not budget.fits(15.0):
            res.setdefault(name if name != "eval" else "eval_skipped", {})
            if isinstance(res.get(name), dict):
                res[name]["error"] = "skipped: time budget spent"
            continue
        try:
            steps_of[name]()
        except Exception as err:  # noqa: BLE001 - one failing section must not hide the others
            traceback.print_exc()
            target = res.get(name) if isinstance(res.get(name), dict) and name != "matchers" else res.setdefault(
                "errors", {})
            target["error" if target is not res.get("errors") else name] = f"{type(err).__name__}: {err}"[:300]
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(f"[bench-gpu] section {name} done in {time.perf_counter() - t1:.0f} s", flush=True)
    res["running"] = None
    report()
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, a few steps (on CPU when there is no GPU)")
    ap.add_argument("--device", default=None, help="cuda (default when present) or cpu (implies the reduced form)")
    ap.add_argument("--only", default=",".join(MATCHERS), help=f"comma-separated subset of {','.join(MATCHERS)}")
    ap.add_argument("--modes", default=",".join(MODE_NAMES), help=f"comma-separated subset of {','.join(MODE_NAMES)}")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--steps", type=int, default=None, help="training steps per mode (default 30; quick 3)")
    ap.add_argument("--budget-s", type=float, default=None, help="wall-clock budget of the run (default 480 s)")
    ap.add_argument("--out", type=path_arg, default=str(REPO_ROOT / "results" / "perf.md"))
    ap.add_argument("--rates", type=path_arg, default=None, help="the rates JSON (default: gpu-rates.json next to --out)")
    ap.add_argument("--worker-seconds", type=float, default=None, help=argparse.SUPPRESS)  # cells_per_gpu
    ap.add_argument("--worker-sync", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-n", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker_seconds is not None:
        worker_main(args.worker_seconds, args.quick or args.device == "cpu",
                    args.device or ("cuda" if torch.cuda.is_available() else "cpu"), args.worker_sync, args.worker_n)
        return
    only = parse_only(ap, args.only, MATCHERS, "matchers")
    modes = parse_only(ap, args.modes, list(MODE_NAMES), "modes")
    sections = parse_only(ap, args.sections, list(SECTIONS), "sections")
    if args.steps is not None and args.steps < 2:
        ap.error(f"--steps must be >= 2 (one warm-up step and one timed step), got {args.steps}")
    if args.device not in (None, "cpu", "cuda"):
        ap.error(f"--device must be cpu or cuda, got {args.device!r}")
    out = Path(args.out)
    # a --quick / CPU run never writes the rates GPU plans read (bench.harness.estimate refuses its file anyway)
    quick = args.quick or args.device == "cpu" or not torch.cuda.is_available()
    rates_path = Path(args.rates) if args.rates else out.with_name("gpu-rates.quick.json" if quick else "gpu-rates.json")
    res = run(args.quick, only, args.budget_s, args.steps, modes, sections, args.device, out, rates_path)
    print("\n".join(section(res)))
    print(f"wrote the {SECTION} section of {out} and {rates_path}")
    failed = [n for n, r in res["matchers"].items() if "error" in r]
    if failed:
        print(f"bench-gpu: failed for {', '.join(failed)} (see above)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
