"""The command line end to end on the tiny embedded data: sweep → status → collect, re-runs and retries."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.harness.named_sweeps import SWEEPS_DIR

REPO = Path(__file__).resolve().parents[1]


def _suite(tmp_path, data, name="cli", strategies=None, epochs=1):
    spec = {
        "name": name,
        "datasets": [{"name": "f30k_precomp", "label": "tiny", "data_root": str(data)}],
        "matchers": [{"name": "vse_infty", "label": "VSE∞ tiny"}],
        "strategies": strategies or [{"name": "baseline"}, {"name": "dbl", "label": "DBL rel (OSS)",
                                                           "params": {"loss": "rel", "scenario": "oss"}}],
        "seeds": [0],
        "scale": "smoke",
        "scales": {"smoke": {"schedule": {"default": {"epochs": epochs, "batch_size": 32, "lr": 2e-3,
                                                      "max_steps_per_epoch": 3}},
                             "matchers": {"vse_infty": {"embed_size": 32, "word_dim": 16}}}},
        "eval": {"dev_images": 30},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    return path


def bench(*args, cwd=REPO, check=True):
    env = dict(os.environ, WANDB_MODE="offline", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-m", "bench", *map(str, args)], capture_output=True, text=True,
                         cwd=cwd, env=env, timeout=600)
    if check and out.returncode != 0:
        raise AssertionError(f"bench {args} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


@pytest.mark.slow
def test_sweep_status_collect_and_idempotent_rerun(tiny_data, tmp_path):
    suite = _suite(tmp_path, tiny_data)
    root = tmp_path / "runs"
    out = bench("sweep", suite, "--executor", "inline", "--root", root)
    assert "2 cells: done 2" in out.stdout
    runs = sorted(p for p in (root / "cli").iterdir() if p.is_dir() and p.name != SWEEPS_DIR)  # and the sweep's record
    assert len(runs) == 2 and (root / "cli" / SWEEPS_DIR).is_dir()
    for run in runs:
        result = json.loads((run / "result.json").read_text())
        assert (run / "done").exists() and (run / "ranks.npz").exists() and (run / "config.yaml").exists()
        assert result["metrics"]["f30k_1k"]["rsum"] > 0
        assert {"git", "packages", "host", "device", "data_fingerprint", "seed"} <= set(result["provenance"])
        assert {"commit", "dirty"} <= set(result["provenance"]["git"])
    stamps = {r: (r / "result.json").stat().st_mtime_ns for r in runs}
    # a second sweep finds every cell done and trains nothing
    bench("sweep", suite, "--executor", "inline", "--root", root)
    assert stamps == {r: (r / "result.json").stat().st_mtime_ns for r in runs}
    status = bench("status", suite, "--root", root).stdout
    assert status.count("done") >= 2
    collect = bench("collect", suite, "--root", root, "--tables", tmp_path / "tables",
                    "--figures", tmp_path / "figures").stdout
    assert (tmp_path / "tables" / "cli.md").exists() and (tmp_path / "figures" / "cli").is_dir()
    assert "DBL rel (OSS)" in collect and "RSUM" in collect
    # one cell by id, forced: replaced only when complete
    cell_id = runs[0].name
    bench("run", suite, "--cell", cell_id[:8], "--force", "--root", root)
    assert (runs[0] / "done").exists()
    assert (runs[0] / "result.json").stat().st_mtime_ns != stamps[runs[0]]


@pytest.mark.slow
def test_a_failing_cell_fails_alone_and_retry_failed_reruns_only_it(tiny_data, tmp_path):
    suite = _suite(tmp_path, tiny_data, name="retry", strategies=[
        {"name": "baseline"},
        {"name": "momentum", "label": "momentum", "params": {"m0": 0.9}}])
    root = tmp_path / "runs"
    # make the momentum cell fail at train time: its run folder is a file, so it cannot be created
    from bench.harness.cells import expand
    from bench.harness.config import load_suite

    cells = {c.strategy.name: c for c in expand(load_suite(suite))}
    bad = root / "retry" / cells["momentum"].id
    bad.parent.mkdir(parents=True)
    bad.write_text("not a folder")
    out = bench("sweep", suite, "--executor", "inline", "--root", root, check=False)
    assert (root / "retry" / cells["baseline"].id / "done").exists()
    assert not (bad.is_dir() and (bad / "done").exists())
    bad.unlink()
    # the failed cell shows as pending again once its folder is gone; write a real failure instead
    bad.mkdir()
    (bad / "failed").write_text("RuntimeError: simulated\n")
    status = bench("status", suite, "--root", root).stdout
    assert "failed" in status and "simulated" in status
    baseline_stamp = (root / "retry" / cells["baseline"].id / "result.json").stat().st_mtime_ns
    out = bench("sweep", suite, "--executor", "inline", "--root", root, "--retry-failed")
    assert "done 2" in out.stdout
    assert (root / "retry" / cells["baseline"].id / "result.json").stat().st_mtime_ns == baseline_stamp


def test_unknown_suite_and_bad_override_give_clear_errors(tmp_path):
    out = bench("sweep", "no-such-suite", check=False)
    assert out.returncode != 0 and "no-such-suite" in out.stderr
    out = bench("status", "demo", "seedz=[0]", check=False)
    assert out.returncode != 0 and "seeds" in out.stderr


def test_sync_dry_run_lists_offline_runs_without_network(tmp_path):
    out = bench("sync", "--root", tmp_path, "--dry-run")
    assert "no offline W&B runs" in out.stdout
