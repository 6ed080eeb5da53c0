"""``python -m bench evaluate`` / ``export`` and OAS from a released anchor, on the tiny embedded data.

Training cells run through the real store; the commands run through `python -m bench`'s own `main`;
exported files are read back bit for bit; the README's "Evaluate a checkpoint" block runs in a shell as written.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bench import checkpoint as ckpt
from bench.cli_eval import evaluate_checkpoints, load_for_data, score_checkpoint
from bench.harness.cells import expand
from bench.harness.config import ConfigError, load_suite
from bench.harness.store import run_cell_in_store
from bench.protocols import PROTOCOLS, evaluate_protocol
from models import official

REPO = Path(__file__).resolve().parents[1]
SMALL = {"embed_size": 32, "word_dim": 16}
SIM = {**SMALL, "sim_dim": 16}


def _suite(tmp, data, name, matchers, strategies, datasets=("f30k_precomp",), **extra):
    raw = {"name": name,
           "datasets": [{"name": d, "label": "tiny", "data_root": str(data), "vocab_root": str(data / "vocab")}
                        for d in datasets],
           "matchers": [{"name": m, "label": m, "overrides": o} for m, o in matchers],
           "strategies": strategies, "seeds": [0], "eval": {"batch_size": 64, "dev_images": 30},
           "scales": {"smoke": {"schedule": {"default": {
               "epochs": 1, "batch_size": 32, "lr": 2e-3, "max_steps_per_epoch": 2,
               "oas_stage2": {"epochs": 1, "lr": 1e-3, "lr_schedule": "constant"}}}}},
           "scale": "smoke", **extra}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return load_suite(path)


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """Baseline cells (VSE∞, SGR, SAF on F30K; DBL's matcher on COCO) trained in a store: {matcher: run dir}."""
    tmp = tmp_path_factory.mktemp("cells")
    root = tmp / "runs"
    f30k = _suite(tmp, tiny_data, "ev", [("vse_infty", SMALL), ("sgr", {**SIM, "sgr_step": 2}), ("saf", SIM)],
                  ["baseline"])
    coco = _suite(tmp, tiny_data, "evcoco", [("xattn", SIM)], ["baseline"], datasets=("coco_precomp",))
    runs = {}
    for cell in expand(f30k) + expand(coco):
        out = run_cell_in_store(cell, root, tracker_factory=None)
        assert out["state"] == "done"
        runs[cell.matcher.name] = Path(out["run_dir"])
    return runs


def _bench(capsys, *args):
    """``python -m bench ARGS`` in this process (the same parser and code; the README test runs a shell)."""
    from bench.__main__ import main

    capsys.readouterr()
    main([str(a) for a in args])
    return capsys.readouterr().out


@pytest.mark.parametrize("matcher,dataset", [("vse_infty", "f30k_precomp"), ("xattn", "coco_precomp")])
def test_evaluate_a_cells_best_checkpoint_gives_the_cells_metrics(trained, tiny_data, tmp_path, matcher, dataset,
                                                                  capsys):
    run = trained[matcher]
    protocols = ["--protocol", "coco_1k", "coco_5k"] if dataset == "coco_precomp" else []
    out = _bench(capsys, "evaluate", run / "best.pt", "--data-root", tiny_data, "--dataset", dataset, *protocols,
                 "--out", tmp_path / "result.json")
    cell_result = json.loads((run / "result.json").read_text())
    ours = json.loads((tmp_path / "result.json").read_text())
    assert ours["metrics"] == cell_result["metrics"]  # exactly: same batches, tiles and protocol code
    cell_ranks, our_ranks = np.load(run / "ranks.npz"), np.load(tmp_path / ours["ranks_file"])
    rank_keys = sorted(k for k in cell_ranks.files if "/" in k)  # "<protocol>/i2t", "<protocol>/t2i"
    assert rank_keys == sorted(our_ranks.files)
    assert all(np.array_equal(cell_ranks[k], our_ranks[k]) for k in rank_keys)
    for proto, m in ours["metrics"].items():
        assert f"{m['rsum']:.1f}" in out and proto in out
    if dataset == "coco_precomp":  # COCO 1K: the five folds, then their average
        assert [f"coco_1k fold {k}" in out for k in range(1, 6)] == [True] * 5 and "coco_1k mean" in out
        folds = ours["folds"]["coco_1k"]
        assert ours["metrics"]["coco_1k"]["i2t_r1"] == pytest.approx(np.mean([f["i2t_r1"] for f in folds]))


# The ``opt`` attributes each reference program's model, data loader and evalrank read.
_COMMON = {"batch_size", "data_name", "data_path", "embed_size", "grad_clip", "img_dim", "margin", "max_violation",
           "no_imgnorm", "no_txtnorm", "num_layers", "vocab_path", "vocab_size", "word_dim", "workers"}
READS = {"vse_infty": _COMMON | {"backbone_lr_factor", "backbone_path", "backbone_source", "input_scale_factor",
                                 "learning_rate", "optim", "precomp_enc_type"},
         "sgr": _COMMON | {"bi_gru", "learning_rate", "module_name", "sgr_step", "sim_dim"},
         "xattn": _COMMON | {"bi_gru", "no_simnorm", "save_path", "sim_dim"}}


def test_export_writes_the_official_layout_and_reads_back_bitwise(trained, tiny_data, tmp_path, capsys):
    for matcher, entries in (("vse_infty", 2), ("sgr", 3), ("xattn", None)):
        run = trained[matcher]
        target = tmp_path / f"{matcher}_model_best.pth"
        if matcher == "vse_infty":  # the command line, once
            assert "official layout" in _bench(capsys, "export", run, "--format", "official", target)
        else:
            from bench.cli_eval import export_run

            export_run(run, target)
        raw = torch.load(target, weights_only=False)
        assert {"model", "opt", "epoch", "best_rsum"} <= set(raw)
        assert READS[matcher] <= set(vars(raw["opt"])), READS[matcher] - set(vars(raw["opt"]))
        if entries:  # VSE∞ / SGRAF: a list of per-module state dicts; DBL: one DataParallel state dict
            assert isinstance(raw["model"], list) and len(raw["model"]) == entries
        else:
            assert all(k.startswith("module.") for k in raw["model"])
        best = ckpt.load(run / "best.pt")
        model, info = official.load(target, vocab_size=best["vocab_size"])
        assert info["program"] == matcher
        state = model.state_dict()
        assert set(state) == set(best["weights"])
        assert all(torch.equal(state[k], best["weights"][k]) for k in state)
    vse = torch.load(tmp_path / "vse_infty_model_best.pth", weights_only=False)
    assert "mlp.bns.1.running_var" in vse["model"][0]  # the unused BatchNorm, as the reference builds it
    assert vse["opt"].precomp_enc_type == "basic"


def test_sgr_plus_saf_ensemble_averages_the_score_matrices(trained, tiny_data, tmp_path, capsys):
    sgr, saf = trained["sgr"] / "best.pt", trained["saf"] / "best.pt"
    _bench(capsys, "evaluate", sgr, saf, "--data-root", tiny_data, "--dataset", "f30k_precomp", "--out", tmp_path / "e.json")
    ens = json.loads((tmp_path / "e.json").read_text())
    assert ens["ensemble"] and len(ens["checkpoints"]) == 2
    sims = []
    for path in (sgr, saf):
        model, _, data, bs = load_for_data(path, "f30k_precomp", str(tiny_data), None, ["f30k_1k"], None)
        sims.append(score_checkpoint(model, data, data.test_splits["test"], bs, torch.device("cpu"), "x"))
    expected = evaluate_protocol(PROTOCOLS["f30k_1k"], (sims[0] + sims[1]) / 2)
    assert ens["metrics"]["f30k_1k"] == expected
    alone = [evaluate_protocol(PROTOCOLS["f30k_1k"], s)["rsum"] for s in sims]
    assert ens["metrics"]["f30k_1k"]["rsum"] not in alone or alone[0] == alone[1]


def test_oas_suite_starts_from_a_released_anchor_without_a_baseline(trained, tiny_data, tmp_path):
    released = tmp_path / "model_best.pth"
    from bench.cli_eval import export_run

    export_run(trained["vse_infty"], released)  # an official-layout VSE∞ file as the released anchor
    suite = _suite(tmp_path, tiny_data, "oasrel", [("vse_infty", SMALL)], [{"name": "kd", "label": "KD"}],
                   anchor_checkpoint=str(released))
    cells = expand(suite)
    assert [c.strategy.name for c in cells] == ["kd"] and cells[0].depends_on == []
    assert cells[0].anchor_checkpoint.sha256 == __import__("hashlib").sha256(released.read_bytes()).hexdigest()
    from bench.harness.collect import collect, write_tables
    from bench.harness.sweep import sweep

    root = tmp_path / "runs"
    report = sweep(suite, executor="inline", root=root, tracker_factory=None)
    assert [s["state"] for s in report["states"].values()] == ["done"]
    assert [p.name for p in (root / "oasrel").iterdir() if p.is_dir()] == [cells[0].id]  # no baseline trained
    paths = write_tables(collect(suite, root), suite, tmp_path / "tables", n_boot=10)
    sha = cells[0].anchor_checkpoint.sha256[:12]
    assert f"OAS anchor/teacher: official VSE∞ BiGRU checkpoint model_best.pth (sha256 {sha}), not a baseline cell" \
        in paths["md"].read_text()
    # the cell id follows the checkpoint's content
    other = tmp_path / "other.pth"
    shutil.copy(released, other)
    raw = torch.load(other, weights_only=False)
    raw["model"][0]["fc.bias"] += 1.0
    torch.save(raw, other)
    moved = load_suite(suite.path, [f"anchor_checkpoint={other}"])  # the command-line override form
    assert moved.spec["anchor_checkpoint"] == str(other)
    assert expand(moved)[0].id != cells[0].id
    assert expand(load_suite(suite.path))[0].id == cells[0].id  # same file, same id


def test_released_anchor_bad_inputs(trained, tiny_data, tmp_path):
    with pytest.raises(ConfigError, match=r"anchor_checkpoint: '.*nowhere\.pth' is not a file; give the path"):
        _suite(tmp_path, tiny_data, "oasbad", [("vse_infty", SMALL)], ["kd"],
               anchor_checkpoint=str(tmp_path / "nowhere.pth"))
    from bench.cli_eval import export_run

    sgr = export_run(trained["sgr"], tmp_path / "sgr_best.pth.tar")
    suite = _suite(tmp_path, tiny_data, "oaswrong", [("vse_infty", SMALL)], ["kd"], anchor_checkpoint=str(sgr))
    with pytest.raises(ckpt.CheckpointError, match=r"SGRAF SGR checkpoint .* this cell trains vse_infty"):
        run_cell_in_store(expand(suite)[0], tmp_path / "runs", tracker_factory=None)


def _bench_error(capsys, *args) -> str:
    """``python -m bench ARGS`` refused: exit code 2 and the one ``error:`` line it printed."""
    with pytest.raises(SystemExit) as info:
        _bench(capsys, *args)
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


def test_evaluate_bad_arguments_exit_with_the_fix(trained, tiny_data, tmp_path, capsys):
    bad = tmp_path / "cut.pt"
    bad.write_bytes((trained["saf"] / "best.pt").read_bytes()[:1000])
    assert "coco_5k evaluates coco_precomp, not --dataset f30k_precomp" in _bench_error(
        capsys, "evaluate", trained["saf"] / "best.pt", "--data-root", tiny_data, "--dataset", "f30k_precomp",
        "--protocol", "coco_5k")
    assert re.search(r"cut\.pt .*truncated",
                     _bench_error(capsys, "evaluate", bad, "--data-root", tiny_data, "--dataset", "f30k_precomp"))
    # a best.pt copied out of its run folder (no digest beside it) is read; in its folder the digest must match
    alone = tmp_path / "alone" / "best.pt"
    alone.parent.mkdir()
    shutil.copy(trained["saf"] / "best.pt", alone)
    result, _ = evaluate_checkpoints([str(alone)], "f30k_precomp", str(tiny_data), batch_size=64)
    assert result["metrics"] == json.loads((trained["saf"] / "result.json").read_text())["metrics"]
    shutil.copy(trained["saf"] / "best.pt.sha256", alone.parent / "best.pt.sha256")
    alone.write_bytes(alone.read_bytes()[:-8] + bytes(8))
    assert re.search(r"best\.pt is corrupted or truncated \(sha256",
                     _bench_error(capsys, "evaluate", alone, "--data-root", tiny_data, "--dataset", "f30k_precomp"))
    small_vocab = tmp_path / "vocab"
    small_vocab.mkdir()
    from bench.data.vocab import load_vocab, save_vocab

    vocab = load_vocab(tiny_data / "vocab" / "f30k_precomp_vocab.json")
    n = len(vocab)
    for k in range(10):  # another release's vocabulary: ten words more
        vocab.add_word(f"extra{k}")
    save_vocab(vocab, small_vocab / "f30k_precomp_vocab.json")
    with pytest.raises(official.OfficialCheckpointError,
                       match=rf"vocabulary of {n} ids but the data's vocabulary has {n + 10} \(±1 for <mask>\)"):
        evaluate_checkpoints([str(trained["saf"] / "best.pt")], "f30k_precomp", str(tiny_data),
                             vocab_root=str(small_vocab))


def _readme_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Evaluate a checkpoint", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_evaluate_block_runs_as_written(trained, tiny_data, tmp_path):
    """The README's commands, in a folder laid out as they expect: a demo cell, published files, the data."""
    from bench.cli_eval import export_run

    (tmp_path / ".venv").symlink_to(Path(sys.prefix))  # the environment running the tests
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "synth-demo").symlink_to(tiny_data)
    shutil.copytree(trained["vse_infty"], tmp_path / "results" / "runs" / "demo" / trained["vse_infty"].name)
    # the published files, in the official layouts (written here from tiny-sized trained models)
    export_run(trained["sgr"], tmp_path / "checkpoints" / "f30k_SGR" / "model_best.pth.tar")
    export_run(trained["saf"], tmp_path / "checkpoints" / "f30k_SAF" / "model_best.pth.tar")
    block = _readme_block()
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("RSUM") >= 2
    for out in re.findall(r"--out (\S+)", block):
        assert json.loads((tmp_path / out).read_text())["metrics"]["f30k_1k"]["rsum"] > 0
    for out in re.findall(r"--format official (\S+)", block):
        assert (tmp_path / out).is_file()


def _official_file(run, path):
    """The run's best weights written in the official program's layout by the layout tables of test_official."""
    from tests.test_official import _dbl_layout, _save, _sgraf_layout, _vse_layout

    best = ckpt.load(run / "best.pt")
    name = best["matcher"]["name"]

    class _Weights:  # the layout functions read ``state_dict()``
        def state_dict(self):
            return best["weights"]

    layout = {"vse_infty": lambda m: _vse_layout(m), "sgr": lambda m: _sgraf_layout(m, "SGR"),
              "saf": lambda m: _sgraf_layout(m, "SAF"), "xattn": lambda m: _dbl_layout(m)}[name](_Weights())
    opt = {"sgr": {"module_name": "SGR"}, "saf": {"module_name": "SAF"},
           "xattn": {"no_simnorm": False}}.get(name, {"precomp_enc_type": "basic"})
    return _save(path, layout, **opt)


@pytest.mark.parametrize("matcher", ["vse_infty", "sgr", "saf", "xattn"])
def test_evaluate_an_official_layout_checkpoint_gives_the_cells_metrics(trained, tiny_data, tmp_path, capsys,
                                                                       matcher):
    run = trained[matcher]
    dataset = "coco_precomp" if matcher == "xattn" else "f30k_precomp"
    release = _official_file(run, tmp_path / "model_best.pth.tar")
    out = _bench(capsys, "evaluate", release, "--data-root", tiny_data, "--dataset", dataset, "--batch-size", 64,
                 "--out", tmp_path / "r.json")
    assert "official" in out
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["checkpoints"][0]["program"] == matcher
    assert result["metrics"] == json.loads((run / "result.json").read_text())["metrics"]


def test_official_sgr_plus_saf_ensemble_equals_the_ensemble_of_the_cells(trained, tiny_data, tmp_path, capsys):
    files = [_official_file(trained[m], tmp_path / f"{m}.pth.tar") for m in ("sgr", "saf")]
    _bench(capsys, "evaluate", *files, "--data-root", tiny_data, "--dataset", "f30k_precomp", "--batch-size", 64,
           "--out", tmp_path / "official.json")
    _bench(capsys, "evaluate", trained["sgr"] / "best.pt", trained["saf"] / "best.pt", "--data-root", tiny_data,
           "--dataset", "f30k_precomp", "--out", tmp_path / "ours.json")
    official_result = json.loads((tmp_path / "official.json").read_text())
    assert official_result["ensemble"]
    assert official_result["metrics"] == json.loads((tmp_path / "ours.json").read_text())["metrics"]


@pytest.mark.slow
def test_evaluate_in_each_precision_and_compiled(trained, tiny_data, tmp_path, capsys):
    """--precision / --compile: recorded in the result, named in the printed line; tf32 on CPU and a compiled
    fp32 tile scoring give the fp32 metrics (tf32 is fp32 off CUDA; compiled scores agree to 1e-5)."""
    run = trained["xattn"]  # trained on COCO: evaluated on its own data (its vocabulary; bench.data.vocab.other_vocabulary)
    data = ("--data-root", tiny_data, "--dataset", "coco_precomp", "--protocol", "coco_1k", "--no-eccv")
    base = _bench(capsys, "evaluate", run / "best.pt", *data,
                  "--out", tmp_path / "fp32.json")
    fp32 = json.loads((tmp_path / "fp32.json").read_text())
    assert fp32["mode"]["precision"] == "fp32" and "[" not in base.splitlines()[0]
    for args, label in ((["--precision", "tf32"], "[tf32]"), (["--compile"], "[compiled]"),
                        (["--precision", "bf16"], "[bf16]")):
        out = _bench(capsys, "evaluate", run / "best.pt", *data,
                     *args, "--out", tmp_path / "m.json")
        got = json.loads((tmp_path / "m.json").read_text())
        assert label in out.splitlines()[0]
        assert got["mode"]["precision"] == (args[1] if args[0] == "--precision" else "fp32")
        assert got["mode"]["compile"] == ("--compile" in args)
        if label != "[bf16]":
            assert got["metrics"]["coco_1k"]["rsum"] == pytest.approx(fp32["metrics"]["coco_1k"]["rsum"], abs=0.5)
    with pytest.raises(SystemExit) as bad:
        _bench(capsys, "evaluate", run / "best.pt", *data,
               "--precision", "fp16")
    assert bad.value.code == 2 and "fp16" in capsys.readouterr().err


def test_evaluate_reports_eccv_caption_and_cxc_on_coco_5k(trained, tiny_data, tmp_path, capsys):
    """ECCV Caption / CxC beside Recall@K for any checkpoint (the cell computed the same); --no-eccv leaves
    them out; a split whose COCO ids are not the annotations' is refused before scoring."""
    from bench.metrics import ECCV_KEYS, ECCV_SIZE_KEY

    eccv_keys = (*ECCV_KEYS, ECCV_SIZE_KEY)
    run = trained["xattn"]
    out = _bench(capsys, "evaluate", run / "best.pt", "--data-root", tiny_data, "--dataset", "coco_precomp",
                 "--out", tmp_path / "eccv.json")
    ours = json.loads((tmp_path / "eccv.json").read_text())["metrics"]["coco_5k"]
    cell = json.loads((run / "result.json").read_text())["metrics"]["coco_5k"]
    assert {k: ours[k] for k in eccv_keys} == {k: cell[k] for k in eccv_keys} and ours["eccv_images"] == 50
    assert "coco_5k: ECCV Caption and CxC on 50 images (caption ids: the package's order)" in out
    assert f"{ours['eccv_map_at_r_i2t']:.1f}" in out and "CxC R@1 i2t" in out
    _bench(capsys, "evaluate", run / "best.pt", "--data-root", tiny_data, "--dataset", "coco_precomp",
           "--protocol", "coco_5k", "--no-eccv", "--out", tmp_path / "plain.json")
    plain = json.loads((tmp_path / "plain.json").read_text())["metrics"]["coco_5k"]
    assert not set(eccv_keys) & set(plain) and plain["rsum"] == cell["rsum"]
    other = Path(shutil.copytree(tiny_data, tmp_path / "other"))
    (other / "coco_precomp" / "testall_ids.txt").write_text("".join(f"{9000000 + i}\n" for i in range(50)))
    err = _bench_error(capsys, "evaluate", run / "best.pt", "--data-root", other, "--dataset", "coco_precomp")
    assert "testall_ids.txt: image 0 has id 9000000" in err and "not an image of that split" in err
    assert "--no-eccv" in err
    # real data (no generator's MANIFEST) without VSE∞'s testall_capids.txt: the caption order is not assumed
    real = Path(shutil.copytree(tiny_data, tmp_path / "real"))
    (real / "MANIFEST.json").unlink()
    err = _bench_error(capsys, "evaluate", run / "best.pt", "--data-root", real, "--dataset", "coco_precomp")
    assert f"{real / 'coco_precomp' / 'testall_capids.txt'}: missing" in err and "--no-eccv" in err
    assert "VSE∞'s COCO precomp download ships testall_capids.txt" in err
