"""`make bench-gpu` in its reduced CPU form (tiny sizes, a few steps), and the perf.md sections it shares."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.benchmarks import gpu
from bench.benchmarks.report import read_section, replace_section

REPO = Path(__file__).resolve().parents[1]


def _make(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(["make", "-s", *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)


def test_replace_section_keeps_the_rest_of_the_file(tmp_path):
    out = tmp_path / "perf.md"
    out.write_text("# Performance report\n\n## CPU\nkept\n")
    replace_section(out, "bench-gpu", ["## GPU", "first"])
    replace_section(out, "bench-gpu", ["## GPU", "second"])
    text = out.read_text()
    assert text.startswith("# Performance report\n\n## CPU\nkept\n")
    assert "second" in text and "first" not in text and text.count("<!-- bench-gpu:begin -->") == 1
    assert read_section(out, "bench-gpu")[1:3] == ["## GPU", "second"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_make_bench_gpu_quick_on_cpu_writes_its_section_only(tmp_path):
    out = tmp_path / "perf.md"
    out.write_text("# Performance report\n\nCPU figures of make bench\n")
    refused = _make("bench-gpu", f"ARGS=--out {out}")  # `make bench-gpu` as documented: needs CUDA
    assert refused.returncode != 0 and "no CUDA device" in refused.stderr and "--quick" in refused.stderr
    done = _make("bench-gpu", f"ARGS=--quick --modes fp32,bf16,tf32 --out {out}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[bench-gpu] device: CPU" in done.stdout
    text = out.read_text()
    assert text.startswith("# Performance report\n\nCPU figures of make bench\n")
    section = "\n".join(read_section(out, gpu.SECTION))
    for name in gpu.MATCHERS:
        for mode in ("fp32", "bf16", "tf32"):
            assert f"| {name} | {mode} | " in section
    assert "FAILED" not in section and "Partial" not in section
    assert "10 × 50" in section  # the COCO-5K-shaped split (reduced)
    assert "official per-caption loop" in section and "VSE∞ training step" in section
    assert section.count("| baseline | ") == 3  # the demo suite's cells, three seeds
    assert "one process" in section and "MPS: not run: no CUDA device" in section
    rates = json.loads((tmp_path / "gpu-rates.quick.json").read_text())
    # a --quick / CPU run never writes the rates GPU plans read, and its own file is refused for them
    assert rates["quick"] is True and not (tmp_path / "gpu-rates.json").exists()
    from bench.harness.estimate import load_gpu_rates

    with pytest.raises(ValueError, match="rates of a --quick or CPU run"):
        load_gpu_rates(tmp_path / "gpu-rates.quick.json")
    assert set(rates["rates"]) == set(gpu.MATCHERS)
    assert set(rates["rates"]["sgr"]) == {"fp32", "bf16", "tf32"}
    assert rates["rates"]["sgr"]["fp32"]["train_samples_per_s"] > 0 and rates["rates"]["sgr"]["fp32"]["score_us_per_pair"] > 0


@pytest.mark.slow
def test_bench_gpu_runs_from_a_copy_that_is_not_a_git_checkout(tmp_path):
    """As the device runs it: a plain copy of the tree, PYTHONPATH at its root, no git; compile modes included."""
    copy = tmp_path / "tree"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".git", ".venv", "results", "data", "__pycache__"))
    (copy / "results" / "tables").mkdir(parents=True)
    out = copy / "out" / "perf.md"
    env = dict(os.environ, PYTHONPATH=str(copy), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "bench.benchmarks.gpu", "--device", "cpu", "--only", "xattn,vse_infty",
                          "--modes", "fp32,fp32+compile", "--sections", "matchers,eval", "--out", str(out)],
                         cwd=copy, env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    section = "\n".join(read_section(out, gpu.SECTION))
    assert "commit none (not a git checkout)" in section
    assert "| xattn | fp32+compile | " in section and "| vse_infty | fp32+compile" not in section  # dual: n/a
    rates = json.loads((out.parent / "gpu-rates.quick.json").read_text())
    assert rates["commit"] is None and rates["card"].startswith("CPU") and rates["torch"] == torch.__version__
    assert set(rates["rates"]["xattn"]) == {"fp32", "fp32+compile"}


def test_matcher_measurements_are_consistent():
    """Reduced VSE∞ run: same init → the two precisions start from the same weights; FLOPs include the GRUs."""
    cfg = dict(gpu.QUICK, steps=3, warmup=1)
    work = gpu.Workload("vse_infty", cfg, torch.device("cpu"))
    flops = gpu.step_flops(work)
    gru_fwd = sum(gpu._rnn_flops(m, (torch.zeros(2, 5, m.input_size),)) for m in work.model.modules()
                  if isinstance(m, torch.nn.GRU))
    assert flops > gru_fwd > 0
    state = {k: v.clone() for k, v in work.model.state_dict().items()}
    a = gpu.train_run(work, state, 3, 1, bf16=False)
    b = gpu.train_run(work, state, 3, 1, bf16=False)
    assert torch.equal(a["held_out_scores"], b["held_out_scores"])  # deterministic from one init
    assert a["samples_per_s"] > 0 and a["peak_mem_mb"] is None
    r = gpu.eval_time(work, a["model"], 200, 20, budget_s=0.0)  # a dual encoder scores in one matmul: never cut
    assert not r["extrapolated"] and r["scored_images"] == 200
    sgr = gpu.Workload("sgr", cfg, torch.device("cpu"))
    r = gpu.eval_time(sgr, sgr.model, 200, 20, budget_s=0.0)  # budget too small: one tile measured, extrapolated
    assert r["extrapolated"] and r["scored_images"] == 128 and r["score_s"] > 0


def test_bench_gpu_rejects_unknown_matchers():
    out = subprocess.run([sys.executable, "-m", "bench.benchmarks.gpu", "--quick", "--only", "vse"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2 and "unknown matchers ['vse']" in out.stderr
