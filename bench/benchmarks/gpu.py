"""``make bench-gpu``: the matchers on one CUDA device at published sizes, into a section of results/perf.md.

    python -m bench.benchmarks.gpu [--quick] [--out results/perf.md] [--only vse_infty,sgr,...]

For VSE∞, SGR, SAF, DBL's cross-attention matcher (xattn) and CLIP (ViT-B/32 towers, built from
their config), at the published batch (128) and sizes:

* training samples/s in fp32 and under bf16 autocast (forward + loss + backward + clip + Adam),
  timed over the steps of the run below after a warm-up, and the peak memory of each;
* the difference between fp32 and bf16 after ``--steps`` (200) steps from one initialisation on
  the same batches: final training loss, and the largest score difference on a held-out batch
  scored in fp32 by both trained models;
* evaluation time (encode + score matrix, ``bench.evaluate``) of a Flickr30K-test-shaped split,
  1,000 images × 5,000 captions, and for SGR of a COCO-5K-shaped split (5,000 × 25,000; when the
  remaining time budget cannot hold it, the time is extrapolated from the image tiles measured,
  which the report says);
* the share of the GPU's peak it reaches: FLOPs of one training step (``torch.utils.flop_counter``;
  RNN kernels the counter does not see are added analytically) × steps/s, over the card's
  datasheet peak where the card is known, and over a measured large-matmul rate in any case.

The card's name is printed and written. Only the section between the ``bench-gpu`` markers of the
output file is replaced; the rest of the file is kept. Without CUDA it refuses, except with
``--quick``: tiny sizes and a few steps on CPU (what the tests run, so the script cannot rot).
The full run is sized for < 10 minutes on an H100/H200 (``--budget-s`` caps the COCO-5K part).
Synthetic inputs (random features and ids): the timings do not depend on the values.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import models
from bench.benchmarks.bench_matchers import VOCAB_SIZE, build_with, hinge_loss, synthetic_batch
from bench.benchmarks.report import parse_only, replace_section
from bench.harness.store import REPO_ROOT, git_info

SECTION = "bench-gpu"
MATCHERS = ["vse_infty", "sgr", "saf", "xattn", "clip"]
# Datasheet dense peaks in TFLOP/s (SXM parts; no sparsity): fp32 (non-tensor), bf16 tensor cores.
DATASHEET = {"H200": (67.0, 989.0), "H100": (67.0, 989.0), "A100": (19.5, 312.0), "L40S": (91.6, 362.0),
             "A10": (31.2, 125.0), "L4": (30.3, 121.0)}
FULL = dict(batch=128, steps=200, warmup=10, n_eval_img=1000, n_eval_cap=5000, coco=(5000, 25000),
            overrides={}, clip_preset="vit_b32", matmul=8192)
QUICK = dict(batch=4, steps=3, warmup=1, n_eval_img=6, n_eval_cap=30, coco=(10, 50),
             overrides=dict(embed_size=32, word_dim=16, sim_dim=16, img_dim=32), clip_preset="tiny", matmul=256)


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
        words = torch.randint(len(self.words), (n, 12), generator=g).tolist()
        tokens = self.model.prepare({"raw_captions": [" ".join(self.words[i] for i in row) for row in words]})
        return {"pixel_values": torch.rand(n, 3, size, size, generator=g).to(self.device),
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


# ------------------------------------------------------------------------------------------- training
def train_run(work: Workload, state: dict, steps: int, warmup: int, bf16: bool) -> dict:
    """``steps`` Adam steps from ``state`` over the workload's batches; time after ``warmup``."""
    model = copy.deepcopy(work.model)
    model.load_state_dict(state)
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    device = work.device
    torch.manual_seed(1)  # the same dropout masks for both precisions
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    losses, t_start = [], None
    for k in range(steps):
        if k == warmup:
            _sync(device)
            t_start = time.perf_counter()
        batch = work.batches[k % len(work.batches)]
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = work.loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        opt.step()
        model.after_optimizer_step()
        losses.append(float(loss.detach()))
    _sync(device)
    timed = steps - warmup
    seconds = time.perf_counter() - t_start if t_start is not None and timed > 0 else float("nan")
    model.eval()
    with torch.no_grad():
        held = model(work.held_out).float().cpu()
    return {"samples_per_s": work.batch_size * timed / seconds,
            "step_s": seconds / timed, "peak_mem_mb": (torch.cuda.max_memory_allocated(device) / 2**20
                                                       if device.type == "cuda" else None),
            "final_loss": sum(losses[-5:]) / len(losses[-5:]), "held_out_scores": held, "model": model}


# ----------------------------------------------------------------------------------------- evaluation
def _eval_batches(work: Workload, n: int, kind: str, seed: int, chunk: int = 128):
    for start in range(0, n, chunk):
        b = work.batch(min(chunk, n - start), seed=seed + start)
        if kind == "images":
            yield {k: v for k, v in b.items() if k in ("images", "image_lengths", "pixel_values")}
        else:
            yield {k: v for k, v in b.items() if k in ("captions", "caption_lengths", "input_ids", "attention_mask")}


def eval_time(work: Workload, model, n_img: int, n_cap: int, budget_s: float | None = None) -> dict:
    """Seconds to encode n_img images and n_cap captions and score all pairs; with ``budget_s``, when the
    first image tile says the whole matrix would not fit, only the tiles that fit are scored and the
    scoring time is extrapolated per image."""
    from bench.evaluate import PAIRWISE_TILE, encode_all, score_matrix

    device = work.device
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
    return {"images": n_img, "captions": n_cap, "encode_s": t_enc, "score_s": t_score,
            "total_s": t_enc + t_score, "scored_images": scored, "extrapolated": scored < n_img}


# ------------------------------------------------------------------------------------------------ run
def bench_matcher(name: str, cfg: dict, device, peaks: dict) -> tuple[dict, tuple | None]:
    """The matcher's figures, and for SGR (workload, trained fp32 model) for the COCO-5K split run last."""
    work = Workload(name, cfg, device)
    state = copy.deepcopy(work.model.state_dict())
    flops = step_flops(work)
    runs = {}
    for label, bf16 in (("fp32", False), ("bf16", True)):
        runs[label] = train_run(work, state, cfg["steps"], cfg["warmup"], bf16)
    fp32, bf16 = runs["fp32"], runs["bf16"]
    out = {"params_m": sum(p.numel() for p in work.model.parameters()) / 1e6, "step_gflop": flops / 1e9,
           "loss_fp32": fp32["final_loss"], "loss_bf16": bf16["final_loss"],
           "loss_rel_diff": abs(fp32["final_loss"] - bf16["final_loss"]) / max(abs(fp32["final_loss"]), 1e-12),
           "score_max_diff": float((fp32["held_out_scores"] - bf16["held_out_scores"]).abs().max())}
    for label, r in runs.items():
        achieved = flops / r["step_s"] / 1e12
        out[label] = {"samples_per_s": r["samples_per_s"], "step_s": r["step_s"], "peak_mem_mb": r["peak_mem_mb"],
                      "tflops": achieved, "of_matmul_peak": achieved / peaks[f"matmul_{label}"],
                      "of_datasheet": achieved / peaks[label] if peaks.get(label) else None}
    out["eval_1k"] = eval_time(work, fp32["model"], cfg["n_eval_img"], cfg["n_eval_cap"])
    keep = (work, fp32["model"]) if name == "sgr" else None
    del runs
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out, keep


def _mb(x) -> str:
    return "–" if x is None else f"{x:,.0f}"


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def section(res: dict) -> list[str]:
    cfg, peaks = res["config"], res["peaks"]
    sheet = (f"datasheet peak fp32 {peaks['fp32']:.0f} / bf16 {peaks['bf16']:.0f} TFLOP/s"
             if peaks.get("fp32") else "no datasheet peak known for this card")
    lines = [f"## GPU: matchers at published sizes ({res['card']})",
             f"Generated by `make bench-gpu`{' --quick (tiny sizes on CPU: a smoke run, not GPU figures)' if res['quick'] else ''} "
             f"({res['when']}, commit {res['commit']}), torch {torch.__version__}, device {res['card']}. "
             f"Batch {cfg['batch']}; {cfg['steps']} steps per precision from one initialisation on the same batches, "
             f"timed after {cfg['warmup']} warm-up steps; TF32 matmul {res['tf32']}. Measured large-matmul rate "
             f"fp32 {peaks['matmul_fp32']:.1f} / bf16 {peaks['matmul_bf16']:.1f} TFLOP/s; {sheet}. "
             "FLOPs of a step from torch's flop counter (+ RNN kernels from their shapes).", "",
             "| matcher | params M | GFLOP/step | samples/s fp32 | samples/s bf16 | bf16 speed-up | peak MB fp32 | "
             "peak MB bf16 | share of peak fp32 (sheet / matmul) | share of peak bf16 (sheet / matmul) | "
             f"loss fp32 → bf16 after {cfg['steps']} steps | max score diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in res["matchers"].items():
        if "error" in r:
            lines.append(f"| {name} | FAILED: {r['error']} |" + " |" * 10)
            continue
        a, b = r["fp32"], r["bf16"]
        lines.append(
            f"| {name} | {r['params_m']:.1f} | {r['step_gflop']:,.1f} | {a['samples_per_s']:,.0f} | "
            f"{b['samples_per_s']:,.0f} | {b['samples_per_s'] / a['samples_per_s']:.2f}× | {_mb(a['peak_mem_mb'])} | "
            f"{_mb(b['peak_mem_mb'])} | {_pct(a['of_datasheet'])} / {_pct(a['of_matmul_peak'])} | "
            f"{_pct(b['of_datasheet'])} / {_pct(b['of_matmul_peak'])} | {r['loss_fp32']:.4f} → {r['loss_bf16']:.4f} "
            f"({100 * r['loss_rel_diff']:.2f}%) | {r['score_max_diff']:.2e} |")
    lines += ["", "Evaluation (fp32; encode every item, then the full score matrix in `bench.evaluate` tiles):", "",
              "| matcher | split | encode s | score s | total s |", "|---|---|---|---|---|"]
    for name, r in res["matchers"].items():
        for key in ("eval_1k", "eval_coco5k"):
            if key in r:
                e = r[key]
                shape = f"{e['images']:,} × {e['captions']:,}"
                note = (f" (extrapolated from {e['scored_images']:,} images)" if e["extrapolated"] else "")
                lines.append(f"| {name} | {shape} | {e['encode_s']:.2f} | {e['score_s']:.2f}{note} | {e['total_s']:.2f} |")
        if "eval_coco5k_error" in r:
            lines.append(f"| {name} | COCO-5K | FAILED: {r['eval_coco5k_error']} | | |")
    lines += ["", f"Total `make bench-gpu` time: {res['total_s']:.0f} s."]
    return lines


def run(quick: bool = False, only: list[str] | None = None, budget_s: float = 540.0,
        steps: int | None = None) -> dict:
    if not torch.cuda.is_available() and not quick:
        raise SystemExit("bench-gpu: no CUDA device here (torch.cuda.is_available() is False). Run it on a GPU "
                         "machine with a CUDA build of torch (make setup TORCH_SPEC=\"torch==<version> --index-url "
                         "<CUDA wheel index>\"), or pass --quick for the reduced CPU form.")
    t0 = time.perf_counter()
    deadline = t0 + budget_s
    cfg = dict(QUICK if quick else FULL)
    if steps is not None:
        cfg["steps"] = steps
    cfg["warmup"] = min(cfg["warmup"], cfg["steps"] - 1)
    device = torch.device("cuda" if torch.cuda.is_available() and not quick else "cpu")
    card = card_name(device)
    print(f"[bench-gpu] device: {card}", flush=True)
    sheet = datasheet_peak(card) if device.type == "cuda" else None
    peaks = {"fp32": sheet[0] if sheet else None, "bf16": sheet[1] if sheet else None,
             "matmul_fp32": matmul_tflops(device, torch.float32, cfg["matmul"]),
             "matmul_bf16": matmul_tflops(device, torch.bfloat16, cfg["matmul"])}
    res = {"card": card, "quick": quick, "config": cfg, "peaks": peaks, "matchers": {},
           "tf32": torch.backends.cuda.matmul.allow_tf32, "commit": git_info().get("commit", "?")[:10],
           "when": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}"}
    coco = None
    for name in only or MATCHERS:
        t1 = time.perf_counter()
        print(f"[bench-gpu] {name} …", flush=True)
        try:
            res["matchers"][name], keep = bench_matcher(name, cfg, device, peaks)
            coco = keep or coco
        except Exception as err:  # noqa: BLE001 - one failing matcher must not hide the others
            import traceback

            traceback.print_exc()
            res["matchers"][name] = {"error": f"{type(err).__name__}: {err}"}
        print(f"[bench-gpu] {name} done in {time.perf_counter() - t1:.0f} s", flush=True)
    if coco is not None:  # last, with what is left of the budget (extrapolated from the tiles that fit)
        print("[bench-gpu] sgr on the COCO-5K-shaped split …", flush=True)
        left = deadline - time.perf_counter() - 15.0
        try:
            res["matchers"]["sgr"]["eval_coco5k"] = eval_time(*coco, *cfg["coco"], budget_s=max(left, 20.0))
        except Exception as err:  # noqa: BLE001
            res["matchers"]["sgr"]["eval_coco5k_error"] = f"{type(err).__name__}: {err}"
        del coco
    res["total_s"] = time.perf_counter() - t0
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, a few steps (on CPU when there is no GPU)")
    ap.add_argument("--only", default=",".join(MATCHERS), help=f"comma-separated subset of {','.join(MATCHERS)}")
    ap.add_argument("--steps", type=int, default=None, help="training steps per precision (default 200; quick 3)")
    ap.add_argument("--budget-s", type=float, default=540.0, help="wall-clock budget; caps the COCO-5K scoring")
    ap.add_argument("--out", default=str(REPO_ROOT / "results" / "perf.md"))
    args = ap.parse_args(argv)
    only = parse_only(ap, args.only, MATCHERS, "matchers")
    if args.steps is not None and args.steps < 2:
        ap.error(f"--steps must be >= 2 (one warm-up step and one timed step), got {args.steps}")
    res = run(args.quick, only, args.budget_s, args.steps)
    lines = section(res)
    print("\n".join(lines))
    replace_section(Path(args.out), SECTION, lines)
    print(f"wrote the {SECTION} section of {args.out}")
    failed = [n for n, r in res["matchers"].items() if "error" in r]
    if failed:
        print(f"bench-gpu: failed for {', '.join(failed)} (see above)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
