"""Ours vs the reference programs' loops, side by side on the same data, shapes and weights.

    python -m bench.benchmarks.bench_reference [--quick]

(1) VSE∞ training step: our trainer's step (``bench.train._train_step``, baseline strategy, AdamW,
    hinge with the hardest negative, gradient clipping) vs ``vse_reference.train_step`` (the official
    loop's control flow), both from the same initial weights on the same batch, at demo size (batch
    128) and at the published size (batch 128 on a GPU, 32 on CPU). Median of interleaved steps;
    the first step's losses must be equal.
(2) VSE∞ evaluation: ``bench.evaluate`` (encode each item once, one matmul, vectorised ranks) vs
    ``vse_reference.evalrank`` (every pair encoded, float64 NumPy, per-query argsort loops) on a
    Flickr30K-test-shaped split at demo size; the RSUMs must be equal.
(3) The CPU BiGRU's padded and packed paths at demo and published shapes, and which one
    ``models.vse_infty.cpu_gru_path`` picks (CPU only).
(4) SGR evaluation: ``bench.evaluate.score_matrix`` (tiles of pairs at once) vs ``sgraf_loop``
    (the official per-caption loop) at published size on every pair of a small slice; the scores
    must agree to 1e-5.
Synthetic inputs (random features and ids): the timings do not depend on the values.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import models
import strategies
from bench.benchmarks import vse_reference as ref
from bench.benchmarks.bench_matchers import VOCAB_SIZE, synthetic_batch
from bench.benchmarks.sgraf_loop import loop_scores
from bench.evaluate import encode_all, score_matrix
from bench.metrics import retrieval_metrics
from bench.spec import Schedule
from bench.train import _make_optimizer, _train_step
from strategies import StepContext

DEMO = dict(embed_size=256, word_dim=64, img_dim=256)


def _timed(fn) -> tuple[float, float, object]:
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


def bench_train_step(size: str, batch_size: int, steps: int, device) -> dict:
    kw = dict(vocab_size=VOCAB_SIZE, **(DEMO if size == "demo" else {}))
    torch.manual_seed(0)
    ours = models.build("vse_infty", **kw).to(device)
    theirs = models.build("vse_infty", **kw).to(device)
    theirs.load_state_dict(ours.state_dict())
    ours.train(), theirs.train()
    sched = Schedule(lr=2e-4, weight_decay=None)
    strategy = strategies.build("baseline", base_loss="hinge")
    specs = {b.name: b for b in strategy.branches()}
    branches = {"target": ours}
    optimizers = {"target": _make_optimizer(ours, sched)}
    weight_decay = optimizers["target"].param_groups[0]["weight_decay"]
    opt_ref = torch.optim.AdamW(list(theirs.parameters()), lr=2e-4, weight_decay=weight_decay)
    batch = synthetic_batch(batch_size, kw.get("img_dim", 2048), seed=0, device=str(device))
    ctx = StepContext(epoch=1, step=0, total_steps=steps + 1)  # past VSE∞'s warm-up: hardest negative

    def step_ours():
        return float(_train_step(batch, branches, specs, optimizers, strategy, ctx, sched, device, ".")["target"])

    def step_ref():
        return ref.train_step(theirs, opt_ref, batch, grad_clip=sched.grad_clip)

    loss_ours, loss_ref = step_ours(), step_ref()  # also the warm-up
    times = {"ours": [], "reference": []}
    for _ in range(steps):  # interleaved, so drift in machine load hits both alike
        for name, fn in (("ours", step_ours), ("reference", step_ref)):
            if device.type == "cuda":
                torch.cuda.synchronize()
            wall, cpu, _ = _timed(fn)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append((wall, cpu))
    med = {n: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for n, v in times.items()}
    return {"size": size, "batch": batch_size, "steps": steps,
            "ours_s": med["ours"][0], "ref_s": med["reference"][0],
            "ours_cpu_s": med["ours"][1], "ref_cpu_s": med["reference"][1],
            "first_loss_ours": loss_ours, "first_loss_ref": loss_ref,
            "losses_equal": abs(loss_ours - loss_ref) <= 1e-4 * max(1.0, abs(loss_ref))}


def _split(n_img: int, img_dim: int, seed: int = 7) -> dict:
    images = synthetic_batch(n_img, img_dim, seed=seed)
    caps = synthetic_batch(5 * n_img, img_dim, seed=seed + 1)
    return {"images": images["images"], "image_lengths": images["image_lengths"],
            "captions": caps["captions"], "caption_lengths": caps["caption_lengths"]}


def _batches(split: dict, kind: str, size: int = 128):
    keys = ("images", "image_lengths") if kind == "images" else ("captions", "caption_lengths")
    n = split[keys[0]].shape[0]
    return [{k: split[k][i:i + size] for k in keys} for i in range(0, n, size)]


def bench_vse_eval(n_img: int) -> dict:
    torch.manual_seed(0)
    model = models.build("vse_infty", vocab_size=VOCAB_SIZE, **DEMO).eval()
    split = _split(n_img, DEMO["img_dim"])

    def ours():
        img, cap = encode_all(model, _batches(split, "images"), _batches(split, "captions"))
        return retrieval_metrics(score_matrix(model, img, cap, progress=False))["rsum"]

    def theirs():
        return ref.evalrank(model, split["images"], split["image_lengths"], split["captions"],
                            split["caption_lengths"])["rsum"]

    w_o, c_o, rsum_o = _timed(ours)
    w_r, c_r, rsum_r = _timed(theirs)
    return {"images": n_img, "captions": 5 * n_img, "ours_s": w_o, "ref_s": w_r, "ours_cpu_s": c_o, "ref_cpu_s": c_r,
            "rsum_ours": rsum_o, "rsum_ref": rsum_r, "rsum_equal": abs(rsum_o - rsum_r) < 1e-6}


@torch.no_grad()
def bench_sgr_eval(n_img: int, n_cap: int, overrides: dict) -> dict:
    torch.manual_seed(0)
    model = models.build("sgr", vocab_size=VOCAB_SIZE, **overrides).eval()
    img_dim = overrides.get("img_dim", 2048)
    img = model.encode_images(synthetic_batch(n_img, img_dim, seed=1))
    cap = model.encode_captions(synthetic_batch(n_cap, img_dim, seed=2))
    w_o, c_o, batched = _timed(lambda: score_matrix(model, img, cap, progress=False))
    w_r, c_r, loop = _timed(lambda: loop_scores(model, img, cap))
    diff = float((batched - loop).abs().max())
    return {"images": n_img, "captions": n_cap, "ours_s": w_o, "ref_s": w_r, "ours_cpu_s": c_o, "ref_cpu_s": c_r,
            "max_abs_diff": diff, "scores_equal": diff <= 1e-5}


GRU_SHAPES = [  # (input size, hidden, batch, shortest and longest caption): demo and published sizes
    (64, 128, 64, 8, 20), (64, 256, 128, 8, 20), (300, 1024, 32, 8, 20), (300, 1024, 128, 8, 20),
    (300, 1024, 32, 5, 45), (300, 1024, 128, 5, 45)]


def bench_gru_paths(shapes, reps: int = 5) -> list[dict]:
    """The CPU BiGRU's two paths (padded, packed), forward + backward, at each shape, interleaved
    medians; ``chosen`` is what ``models.vse_infty.cpu_gru_path`` picks for that batch."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from models.vse_infty import cpu_gru_path, padded_bigru

    rows = []
    for word, hidden, b, lo, hi in shapes:
        g = torch.Generator().manual_seed(0)
        rnn = torch.nn.GRU(word, hidden, 1, batch_first=True, bidirectional=True)
        lengths = torch.randint(lo, hi + 1, (b,), generator=g)
        width = int(lengths.max())
        x = torch.randn(b, width, word, generator=g, requires_grad=True)

        def padded(rnn=rnn, x=x, lengths=lengths):
            padded_bigru(rnn, x, lengths).sum().backward()

        def packed(rnn=rnn, x=x, lengths=lengths, width=width):
            out, _ = rnn(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
            pad_packed_sequence(out, batch_first=True, total_length=width)[0].sum().backward()

        times = {"padded": [], "packed": []}
        padded(), packed()
        for _ in range(reps):
            for name, fn in (("padded", padded), ("packed", packed)):
                wall, _, _ = _timed(fn)
                times[name].append(wall)
        med = {n: statistics.median(v) for n, v in times.items()}
        chosen = cpu_gru_path(hidden, word, lengths)
        rows.append({"input": word, "hidden": hidden, "batch": b, "lengths": f"{lo}-{hi}", "max_len": width,
                     "padded_s": med["padded"], "packed_s": med["packed"], "chosen": chosen,
                     "chose_faster": med[chosen] <= min(med.values()) * 1.02})  # within 2%: a tie
    return rows


def run(quick: bool = False, device: str | None = None) -> dict:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    published_batch = 128 if device.type == "cuda" else (4 if quick else 32)
    steps = 2 if quick else 10
    train = [bench_train_step("demo", 8 if quick else 128, steps, device),
             bench_train_step("published", published_batch, 2 if quick else 5, device)]
    gru = bench_gru_paths([(16, 32, 8, 4, 9)] if quick else GRU_SHAPES, reps=1 if quick else 5) \
        if device.type == "cpu" else []
    return {"device": str(device), "threads": torch.get_num_threads(), "train": train, "gru": gru,
            "vse_eval": bench_vse_eval(20 if quick else 1000),
            "sgr_eval": bench_sgr_eval(*((4, 10) if quick else (20, 100)),
                                       dict(embed_size=32, word_dim=16, sim_dim=16, img_dim=32) if quick else {})}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    args = ap.parse_args(argv)
    print(json.dumps(run(quick=args.quick), indent=1))


if __name__ == "__main__":
    main()
