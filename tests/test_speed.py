"""Speed plumbing: per-process torch threads for cells run side by side by the local executor."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from bench.harness.cells import expand
from bench.harness.config import load_suite
from bench.harness.jobs import CellJob
from bench.harness.slurm import make_executor, submit_array, wait_for_jobs
from bench.harness.store import locate_run

REPO = Path(__file__).resolve().parents[1]


def _tiny_suite(tmp_path, data):
    spec = {"name": "threads", "datasets": [{"name": "f30k_precomp", "label": "tiny", "data_root": str(data)}],
            "matchers": [{"name": "vse_infty"}], "strategies": [{"name": "baseline"}], "seeds": [0, 1],
            "scale": "smoke",
            "scales": {"smoke": {
                "schedule": {"default": {"epochs": 1, "batch_size": 16, "lr": 2e-3, "max_steps_per_epoch": 2}},
                "matchers": {"vse_infty": {"embed_size": 16, "word_dim": 8}}}},
            "eval": {"dev_images": 20}}
    path = tmp_path / "threads.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    return load_suite(path)


@pytest.mark.slow
def test_parallel_local_cells_each_get_their_cpus_as_torch_threads(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the cell, not the environment, sets the count
    cells = [cell.replace(resources=replace(cell.resources, cpus=cpus))
             for cell, cpus in zip(expand(_tiny_suite(tmp_path, tiny_data)), (1, 2))]
    root = tmp_path / "runs"
    jobs = submit_array(make_executor("local", tmp_path / "jobs"), None, [CellJob(c, root) for c in cells])
    assert not wait_for_jobs(jobs, raise_lost=False, timeout_s=600)
    for cell, cpus in zip(cells, (1, 2)):
        result = json.loads((locate_run(cell, root) / "result.json").read_text())
        assert result["cost"]["torch_threads"] == cpus, (cell.id, result["cost"])
        split = result["cost"]["time_split_s"]  # where the cell's time went
        assert min(split[k] for k in ("setup_s", "steps_s", "checkpoint_s", "dev_eval_s", "test_eval_s")) > 0
        assert sum(v for k, v in split.items() if k != "total_s") == pytest.approx(split["total_s"])
        assert split["other_s"] >= 0


@pytest.mark.parametrize("num_layers", [1, 2])
def test_padded_bigru_equals_the_packed_gru_outputs_and_gradients(num_layers):
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from models.vse_infty import padded_bigru

    torch.manual_seed(0)
    rnn = torch.nn.GRU(12, 16, num_layers, batch_first=True, bidirectional=True)
    lengths = torch.tensor([7, 3, 9, 1, 9, 5])
    x = torch.randn(6, 9, 12, requires_grad=True)
    packed, _ = rnn(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    want, _ = pad_packed_sequence(packed, batch_first=True, total_length=9)
    got = padded_bigru(rnn, x, lengths)
    assert torch.allclose(got, want, atol=1e-6)
    g = torch.randn_like(want)
    grads_want = torch.autograd.grad((want * g).sum(), [x, *rnn.parameters()])
    grads_got = torch.autograd.grad((got * g).sum(), [x, *rnn.parameters()])
    for a, b in zip(grads_got, grads_want):
        assert torch.allclose(a, b, atol=1e-5)


def test_reference_loops_give_our_numbers_and_make_bench_prints_their_rows(tmp_path):
    """The reference-loop side of `make bench` computes what ours computes (loss, RSUM, scores)."""
    import torch

    from bench.benchmarks import __main__ as bench_main
    from bench.benchmarks import bench_reference

    step = bench_reference.bench_train_step("demo", 8, 2, torch.device("cpu"))
    assert step["losses_equal"] and step["ours_s"] > 0 and step["ref_s"] > 0
    ev = bench_reference.bench_vse_eval(20)
    assert ev["rsum_equal"] and 0 < ev["rsum_ours"] < 600
    sgr = bench_reference.bench_sgr_eval(4, 10, dict(embed_size=32, word_dim=16, sim_dim=16, img_dim=32))
    assert sgr["scores_equal"]
    gru = bench_reference.bench_gru_paths([(8, 16, 4, 2, 6), (8, 256, 4, 2, 6)], reps=1)
    assert [g["chosen"] for g in gru] == ["padded", "packed"] and all(g["padded_s"] > 0 < g["packed_s"] for g in gru)
    lines = bench_main.section_reference({"device": "cpu", "threads": 1, "train": [step], "vse_eval": ev,
                                          "sgr_eval": sgr, "gru": gru})
    assert sum(line.startswith("| VSE∞ training step") for line in lines) == 1
    assert any(line.startswith("| SGR evaluation") for line in lines)
    assert sum(line.startswith("| 8 | ") for line in lines) == 2  # one row per BiGRU shape


@pytest.mark.slow
def test_bench_cell_splits_a_demo_cells_time():
    """`python -m bench.benchmarks.bench_cell --quick`: every phase measured, the phases add up to the wall time."""
    from bench.benchmarks import bench_cell

    r = bench_cell.run(quick=True)
    s = r["split"]
    assert r["steps"] == 4 and s["steps_s"] > 0 and s["dev_eval_s"] > 0 and s["checkpoint_s"] > 0
    assert r["process_start_s"] > 0 and r["imports_s"] > 0
    lines = bench_cell.section(r)
    assert any(line.startswith("| training steps |") for line in lines)
    assert sum(float(line.split("|")[2]) for line in lines if line.startswith("| ") and "phase" not in line) \
        == pytest.approx(r["wall_offline_s"], rel=0.05, abs=0.5)


def test_the_cpu_bigru_path_is_picked_by_the_batch_shape_and_both_give_the_same_caption_embeddings():
    import torch

    from models.vse_infty import BiGRUTextEncoder, cpu_gru_path, padded_bigru

    def lengths(b, lo, hi):
        return torch.linspace(lo, hi, b).round().long()

    assert cpu_gru_path(128, 64, lengths(64, 8, 20)) == "padded"  # the demo's size: small hidden
    assert cpu_gru_path(1024, 300, lengths(32, 8, 20)) == "packed"  # published hidden, short batch
    assert cpu_gru_path(1024, 300, lengths(128, 5, 45)) == "padded"  # a long batch: the zero-fill dominates
    torch.manual_seed(0)
    enc = BiGRUTextEncoder(vocab_size=50, word_dim=12, embed_size=256)
    lens = torch.tensor([7, 3, 9, 1, 9, 5])
    caps = torch.randint(4, 50, (6, 9)) * (torch.arange(9) < lens[:, None])
    assert cpu_gru_path(256, 12, lens) == "packed"
    got = enc(caps, lens)
    words = enc.embed(caps)
    out = padded_bigru(enc.rnn, words, lens)
    want = torch.nn.functional.normalize(enc.gpo(out.view(6, 9, 2, -1).mean(dim=2), lens), dim=-1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_make_bench_modes_section_measures_each_cpu_mode_against_fp32():
    """`python -m bench.benchmarks.bench_modes --quick --only sgr` (its docstring's command; `make bench`'s CPU
    modes section): every mode a CPU cell can ask for is timed beside fp32 eager, compilation apart, and the
    compiled run trains to fp32's losses."""
    from bench.benchmarks import __main__ as bench_main

    assert "modes" in bench_main.ORDER
    out = subprocess.run([sys.executable, "-m", "bench.benchmarks.bench_modes", "--quick", "--only", "sgr"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    r = json.loads(text[text.index("\n{") + 1:])
    rows = r["matchers"]["sgr"]
    assert list(rows) == ["fp32", "fp32+compile", "bf16"]
    assert rows["fp32"]["compile_s"] is None and rows["fp32+compile"]["compile_s"] > 0
    assert all(v["train_samples_per_s"] > 0 and v["score_us_per_pair"] > 0 for v in rows.values())
    assert abs(rows["fp32+compile"]["final_loss"] - rows["fp32"]["final_loss"]) < 1e-4
    assert bench_main.section_modes(r) == text[:text.index("\n{")].splitlines()[-len(bench_main.section_modes(r)):]
    assert sum(line.startswith("| sgr | ") for line in text.splitlines()) == 3
    assert any(line.startswith("| sgr | fp32 | ") and "| 1.00× |" in line for line in text.splitlines())
