"""Precision and compilation as recipe choices: ids unchanged, bad values refused, compiled pairwise scoring
without graph breaks that agrees with eager, and tiny cells that record the mode they ran with."""

import copy

import pytest
import torch

from bench.benchmarks import gpu
from bench.benchmarks.bench_matchers import VOCAB_SIZE, build_with, synthetic_batch
from bench.harness.cells import cell_id
from bench.harness.collect import run_variant
from bench.precision import RunMode, set_compiled, variant_label
from bench.spec import Cell, resolve
from bench.train import run_cell

TINY = dict(vocab_size=VOCAB_SIZE, embed_size=32, word_dim=16, sim_dim=16, img_dim=32)
PAIRWISE = ("sgr", "saf", "xattn")


def _id_cell(**sched) -> Cell:
    return Cell.from_dict({"dataset": {"name": "f30k_precomp"}, "dataset_label": "F30K", "matcher": {"name": "sgr"},
                           "strategy": {"name": "baseline", "params": {}}, "schedule": dict(sched), "eval": {},
                           "seed": 0})


def test_new_keys_at_their_default_keep_the_id():
    plain = cell_id(_id_cell())
    assert cell_id(_id_cell(precision="fp32", compile=False)) == plain
    assert cell_id(_id_cell(amp=False)) == plain  # the legacy key, as before
    assert len({plain, cell_id(_id_cell(precision="bf16")), cell_id(_id_cell(precision="tf32")),
                cell_id(_id_cell(compile=True)), cell_id(_id_cell(amp=True))}) == 5


@pytest.mark.parametrize("sched, words", [({"precision": "fp16"}, ["schedule.precision", "'fp16'", "bf16"]),
                                          ({"compile": "yes"}, ["schedule.compile", "'yes'"]),
                                          ({"amp": True, "precision": "tf32"}, ["amp", "precision", "'tf32'"])])
def test_bad_modes_are_refused_with_the_key_and_value(sched, words):
    cell = Cell.from_dict({"dataset": {"name": "f30k_precomp"}, "matcher": {"name": "sgr"},
                           "strategy": {"name": "baseline"}, "schedule": sched})
    with pytest.raises(ValueError) as err:
        resolve(cell)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_modes_on_cpu_and_cuda():
    """tf32 is fp32 on a CPU (no TF32 unit), bf16 autocast is real on both; the legacy amp is CUDA only."""
    assert RunMode("tf32", False, "cpu").effective == "fp32" and RunMode("tf32", False, "cuda").effective == "tf32"
    assert RunMode.of({"amp": True}, "cpu").effective == "fp32" and RunMode.of({"amp": True}, "cuda").name == "bf16"
    with RunMode("bf16", False, "cpu").autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert variant_label("fp32", False) == "" and variant_label("bf16", True) == " [bf16, compiled]"


@pytest.mark.parametrize("name", PAIRWISE)
def test_score_has_no_graph_break(name):
    torch.manual_seed(0)
    model = build_with(name, TINY)
    batch = synthetic_batch(5, 32, seed=1)
    for training in (False, True):
        model.train(training)
        img, cap = model.encode_images(batch), model.encode_captions(batch)
        explained = torch._dynamo.explain(model.score)(img, cap)
        assert explained.graph_break_count == 0, explained.break_reasons
        assert explained.graph_count == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", PAIRWISE)
def test_compiled_and_eager_agree(name):
    """fp32 scores within 1e-5 (eval tiles); 20 training steps' losses within 1e-4 (from one initialisation)."""
    torch.manual_seed(0)
    model = build_with(name, TINY).eval()
    batch = synthetic_batch(6, 32, seed=2)
    with torch.no_grad():
        img, cap = model.encode_images(batch), model.encode_captions(batch)
        eager = model.score(img, cap)
        set_compiled(model, True)
        compiled = model.score(img, cap)
        set_compiled(model, False)
    assert (eager - compiled).abs().max() <= 1e-5
    cfg = dict(gpu.QUICK, overrides={k: v for k, v in TINY.items() if k != "vocab_size"})
    work = gpu.Workload(name, cfg, torch.device("cpu"))
    state = copy.deepcopy(work.model.state_dict())
    a = gpu.train_run(work, state, 20, 1, RunMode("fp32", False, "cpu"))
    b = gpu.train_run(work, state, 20, 1, RunMode("fp32", True, "cpu"))
    assert max(abs(x - y) for x, y in zip(a["losses"], b["losses"], strict=True)) <= 1e-4
    assert b["compile_s"] is not None and a["compile_s"] is None


def _tiny_cell(data, matcher, **sched) -> Cell:
    return Cell.from_dict({"dataset": {"name": "f30k_precomp", "data_root": str(data), "vocab_root": str(data / "vocab")},
            "matcher": matcher, "strategy": {"name": "baseline", "params": {}},
            "schedule": {"epochs": 1, "batch_size": 16, "lr": 2e-3, "max_steps_per_epoch": 2, **sched},
            "eval": {"dev_images": 20, "batch_size": 32}, "seed": 0})


SMALL_XATTN = {"name": "xattn", "embed_size": 32, "word_dim": 16, "sim_dim": 16}
SMALL_VSE = {"name": "vse_infty", "embed_size": 32, "word_dim": 16}


@pytest.mark.slow
@pytest.mark.parametrize("matcher, sched, label", [
    (SMALL_VSE, {}, ""),
    (SMALL_VSE, {"precision": "tf32"}, " [tf32]"),
    (SMALL_VSE, {"precision": "bf16"}, " [bf16]"),
    (SMALL_XATTN, {"compile": True}, " [compiled]"),
    (SMALL_XATTN, {"precision": "bf16", "compile": True}, " [bf16, compiled]"),
])
def test_tiny_cell_records_its_mode(tiny_data, tmp_path, matcher, sched, label):
    cell = _tiny_cell(tiny_data, matcher, **sched)
    res = run_cell(cell, tmp_path / "run")
    assert res["status"] == "done"
    mode = res["run_mode"]
    assert mode["precision"] == sched.get("precision", "fp32") and mode["compile"] == sched.get("compile", False)
    assert mode["precision_effective"] == ("fp32" if mode["precision"] == "tf32" else mode["precision"])
    assert res["resolved_cell"]["schedule"]["precision"] == mode["precision"]
    assert run_variant(res, cell) == label  # the table row's matcher label carries it
    rsum = next(iter(res["metrics"].values()))["rsum"]
    assert 0 < rsum <= 600
