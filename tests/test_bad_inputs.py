"""The catalogue of bad inputs (docs/bad-inputs.md): one test per entry. Each asserts that the
message names what is wrong, where (file / key / value) and the fix, and that no earlier result is
lost or overwritten where a result could be at stake."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench import checkpoint as ckpt
from bench.data import DataError
from bench.harness.cells import expand
from bench.harness.config import ConfigError, apply_overrides, load_suite
from bench.harness.slurm import cluster_reachable, make_executor
from bench.harness.store import cell_state, run_cell_in_store, run_dir_for
from bench.spec import Cell
from bench.train import run_cell

SUITE = {
    "name": "bad",
    "datasets": [{"name": "f30k_precomp", "label": "synth", "data_root": "/data/x"}],
    "matchers": [{"name": "vse_infty"}],
    "strategies": [{"name": "baseline"}, {"name": "dbl", "params": {"loss": "abs", "scenario": "oss"}}],
    "seeds": [0, 1],
    "scales": {"full": {"schedule": {"vse_infty": {"epochs": 25, "lr": 5e-4, "batch_size": 128}}}},
}
SMALL_VSE = {"name": "vse_infty", "embed_size": 16, "word_dim": 8}
DONE_SNAPSHOT: dict[str, dict] = {}


def suite_file(tmp_path, change=None, text=None) -> Path:
    raw = yaml.safe_load(yaml.safe_dump(SUITE))
    if change:
        change(raw)
    path = tmp_path / "suite.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(raw))
    return path


def config_error(tmp_path, change=None, text=None) -> str:
    path = suite_file(tmp_path, change, text)
    with pytest.raises(ConfigError) as info:
        expand(load_suite(path))
    msg = str(info.value)
    assert str(path) in msg  # every suite error names the file
    return msg


def train_cell(data, cid="badinputcell", strategy=None, matcher=None, epochs=1, **sched) -> Cell:
    return Cell.from_dict({"id": cid, "suite": "bad", "seed": 0,
            "dataset": {"name": "f30k_precomp", "data_root": str(data), "vocab_root": str(data / "vocab")},
            "matcher": dict(matcher or SMALL_VSE), "strategy": strategy or {"name": "baseline", "params": {}},
            "schedule": {"epochs": epochs, "batch_size": 32, "lr": 2e-3, "max_steps_per_epoch": 1, **sched},
            "eval": {"dev_images": 1000, "batch_size": 64}})


@pytest.fixture
def data(tiny_data, tmp_path):
    """A private copy of the tiny embedded dataset (2 MB) that a test may break."""
    return Path(shutil.copytree(tiny_data, tmp_path / "data"))


@pytest.fixture(scope="module")
def done_baseline(tiny_data, tmp_path_factory):
    """A store holding one finished baseline cell (the earlier result that must survive)."""
    root = tmp_path_factory.mktemp("store")
    cell = train_cell(tiny_data, cid="baselinecell")
    assert run_cell_in_store(cell, root, tracker_factory=None)["state"] == "done"
    DONE_SNAPSHOT[cell.id] = snapshot(run_dir_for(cell, root))
    return root, cell


def snapshot(run_dir: Path) -> dict:
    return {p.name: p.read_bytes() for p in Path(run_dir).iterdir() if p.is_file()}


# ----------------------------------------------------------------------------- suite files

def test_malformed_yaml(tmp_path):
    msg = config_error(tmp_path, text="name: bad\nseeds: [0, 1\n")
    assert "not valid YAML" in msg and "line" in msg


def test_unknown_key_names_the_closest_valid_key(tmp_path):
    msg = config_error(tmp_path, lambda r: r["strategies"][1].update(param=r["strategies"][1].pop("params")))
    assert "strategies[1].param" in msg and "Did you mean: params" in msg


def test_wrong_type(tmp_path):
    msg = config_error(tmp_path, lambda r: r["scales"]["full"]["schedule"]["vse_infty"].update(epochs="ten"))
    assert "scales.full.schedule.vse_infty.epochs" in msg and "expected int, got str 'ten'" in msg


def test_unknown_matcher_lists_the_valid_ones(tmp_path):
    msg = config_error(tmp_path, lambda r: r["matchers"][0].update(name="vse_infinity"))
    assert "matchers[0].name" in msg and "unknown matcher 'vse_infinity'" in msg
    assert "Did you mean: vse_infty" in msg and "sgraf" in msg and "clip" in msg


def test_unknown_strategy_lists_the_valid_ones(tmp_path):
    msg = config_error(tmp_path, lambda r: r["strategies"][0].update(name="boosting"))
    assert "strategies[0].name" in msg and "unknown strategy 'boosting'" in msg
    assert "dbl" in msg and "dml" in msg and "baseline" in msg


def test_invalid_strategy_parameter_value_lists_the_choices(tmp_path):
    msg = config_error(tmp_path, lambda r: r["strategies"][1]["params"].update(scenario="oass"))
    assert "strategies[1].params.scenario" in msg and "'oass'" in msg and "Valid: mss, oas, oss" in msg


def test_required_strategy_parameter_missing(tmp_path):
    msg = config_error(tmp_path, lambda r: r["strategies"][1]["params"].pop("scenario"))
    assert "strategies[1].params.scenario" in msg and "required parameter of strategy 'dbl' missing" in msg


def test_a_suite_with_zero_cells(tmp_path):
    msg = config_error(tmp_path, lambda r: r.update(strategies=[]))
    assert "strategies: expected a non-empty list, got []" in msg
    msg = config_error(tmp_path, lambda r: r.update(seeds=[]))
    assert "seeds: empty list: give at least one seed" in msg


def test_a_seed_list_with_duplicates(tmp_path):
    msg = config_error(tmp_path, lambda r: r.update(seeds=[0, 1, 0]))
    assert "seeds" in msg and "[0]" in msg and "more than once" in msg and "list each seed once" in msg


def test_unknown_suite_name_lists_the_closest():
    with pytest.raises(ConfigError, match=r"no such suite file\. Closest suites: demo"):
        load_suite("dem")


def test_bad_command_line_override():
    with pytest.raises(ConfigError) as info:
        apply_overrides(yaml.safe_load(yaml.safe_dump(SUITE)), ["seeds.5=3"])
    assert "seeds.5=3" in str(info.value) and "not an index of a list of 2" in str(info.value)


def test_unknown_schedule_key_in_a_cell(data, tmp_path):
    with pytest.raises(ValueError, match=r"unknown schedule keys \['epoch'\]; valid: .*'epochs'"):
        run_cell(train_cell(data, epoch=3), tmp_path / "run")


def test_batch_larger_than_the_training_split(data, tmp_path):
    with pytest.raises(ValueError, match=r"training split has \d+ items, fewer than one batch of 100000.*"
                                         r"lower schedule.batch_size"):
        run_cell(train_cell(data, batch_size=100_000), tmp_path / "run")


# ----------------------------------------------------------------------------- data

def test_features_of_the_wrong_shape(data, tmp_path):
    ims = data / "f30k_precomp" / "train_ims.npy"
    np.save(ims, np.load(ims)[:, 0, :])  # [N, D]: the region axis was pooled away
    with pytest.raises(DataError, match=rf"{ims}: expected region features \[N_images, R, D\], got shape"):
        run_cell(train_cell(data), tmp_path / "run")


def test_features_of_the_wrong_dtype(data, tmp_path):
    ims = data / "f30k_precomp" / "dev_ims.npy"
    np.save(ims, np.load(ims).astype(np.int64))
    with pytest.raises(DataError, match=rf"{ims}: features must be float \(float32\), got int64; re-save"):
        run_cell(train_cell(data), tmp_path / "run")


def test_caption_count_not_five_per_image(data, tmp_path):
    caps = data / "f30k_precomp" / "train_caps.txt"
    lines = caps.read_text().splitlines()
    caps.write_text("\n".join(lines[:-2]) + "\n")
    with pytest.raises(DataError) as info:
        run_cell(train_cell(data), tmp_path / "run")
    assert f"{caps}: {len(lines) - 2} captions for" in str(info.value)
    assert "expected 5 consecutive captions per image" in str(info.value)


def test_an_empty_caption_line(data, tmp_path):
    caps = data / "f30k_precomp" / "test_caps.txt"
    lines = caps.read_text().splitlines()
    lines[6] = "   "
    caps.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"{caps}:7: empty caption line"):
        run_cell(train_cell(data), tmp_path / "run")


def test_nan_in_features_names_the_file_and_image(data, tmp_path):
    ims = data / "f30k_precomp" / "dev_ims.npy"
    feats = np.load(ims)
    feats[3, 2, 1] = np.nan
    np.save(ims, feats)
    with pytest.raises(DataError, match=rf"{ims}: image 3 has NaN/inf region features; regenerate"):
        run_cell(train_cell(data), tmp_path / "run")  # found at the first dev evaluation


def test_a_missing_split_file(data, tmp_path):
    (data / "f30k_precomp" / "test_ids.txt").unlink()
    with pytest.raises(DataError, match=rf"missing file {data}/f30k_precomp/test_ids.txt; "):
        run_cell(train_cell(data), tmp_path / "run")


def test_vocabulary_missing(data, tmp_path):
    vocab = data / "vocab" / "f30k_precomp_vocab.json"
    vocab.unlink()
    with pytest.raises(DataError, match=rf"vocabulary file not found: {vocab}; use the VOCAB/"):
        run_cell(train_cell(data), tmp_path / "run")


def test_vocabulary_invalid(data, tmp_path):
    vocab = data / "vocab" / "f30k_precomp_vocab.json"
    payload = json.loads(vocab.read_text())
    payload["word2idx"]["<pad>"], payload["word2idx"]["<start>"] = 1, 0
    vocab.write_text(json.dumps(payload))
    with pytest.raises(DataError, match=rf"{vocab}: special tokens must be"):
        run_cell(train_cell(data), tmp_path / "run")
    vocab.write_text('{"word2idx": {"a": 0,')
    with pytest.raises(DataError, match=rf"{vocab}: not valid JSON"):
        run_cell(train_cell(data), tmp_path / "run")


def test_images_missing_for_a_karpathy_annotation(data, tmp_path):
    (data / "images" / "f30k_train_000007.png").unlink()
    cell = train_cell(data, matcher={"name": "clip"})
    with pytest.raises(DataError) as info:
        run_cell(cell, tmp_path / "run")
    msg = str(info.value)
    assert "1 image file(s) listed in" in msg and "dataset_f30k.json" in msg
    assert "f30k_train_000007.png" in msg and "point image_root at the image folder" in msg


# ----------------------------------------------------------------------------- checkpoints and the store

def test_oas_cell_whose_baseline_failed(tiny_data, tmp_path):
    root = tmp_path / "runs"
    base = train_cell(tiny_data, cid="failedbase01", lr=1e30)  # diverges: the baseline fails
    assert run_cell_in_store(base, root, tracker_factory=None, raise_errors=False)["state"] == "failed"
    oas = train_cell(tiny_data, cid="oascell00001", strategy={"name": "kd", "params": {}}).replace(
        depends_on=["failedbase01"])
    out = run_cell_in_store(oas, root, tracker_factory=None, raise_errors=False)
    assert out["state"] == "failed"
    assert "anchor cell failedbase01 is not done (failed in" in out["error"] and "run it first" in out["error"]


def test_a_checkpoint_from_another_matcher_or_vocabulary(done_baseline, data, tmp_path):
    root, base = done_baseline
    best = run_dir_for(base, root) / "best.pt"
    before = snapshot(best.parent)
    kd = {"name": "kd", "params": {}}
    other_matcher = train_cell(data, strategy=kd, matcher=dict(SMALL_VSE, embed_size=24))
    with pytest.raises(ckpt.CheckpointError, match=rf"{best} was trained with matcher .*embed_size': 16.*use the "
                                                   "baseline run of the same matcher and data"):
        run_cell(other_matcher, tmp_path / "a", anchor_checkpoint=best)
    vocab = data / "vocab" / "f30k_precomp_vocab.json"  # a larger vocabulary than the baseline's
    payload = json.loads(vocab.read_text())
    payload["word2idx"]["zyzzyva"] = len(payload["word2idx"])
    payload.pop("idx2word", None)
    vocab.write_text(json.dumps(payload))
    with pytest.raises(ckpt.CheckpointError, match=r"vocabulary size \d+, this cell uses .* \d+: use the baseline"):
        run_cell(train_cell(data, strategy=kd), tmp_path / "b", anchor_checkpoint=best)
    assert snapshot(best.parent) == before


def test_a_last_checkpoint_from_another_cell_in_the_run_folder(data, tmp_path):
    run_cell(train_cell(data, epochs=2), tmp_path / "run", stop_after_steps=1)
    other = train_cell(data, epochs=2, matcher=dict(SMALL_VSE, embed_size=24))
    with pytest.raises(ckpt.CheckpointError, match=r"last.pt belongs to another cell .*use a fresh run folder"):
        run_cell(other, tmp_path / "run")


def test_a_results_folder_that_is_not_writable(done_baseline, tiny_data, tmp_path):
    """As root, chmod does not stop writes: the results folder is a path under a regular file, so
    creating the run folder fails the way a read-only or wrong mount does."""
    blocker = tmp_path / "results"
    blocker.write_text("a file where the results folder should be")
    root = blocker / "runs"
    with pytest.raises(OSError) as info:
        run_cell_in_store(train_cell(tiny_data, cid="unwritable01"), root, tracker_factory=None)
    msg = str(info.value)
    assert f"cannot create the cell's lock file {root}/.locks/bad/unwritable01.lock: {blocker} is a file" in msg
    assert "Not a directory" in msg and "choose another results folder (--root)" in msg
    assert blocker.read_text().startswith("a file")


def test_wandb_failing_to_start_warns_and_the_cell_still_finishes(done_baseline, tiny_data, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "bogus-mode")  # wandb.init refuses it
    with pytest.warns(RuntimeWarning, match=r"W&B init failed, training continues without"):
        out = run_cell_in_store(train_cell(tiny_data, cid="nowandbcell1"), tmp_path / "runs")
    assert out["state"] == "done" and out["result"]["metrics"]


# ----------------------------------------------------------------------------- SLURM

def test_slurm_client_not_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sinfo / sbatch on PATH
    ok, reason = cluster_reachable()
    assert not ok and "SLURM client commands (sinfo, sbatch) are not installed" in reason
    with pytest.raises(RuntimeError, match="cannot submit to SLURM: SLURM client commands"):
        make_executor("slurm", tmp_path / "jobs", "local")


@pytest.mark.slurm
def test_slurm_controller_not_running(slurm_cluster, tmp_path, monkeypatch):
    # slurm_cluster installs the SLURM client (a real sinfo) where missing; this test points it elsewhere
    conf = tmp_path / "slurm.conf"  # a cluster whose controller was never started
    conf.write_text("ClusterName=ghost\nSlurmctldHost=localhost\nSlurmctldPort=6899\nMessageTimeout=2\n"
                    "AuthType=auth/none\nCredType=cred/none\nNodeName=localhost CPUs=1 State=UNKNOWN\n"
                    "PartitionName=debug Nodes=localhost Default=YES State=UP\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    ok, reason = cluster_reachable(timeout_s=30)
    assert not ok and f"sinfo failed (SLURM_CONF={conf})" in reason and "Unable to contact slurm controller" in reason
    with pytest.raises(RuntimeError, match=rf"cannot submit to SLURM: sinfo failed \(SLURM_CONF={conf}\)"):
        make_executor("slurm", tmp_path / "jobs", "local")


@pytest.mark.slurm
def test_sbatch_rejects_a_bad_partition(slurm_cluster, tmp_path):
    from bench.harness.slurm import load_profile, submit_array
    from tests import jobs

    profile = dict(load_profile(slurm_cluster["profile"]), partition="no_such_partition")
    executor = make_executor("slurm", tmp_path / "jobs", profile)
    with pytest.raises(Exception) as info:  # submitit raises its own error carrying sbatch's message
        submit_array(executor, jobs.echo_job, [1])
    msg = str(info.value)
    assert "sbatch" in msg and "invalid partition" in msg.lower() and "no_such_partition" in msg


def test_earlier_results_survive_every_entry_above(done_baseline):
    """The store fixture used by the entries above still holds its complete, unchanged result."""
    root, cell = done_baseline
    run_dir = run_dir_for(cell, root)
    assert cell_state(run_dir) == "done"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "done" and result["cell_id"] == "baselinecell"
    ckpt.verify(run_dir / "best.pt")
    assert snapshot(run_dir) == DONE_SNAPSHOT["baselinecell"]
