"""Files a user (or a colleague) hands the suite: checkpoints, run folders, data folders, offline runs
(docs/bad-inputs.md, "Files handed to the suite", F entries). Each is refused with one ``error:`` line
before anything runs, trains or is written, or (data) before the first training step."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bench import checkpoint as ckpt
from bench.harness.store import CellLock, lock_path, run_cell_in_store, run_dir_for
from bench.spec import Cell, Wandb

REPO = Path(__file__).resolve().parents[1]
SMALL = {"name": "vse_infty", "embed_size": 16, "word_dim": 8}


def bench(*args, module="bench", timeout=600, **env):
    """``python -m MODULE ARGS`` in a subprocess (where a process of its own is the point)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("ITM_BENCH_")}
    e |= {"WANDB_MODE": "disabled", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"} | env
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=e, capture_output=True,
                          text=True, timeout=timeout)


def refused(capsys, *args, module="bench") -> str:
    """``python -m MODULE ARGS`` run in this process (its ``main``): exit code 2 and one ``error:`` line on
    stderr (a traceback would raise here instead)."""
    from bench.__main__ import main as bench_main
    from bench.train import main as train_main

    capsys.readouterr()
    try:
        code = {"bench": bench_main, "bench.train": train_main}[module]([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


def cell_of(data, cid="filecell", strategy=None, matcher=None, dataset="f30k_precomp", **sched) -> Cell:
    return Cell.from_dict({
        "id": cid, "suite": "files", "seed": 0,
        "dataset": {"name": dataset, "data_root": str(data), "vocab_root": str(Path(data) / "vocab")},
        "matcher": dict(matcher or SMALL), "strategy": strategy or {"name": "baseline", "params": {}},
        "schedule": {"epochs": 1, "batch_size": 32, "lr": 2e-3, "max_steps_per_epoch": 2, **sched},
        "eval": {"dev_images": 30, "batch_size": 64}})


@pytest.fixture(scope="module")
def done(tiny_data, tmp_path_factory):
    """A store holding one finished baseline cell; tests work on copies of its run folder."""
    root = tmp_path_factory.mktemp("files") / "runs"
    cell = cell_of(tiny_data)
    assert run_cell_in_store(cell, root, tracker_factory=None)["state"] == "done"
    return root, cell, run_dir_for(cell, root)


@pytest.fixture
def run(done, tmp_path):
    """A private copy of the done store: (its run folder, the cell, the store root)."""
    root, cell, run_dir = done
    shutil.copytree(root, tmp_path / "runs")
    return tmp_path / "runs" / run_dir.relative_to(root), cell, tmp_path / "runs"


def data_copy(tiny_data, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_data, tmp_path / "data"))


# ----------------------------------------------------------------------------- checkpoints: one safe reader

class _Evil:
    """Pickles to ``os.system("touch <mark>")``: run by any full (unsafe) unpickler."""

    def __init__(self, mark: Path) -> None:
        self.mark = mark

    def __reduce__(self):
        return os.system, (f"touch {self.mark}",)


def plant(path: Path, mark: Path, **around) -> Path:
    """A checkpoint at ``path`` whose pickle runs a command, with a matching digest (as a forger would write; also
    the digest its run's ``result.json`` records, so that the reader gets as far as the unpickler)."""
    ckpt.save({"format": "itm-coop-bench/1", "weights": {}, **around, "payload": _Evil(mark)}, path)
    result = path.with_name("result.json")
    if path.name == "best.pt" and result.is_file():
        data = json.loads(result.read_text())
        result.write_text(json.dumps({**data, "best_sha256": path.with_name("best.pt.sha256").read_text().strip()}))
    return path


def test_every_checkpoint_read_goes_through_the_one_safe_reader():
    import ast

    calls = []
    for pkg in ("bench", "models", "strategies"):
        for f in (REPO / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.Attribute) and node.attr == "load" and getattr(node.value, "id", "") == "torch":
                    calls.append(str(f.relative_to(REPO)))
    assert calls == ["bench/checkpoint.py"]


READERS = ["export", "evaluate", "resume from last.pt", "OAS anchor", "official checkpoint"]


@pytest.mark.parametrize("reader", READERS)
def test_a_malicious_pickle_runs_in_no_reader(capsys, run, tiny_data, tmp_path, reader):
    run_dir, cell, _ = run
    mark = tmp_path / "PWNED"
    if reader == "export":
        plant(run_dir / "best.pt", mark)
        args, module = ("export", run_dir, tmp_path / "out.pth"), "bench"
    elif reader == "evaluate":
        plant(run_dir / "best.pt", mark)
        args, module = ("evaluate", run_dir / "best.pt", "--data-root", tiny_data, "--dataset", "f30k_precomp"), "bench"
    elif reader == "resume from last.pt":
        plant(run_dir / "last.pt", mark)
        (run_dir / "done").unlink()
        args, module = (run_dir / "config.yaml", "--run-dir", run_dir), "bench.train"
    elif reader == "OAS anchor":
        kd = cell_of(tiny_data, cid="kdcell", strategy={"name": "kd", "params": {}})
        (tmp_path / "kd.yaml").write_text(yaml.safe_dump(kd.to_dict()))
        args, module = (tmp_path / "kd.yaml", "--run-dir", tmp_path / "kd", "--anchor-checkpoint",
                        plant(tmp_path / "anchor.pt", mark)), "bench.train"
    else:
        evil = tmp_path / "model_best.pth.tar"
        torch.save({"model": [], "opt": _Evil(mark)}, evil)
        args, module = ("evaluate", evil, "--data-root", tiny_data, "--dataset", "f30k_precomp"), "bench"
    err = refused(capsys, *args, module=module)
    assert "asks to unpickle posix.system" in err and "nothing in the file ran" in err and "Only load files you" in err
    assert not mark.exists()


# ----------------------------------------------------------------------------- run folders given to export / evaluate

@pytest.mark.parametrize("config", ["dataset: [unclosed\n", "- a\n- list\n", "dataset: [a, list]\n"])
def test_export_of_a_run_whose_config_yaml_is_broken_is_one_line(capsys, run, tmp_path, config):
    run_dir, _, _ = run
    (run_dir / "config.yaml").write_text(config)
    err = refused(capsys, "export", run_dir, tmp_path / "out.pth")
    assert f"{run_dir / 'config.yaml'}: " in err and "restore it" in err
    assert not (tmp_path / "out.pth").exists()


def test_evaluate_of_a_cell_training_now_is_refused(capsys, run, tiny_data, tmp_path):
    run_dir, cell, root = run
    (run_dir / "done").unlink()
    (run_dir / "running").write_text("")
    lock = CellLock(lock_path(cell, root))
    assert lock.acquire()
    try:  # as while a sweep trains the cell: best.pt is the best so far
        err = refused(capsys, "evaluate", run_dir / "best.pt", "--data-root", tiny_data, "--dataset", "f30k_precomp")
    finally:
        lock.release()
    assert f"{run_dir} is training now (its lock is held): its best.pt is the best so far" in err
    assert "finish the cell first" in err
    err = refused(capsys, "evaluate", run_dir / "best.pt", "--data-root", tiny_data, "--dataset", "f30k_precomp")
    assert "is not a finished run (no `done` marker)" in err  # stopped or failed: refused alike


def test_evaluate_on_features_of_another_width_names_both(capsys, done, tiny_data, tmp_path):
    _, _, run_dir = done
    data = data_copy(tiny_data, tmp_path)
    for f in (data / "f30k_precomp").glob("*_ims.npy"):
        np.save(f, np.load(f)[..., :32])
    err = refused(capsys, "evaluate", run_dir / "best.pt", "--data-root", data, "--dataset", "f30k_precomp")
    assert "the data's features are 32-d" in err and "the checkpoint's 64-d" in err


def test_evaluate_out_naming_a_folder_is_one_line_and_leaves_nothing(capsys, done, tiny_data, tmp_path):
    _, _, run_dir = done
    (tmp_path / "results").mkdir()
    err = refused(capsys, "evaluate", run_dir / "best.pt", "--data-root", tiny_data, "--dataset", "f30k_precomp",
                         "--out", tmp_path / "results")
    assert f"--out {tmp_path / 'results'} is a folder" in err and "results/result.json" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"] and not any((tmp_path / "results").iterdir())


def test_a_failed_result_write_leaves_no_ranks_file(done, tiny_data, tmp_path):
    from bench.cli_eval import write_result

    (tmp_path / "r.json").mkdir()  # the folder appears after the check: the write itself fails
    with pytest.raises(OSError, match=r"r.json is a folder: give the path of a file"):
        write_result({"metrics": {}}, {"f30k_1k/i2t": np.arange(3)}, tmp_path / "r.json")
    assert not (tmp_path / "r.ranks.npz").exists()


# ----------------------------------------------------------------------------- data checked when opened

def _suite(tmp_path, data, matcher=SMALL, dataset="f30k_precomp", protocols=None) -> Path:
    m = {"name": matcher["name"], "overrides": {k: v for k, v in matcher.items() if k != "name"}}
    ds = {"name": dataset, "label": "tiny", "data_root": str(data), **({"protocols": protocols} if protocols else {})}
    spec = {"name": "files", "datasets": [ds], "matchers": [m], "strategies": [{"name": "baseline"}], "seeds": [0],
            "scale": "smoke", "eval": {"dev_images": 30},
            "scales": {"smoke": {"schedule": {"default": {"epochs": 1, "batch_size": 32, "lr": 2e-3,
                                                          "max_steps_per_epoch": 2}}}}}
    path = tmp_path / "files.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _more_regions(data: Path, split: str = "test") -> Path:
    ims = data / "f30k_precomp" / f"{split}_ims.npy"
    feats = np.load(ims)
    np.save(ims, np.concatenate([feats, feats[:, :4]], axis=1))  # R + 4 regions per image
    return ims


MATCHERS = [SMALL, {"name": "xattn", "embed_size": 16, "word_dim": 8, "sim_dim": 8},
            {"name": "sgr", "embed_size": 16, "word_dim": 8, "sim_dim": 8, "sgr_step": 1}]


@pytest.mark.parametrize("matcher", MATCHERS, ids=[m["name"] for m in MATCHERS])
def test_a_test_split_with_more_regions_is_a_data_error_before_training(capsys, tiny_data, tmp_path, matcher):
    data = data_copy(tiny_data, tmp_path)
    ims = _more_regions(data)
    root = tmp_path / "runs"
    err = refused(capsys, "run", _suite(tmp_path, data, matcher), "--cell", "", "--root", root)
    assert f"{ims}: 16 regions per image, but the training split's ({data / 'f30k_precomp' / 'train_ims.npy'}) " \
           "has 12; extract every split with the same detector and region count" in err
    assert not any(root.rglob("*.pt"))


def test_a_coco_testall_of_52_images_fails_before_training(capsys, tiny_data, tmp_path):
    data = data_copy(tiny_data, tmp_path)
    folder = data / "coco_precomp"
    feats = np.load(folder / "testall_ims.npy")
    np.save(folder / "testall_ims.npy", np.concatenate([feats, feats[:2]]))
    for name in ("testall_caps.txt", "testall_ids.txt"):
        lines = (folder / name).read_text().splitlines()
        step = len(lines) // len(feats)
        (folder / name).write_text("\n".join(lines + lines[: 2 * step]) + "\n")
    root = tmp_path / "runs"
    err = refused(capsys, "run", _suite(tmp_path, data, dataset="coco_precomp", protocols=["coco_1k"]), "--cell", "",
                         "--root", root)
    assert f"{folder / 'testall_ims.npy'}: 52 images cannot be cut into the 5 equal folds of protocol coco_1k" in err
    assert not any(root.rglob("*.pt"))


def test_precomp_problems_lists_what_opening_the_data_would_find_from_headers(tiny_data, tmp_path):
    from bench.data.precomp import precomp_problems

    assert precomp_problems(tiny_data, "coco_precomp", ("train", "dev"), ["coco_1k", "coco_5k"]) == []
    data = data_copy(tiny_data, tmp_path)
    ims = _more_regions(data, "dev")
    (data / "f30k_precomp" / "test_caps.txt").write_text("one caption\n")
    problems = precomp_problems(data, "f30k_precomp", ("train", "dev"), ["f30k_1k"])
    assert len(problems) == 2
    assert problems[0].startswith(f"{data / 'f30k_precomp' / 'test_caps.txt'}: 1 captions for 30 images")
    assert problems[1].startswith(f"{ims}: 16 regions per image")


def test_a_vocab_json_with_non_integer_keys_names_the_file(capsys, tiny_data, tmp_path):
    data = data_copy(tiny_data, tmp_path)
    vocab = data / "vocab" / "f30k_precomp_vocab.json"
    payload = json.loads(vocab.read_text())
    payload["idx2word"] = {("zero" if k == "0" else k): w for k, w in payload["idx2word"].items()}
    vocab.write_text(json.dumps(payload))
    err = refused(capsys, "run", _suite(tmp_path, data), "--cell", "", "--root", tmp_path / "runs")
    assert f"{vocab}: 'idx2word' has the key 'zero', not a whole-number id" in err
    payload = json.loads(json.dumps(payload).replace('"zero"', '"0"'))
    payload["word2idx"]["dog"] = "a"
    vocab.write_text(json.dumps(payload))
    err = refused(capsys, "run", _suite(tmp_path, data), "--cell", "", "--root", tmp_path / "runs")
    assert f"{vocab}: 'word2idx' maps 'dog' to 'a', not a whole-number id" in err


def test_a_data_root_with_tilde_and_variables_is_expanded(capsys, monkeypatch, tiny_data, tmp_path):
    from bench.__main__ import main

    home = tmp_path / "home"
    shutil.copytree(tiny_data, home / "tiny")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("ITM_DATA_HOME", str(home))
    suite, root = _suite(tmp_path, "~/tiny"), tmp_path / "runs"
    main(["run", str(suite), "--cell", "", "--root", str(root)])
    (config,) = root.rglob("config.yaml")
    assert yaml.safe_load(config.read_text())["dataset"]["data_root"] == str(home / "tiny")  # recorded expanded
    assert (config.parent / "done").exists()
    main(["status", str(suite), "datasets.0.data_root=$ITM_DATA_HOME/tiny", "--root", str(root)])
    assert "done" in capsys.readouterr().out  # the same cell, found through the variable
    err = refused(capsys, "run", suite, "--cell", "", "datasets.0.data_root=${ITM_NOT_SET}/tiny", "--root", root)
    assert "data_root: ${ITM_NOT_SET}/tiny: does not exist" in err and "the variable(s) ITM_NOT_SET are not set" in err


def test_the_resolver_and_the_anchor_checkpoint_expand_tilde_and_variables(monkeypatch, tiny_data, tmp_path):
    """The typed paths: spec.resolve (the trainer alone, python -m bench.train) and the suite's anchor_checkpoint."""
    from bench import spec
    from bench.harness.config import load_suite

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ITM_VOCAB", str(tiny_data / "vocab"))
    cell = cell_of(tiny_data).replace(dataset=spec.Dataset("f30k_precomp", data_root="~/data", vocab_root="$ITM_VOCAB"))
    resolved = spec.resolve(cell)
    assert resolved.dataset.data_root == str(tmp_path / "data")
    assert resolved.dataset.vocab_root == str(tiny_data / "vocab")
    assert spec.resolve(resolved) == resolved and spec.cell_id(resolved) == spec.cell_id(cell)
    (tmp_path / "anchor.pt").write_bytes(b"")
    suite = load_suite("demo", ["anchor_checkpoint=~/anchor.pt"])
    assert suite.spec["anchor_checkpoint"] == str(tmp_path / "anchor.pt")


# ----------------------------------------------------------------------------- sync without network

@pytest.fixture
def offline_run(tmp_path, monkeypatch):
    from bench.harness.tracking import WandbTracker, offline_runs
    from tests.test_harness_store import make_cell

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracker = WandbTracker(make_cell("baseline").replace(wandb=Wandb(project="itm-test")), tmp_path)
    tracker.log({"train/loss/target": 1.0}, step=0)
    tracker.finish({"metrics": {}, "best_epoch": 0, "cost": {}})
    (run,) = offline_runs(tmp_path)
    return run


def test_sync_without_an_answering_server_says_what_it_waits_for_and_times_out(offline_run):
    server = socket.socket()  # accepts connections and never answers: a network that swallows requests
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    start = time.monotonic()
    try:
        out = bench("sync", offline_run, "--timeout", "4", WANDB_MODE="online", WANDB_API_KEY="a" * 40,
                    WANDB_BASE_URL=f"http://127.0.0.1:{server.getsockname()[1]}", timeout=120)
    finally:
        server.close()
    assert time.monotonic() - start < 60
    assert out.stdout.startswith("wandb sync: uploading 1 offline run(s) to http://127.0.0.1:")
    assert "gives up after 4 s (--timeout)" in out.stdout
    err = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert err.startswith("error: wandb sync did not finish within 4 s and was stopped") and "--timeout" in err
    assert offline_run.is_dir()


def test_sync_of_a_file_is_refused_and_of_a_cell_folder_finds_its_run(offline_run, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    # was: exit 0, "uploading 1 offline run(s)", then wandb's own "No runs to sync"
    for path in (notes, offline_run.parent / "logs"):
        (offline_run.parent / "logs").mkdir(exist_ok=True)
        err = refused(capsys, "sync", path, "--dry-run")
        assert err.startswith(f"error: {path}: no offline W&B run there")
    out = bench("sync", tmp_path, "--dry-run", timeout=120)  # the folder holding the run: the run itself
    assert out.returncode == 0 and out.stdout.startswith("wandb sync --dry-run: 1 offline run(s)")
    assert str(offline_run) in out.stdout + out.stderr
