"""Shared fixtures: offline environment, the tiny embedded dataset, the local SLURM cluster."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import pytest  # noqa: E402

try:  # the SLURM cluster fixture (tests/slurm_cluster.py)
    from tests.slurm_cluster import slurm_cluster  # noqa: F401
except ImportError:  # pragma: no cover - while that module is absent
    pass


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """The `tiny` preset of the embedded dataset, generated once per test session."""
    from bench.data.synth import generate

    return generate(tmp_path_factory.mktemp("synth") / "tiny", preset="tiny", seed=0)
