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


@pytest.fixture(scope="session")
def rehearsal_data(tmp_path_factory):
    """The `rehearsal` preset (published shapes: 36 x 2048 regions, 224 px images and a Karpathy file for
    both datasets, few images; ~300 MB, ~5 s), generated once per test session."""
    from bench.data.synth import generate

    return generate(tmp_path_factory.mktemp("synth") / "rehearsal", preset="rehearsal", seed=0)


@pytest.fixture(scope="session")
def published_weights(tmp_path_factory):
    """Local CLIP ViT-B/32 and BERT-base folders with random weights (``python -m bench.data.weights``;
    ~1 GB, ~15 s), generated once per test session: {"clip": folder, "bert": folder}."""
    from bench.data.weights import generate

    return generate(tmp_path_factory.mktemp("weights"), "all", seed=0)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under ``REQUIRE_SLURM=1`` (CI) a SLURM test never skips: a skip there is a failure."""
    outcome = yield
    report = outcome.get_result()
    if (report.skipped and os.environ.get("REQUIRE_SLURM") == "1" and os.environ.get("SLURM_TEST_EXISTING") != "1"
            and item.get_closest_marker("slurm") is not None and not hasattr(report, "wasxfail")):
        report.outcome = "failed"
        report.longrepr = f"REQUIRE_SLURM=1 but the SLURM test {item.nodeid} was skipped: {report.longrepr}"
