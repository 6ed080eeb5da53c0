"""Device placement, checked without a GPU.

On a CUDA run a tensor that our code makes without ``device=`` lands on the CPU and then meets CUDA tensors:
the run stops with "Expected all tensors to be on the same device" (or, for a host copy, silently synchronises).
On a CPU-only machine that mistake is invisible, since every tensor is on the CPU. ``FactoriesElsewhere`` makes
it visible: while it is active, a factory call (``torch.zeros``, ``arange``, ``tensor`` …) *in this repository's
code* that names no device makes its tensor on ``meta`` instead, so meeting the real (CPU) tensors of the model
and the batch raises exactly where the CUDA run would. Host-side code names ``device="cpu"`` on purpose; the
data loaders (``bench/data``, which build CPU batches by design) and third-party code are left alone.

It runs the training step of every matcher and of every strategy configuration of the suites, the dev
evaluation, and the pieces ``make bench-gpu`` runs on the card (its timed training and scoring, the
official-style loops it compares against).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

import strategies
from bench.benchmarks import bench_reference, gpu
from bench.benchmarks import vse_reference as ref
from bench.benchmarks.bench_matchers import VOCAB_SIZE, synthetic_batch
from bench.benchmarks.sgraf_loop import loop_scores
from bench.harness.cells import expand
from bench.harness.config import SUITES_DIR, load_suite
from bench.precision import RunMode
from bench.spec import Cell
from bench.train import _set_up, _train_step, evaluate_dev, run_cell
from tests.test_matchers_train import SMALL  # the small size of every matcher

REPO = Path(__file__).resolve().parents[1]
FACTORIES = {torch.arange, torch.as_tensor, torch.asarray, torch.empty, torch.empty_strided, torch.eye, torch.full,
             torch.linspace, torch.logspace, torch.ones, torch.rand, torch.randint, torch.randn, torch.randperm,
             torch.scalar_tensor, torch.tensor, torch.tril_indices, torch.triu_indices, torch.zeros}
HOST_SIDE = (REPO / "bench" / "data", REPO / ".venv")


def _ours(filename: str) -> bool:
    path = Path(filename)
    return path.is_relative_to(REPO) and not any(path.is_relative_to(d) for d in HOST_SIDE)


class FactoriesElsewhere(TorchFunctionMode):
    """Tensors made by our code without a device go to ``meta`` (the stand-in for "not where the model is")."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if (func in FACTORIES and kwargs.get("device") is None and not (args and torch.is_tensor(args[0]))
                and _ours(sys._getframe(1).f_code.co_filename)):
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def test_the_check_catches_a_tensor_made_without_a_device():
    def forgot(x):
        return x + torch.ones(3)

    def placed(x):
        return x + torch.ones(3, device=x.device)

    x = torch.zeros(3)
    assert torch.equal(forgot(x), placed(x))  # on one device the mistake does not show
    with FactoriesElsewhere():
        assert torch.equal(placed(x), torch.ones(3, device="cpu"))
        with pytest.raises(RuntimeError, match="device"):
            forgot(x)


# ------------------------------------------------------------------------------------------ the trainer
def suite_strategies() -> list[dict]:
    """Every strategy configuration (name and parameters) that a suite runs."""
    seen = {}
    for path in sorted(SUITES_DIR.glob("*.yaml")):
        for cell in expand(load_suite(path.stem)):
            s = {"name": cell.strategy.name, "params": cell.strategy.params}
            seen.setdefault(json.dumps(s, sort_keys=True), s)
    return list(seen.values())


def _cell(data, matcher: str, strategy: dict, **sched) -> Cell:
    return Cell.from_dict({"dataset": {"name": "f30k_precomp", "data_root": str(data), "vocab_root": str(data / "vocab")},
            "matcher": {"name": matcher, **SMALL[matcher]}, "strategy": strategy,
            "schedule": {"epochs": 3, "batch_size": 16, "max_steps_per_epoch": 1, **sched},
            "eval": {"dev_images": 20, "batch_size": 32}, "seed": 0})


@pytest.fixture(scope="module")
def anchor(tiny_data, tmp_path_factory):
    """A trained baseline checkpoint for the strategies that start from one (OAS)."""
    run_dir = tmp_path_factory.mktemp("anchor")
    cell = _cell(tiny_data, "vse_infty", {"name": "baseline"}, epochs=1)
    assert run_cell(cell, run_dir)["status"] == "done"
    return run_dir / "best.pt"


def _steps_and_dev_eval(cell: dict, run_dir: Path, anchor_checkpoint=None) -> None:
    run = _set_up(cell, run_dir, None, anchor_checkpoint, False)
    loader = torch.utils.data.DataLoader(run.dataset, batch_size=run.cell.schedule.batch_size,
                                         collate_fn=run.data.collate())
    batches = iter(loader)
    scales = {n: getattr(m, "logit_scale", None) for n, m in run.branches.items()}
    with FactoriesElsewhere():
        for epoch in (0, 2):  # the first epoch and a later one (VSE∞ switches to the hardest negative)
            ctx = strategies.StepContext(epoch=epoch, step=epoch, total_steps=3, logit_scales=scales)
            losses = _train_step(next(batches), run.branches, run.specs, run.optimizers, run.strategy, ctx,
                                 run.cell.schedule, run.device, run.run_dir, run.mode)
            assert all(torch.isfinite(v) for v in losses.values())
        with run.mode.autocast():
            dev = evaluate_dev(run.branches[run.reported], run.data, run.cell, run.device)
    assert 0 <= dev["rsum"] <= 600


@pytest.mark.parametrize("matcher", sorted(SMALL))
def test_every_matcher_trains_and_evaluates_with_its_tensors_placed(tiny_data, tmp_path, matcher):
    _steps_and_dev_eval(_cell(tiny_data, matcher, {"name": "baseline"}), tmp_path / "run")


def _label(s: dict) -> str:
    return s["name"] + "(" + ",".join(f"{k}={v}" for k, v in sorted(s["params"].items())) + ")"


@pytest.mark.parametrize("strategy", suite_strategies(), ids=_label)
def test_every_suite_strategy_trains_with_its_tensors_placed(tiny_data, tmp_path, anchor, strategy):
    needs = strategies.build(strategy["name"], **strategy["params"]).needs_anchor_checkpoint
    _steps_and_dev_eval(_cell(tiny_data, "vse_infty", strategy), tmp_path / "run", anchor if needs else None)


@pytest.mark.parametrize("matcher", ["sgr", "xattn"])
def test_bf16_steps_place_their_tensors(tiny_data, tmp_path, matcher):
    _steps_and_dev_eval(_cell(tiny_data, matcher, {"name": "baseline"}, precision="bf16"), tmp_path / "run")


# ------------------------------------------------------------------------------- make bench-gpu's pieces
@pytest.mark.parametrize("name", gpu.MATCHERS)
def test_bench_gpu_timings_place_their_tensors(name):
    work = gpu.Workload(name, dict(gpu.QUICK), torch.device("cpu"))
    state = copy.deepcopy(work.model.state_dict())
    with FactoriesElsewhere():
        for precision in ("fp32", "bf16"):
            run = gpu.train_run(work, state, 3, 1, RunMode(precision, False, "cpu"))
            assert len(run["losses"]) == 3
        rate = gpu.score_rate(work, work.model, RunMode("fp32", False, "cpu"), 6, 12, reps=1)
        assert rate["score_us_per_pair"] > 0
        ev = gpu.eval_time(work, work.model, 6, 30)
        assert ev["scored_images"] == 6
        if name in gpu.PAIRWISE:
            model = work.model.eval()
            batch = synthetic_batch(4, work.img_dim, seed=3)
            with torch.no_grad():
                scores = loop_scores(model, model.encode_images(batch), model.encode_captions(batch))
            assert scores.shape == (4, 4)


def test_official_style_loops_place_their_tensors():
    with FactoriesElsewhere():
        out = bench_reference.bench_train_step("demo", 8, 1, torch.device("cpu"))
    assert out["losses_equal"], out
    import models

    model = models.build("vse_infty", vocab_size=VOCAB_SIZE, **bench_reference.DEMO)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = synthetic_batch(8, bench_reference.DEMO["img_dim"], seed=0)
    split = bench_reference._split(4, bench_reference.DEMO["img_dim"])
    with FactoriesElsewhere():
        assert torch.isfinite(torch.tensor(ref.train_step(model, opt, batch), device="cpu"))
        ranks = ref.evalrank(model, split["images"], split["image_lengths"], split["captions"], split["caption_lengths"])
    assert 0 <= ranks["rsum"] <= 600


def test_the_deferred_finiteness_check_of_a_cuda_run_names_the_first_bad_step(tmp_path):
    """On CUDA the step leaves its losses on the device; they are checked in groups, one host read each."""
    from bench.train import TrainingDiverged, _check_finite

    def losses(v):
        return {"target": torch.tensor(v, device="cpu"), "anchor": torch.tensor(1.0, device="cpu")}

    pending = [(0, 7, losses(1.0)), (0, 8, losses(0.5))]
    _check_finite(pending, tmp_path)
    assert pending == []  # all finite: the group is done
    pending = [(1, 9, losses(1.0)), (1, 10, losses(float("nan"))), (1, 11, losses(float("inf")))]
    with pytest.raises(TrainingDiverged, match=r"non-finite loss \{'target': nan\} at epoch 1, step 10"):
        _check_finite(pending, tmp_path)
