"""Every input a cell reads is checked before anything runs (``bench.inputs``): planted faults, each
refused by ``show``, ``sweep --dry-run`` and ``sweep`` alike with one ``error:`` line per cause naming
the key, the value, the fix and the cells it affects (exit 2, nothing trained or submitted).

The commands run in this process (``bench.__main__.main``, as ``python -m bench`` does), on a copy of
the tiny data with the fault planted; the tests that need the published CLIP or BERT architecture use
the session's generated folders (``python -m bench.data.weights``; marked slow).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import main
from bench.weights import KINDS, fetch_command

REPO = Path(__file__).resolve().parents[1]
F30K = "datasets=[{name: f30k_precomp, label: f30k}]"
COMMANDS = {"show": ["show"], "dry run": ["sweep", "--executor", "slurm", "--cluster", "example-gpu", "--dry-run"],
            "sweep": ["sweep", "--executor", "inline"]}


@pytest.fixture
def data(tiny_data, tmp_path) -> Path:
    """A copy of the tiny data (2 MB) to plant a fault in."""
    return Path(shutil.copytree(tiny_data, tmp_path / "data"))


def refusals(capsys, tmp_path, *overrides) -> list[str]:
    """``dbl scale=full seeds=[0]`` on Flickr30K with ``overrides``, by show, the dry run and the sweep: each
    exits 2 before anything runs and prints the same ``error:`` lines (stdout: show's plan, nothing else)."""
    root = tmp_path / "runs"
    seen = {}
    capsys.readouterr()  # what the test printed before
    for name, command in COMMANDS.items():
        with pytest.raises(SystemExit) as stop:
            main([command[0], "dbl", "scale=full", "seeds=[0]", F30K, *overrides, *command[1:], "--root", str(root)])
        out, err = capsys.readouterr()
        assert stop.value.code == 2, f"{name}: exit {stop.value.code}\n{out}\n{err}"
        assert "Traceback" not in err and all(line.startswith("error: ") for line in err.splitlines()), err
        if name != "show":
            assert not out, f"{name} printed {out!r} before refusing"
        seen[name] = err.splitlines()
    assert seen["show"] == seen["dry run"] == seen["sweep"], seen
    assert not root.exists() or not any(root.rglob("*")), list(root.rglob("*"))  # nothing trained or submitted
    return seen["show"]


def one_line(lines: list[str], *parts: str) -> str:
    """The one line holding every part."""
    found = [line for line in lines if all(p in line for p in parts)]
    assert len(found) == 1, (parts, lines)
    return found[0]


def test_a_missing_data_root(capsys, tmp_path):
    nowhere = tmp_path / "nowhere"
    (line,) = refusals(capsys, tmp_path, f"data_root={nowhere}", "matchers=[vse_infty, sgr]")
    assert line == (f"error: {REPO}/bench/suites/dbl.yaml: data_root: {nowhere}: does not exist; point data_root at "
                    "the folder holding <dataset>/ and vocab/ (the SCAN precomp release, or python -m bench.data.synth "
                    "writes one) (6 cell(s): f30k/vse_infty/baseline/s0, f30k/vse_infty/DBL abs/s0, "
                    "f30k/vse_infty/DBL rel/s0, …)")


def test_a_missing_split_file(capsys, tmp_path, data):
    (data / "f30k_precomp" / "test_ims.npy").unlink()
    (line,) = refusals(capsys, tmp_path, f"data_root={data}", "matchers=[xattn]")
    assert f"data_root: {data}/f30k_precomp/test_ims.npy: missing (split test of f30k_precomp); point data_root" in line
    assert line.endswith("(3 cell(s): f30k/xattn/baseline/s0, f30k/xattn/DBL abs/s0, f30k/xattn/DBL rel/s0)")


def test_split_files_that_do_not_fit_together(capsys, tmp_path, data):
    """Five captions per image and one feature size across splits, from the headers."""
    import numpy as np

    caps = data / "f30k_precomp" / "dev_caps.txt"
    caps.write_text("".join(caps.read_text().splitlines(keepends=True)[:-5]))  # one image's captions cut
    test = np.load(data / "f30k_precomp" / "test_ims.npy")
    np.save(data / "f30k_precomp" / "test_ims.npy", test[:, :, :32])  # another extractor's features
    lines = refusals(capsys, tmp_path, f"data_root={data}", "matchers=[vse_infty]")
    one_line(lines, f"{caps}: 145 captions for 30 images; expected 5 consecutive captions per image")
    one_line(lines, "test_ims.npy: features of size 32 per region, but the training split's are 64")


@pytest.mark.slow  # the session's generated CLIP ViT-B/32 folder
def test_a_missing_karpathy_json(capsys, tmp_path, data, published_weights):
    """A SCAN precomp folder has no captions for CLIP (the issue: every CLIP cell failed once its job ran)."""
    shutil.rmtree(data / "karpathy")
    (line,) = refusals(capsys, tmp_path, f"data_root={data}", "matchers=[clip]",
                       f"weights.clip={published_weights['clip']}")
    assert f"data_root: {data}/karpathy/dataset_f30k.json: missing (the captions of a pixel matcher: a SCAN " \
           "precomp folder has none); put Karpathy's caption file there" in line
    assert line.endswith("(3 cell(s): f30k/clip/baseline/s0, f30k/clip/DBL abs/s0, f30k/clip/DBL rel/s0)")


@pytest.mark.slow  # the session's generated CLIP ViT-B/32 folder
def test_missing_images(capsys, tmp_path, data, published_weights):
    weights = f"weights.clip={published_weights['clip']}"
    gone = ["f30k_train_000000.png", "f30k_test_000029.png"]
    for name in gone:
        (data / "images" / name).unlink()
    (line,) = refusals(capsys, tmp_path, f"data_root={data}", "matchers=[clip]", weights)
    assert f"data_root: {data}/images: 2 of 160 images looked for are missing, first: {gone[0]}, {gone[1]} " \
           f"(listed in {data}/karpathy/dataset_f30k.json); point image_root" in line
    shutil.rmtree(data / "images")
    (line,) = refusals(capsys, tmp_path, f"data_root={data}", "matchers=[clip]", weights)
    assert f"data_root: {data}/images: the image folder does not exist; point image_root" in line


def _tiny_clip(folder: Path) -> Path:
    import models

    models.build("clip", preset="tiny", vocab_words=["a", "dog"]).save_pretrained(folder)
    return folder


def test_a_weights_folder_of_the_wrong_architecture(capsys, tmp_path, data):
    """A CLIP folder of another size than the ViT-B/32 a full-scale cell names, and a CLIP model where
    BERT's folder belongs: named from config.json, no weights read."""
    tiny = _tiny_clip(tmp_path / "tiny-clip")
    lines = refusals(capsys, tmp_path, f"data_root={data}", "matchers=[clip, vse_infty_bert]",
                     f"weights.clip={tiny}", f"weights.bert={tiny}")
    clip = one_line(lines, f"weights.clip: {tiny}: holds another architecture than the cell names:")
    for field, have, want in (("text_config.hidden_size", 32, 512), ("vision_config.patch_size", 8, 32),
                              ("vision_config.num_hidden_layers", 2, 12), ("vision_config.image_size", 32, 224)):
        assert f"{field} {have} (the cell names {want})" in clip
    assert "point weights.clip at a folder of the architecture the cell names (CLIP ViT-B/32: hf download " \
           "openai/clip-vit-base-patch32" in clip
    assert clip.endswith("(3 cell(s): f30k/clip/baseline/s0, f30k/clip/DBL abs/s0, f30k/clip/DBL rel/s0)")
    bert = one_line(lines, f"weights.bert: {tiny}: holds a 'clip' model (config.json model_type), not 'bert' "
                           "(BERT-base (uncased)); point weights.bert at a BERT-base (uncased) folder (hf download "
                           "google-bert/bert-base-uncased")
    assert bert.endswith("(3 cell(s): f30k/vse_infty_bert/baseline/s0, f30k/vse_infty_bert/DBL abs/s0, "
                         "f30k/vse_infty_bert/DBL rel/s0)")


@pytest.mark.slow  # the session's generated BERT-base folder
def test_a_missing_tokenizer(capsys, tmp_path, data, published_weights):
    """BERT's weights and config without its tokenizer files (copied without vocab.txt / tokenizer.json)."""
    folder = tmp_path / "bert-no-tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).symlink_to(published_weights["bert"] / name)
    (line,) = refusals(capsys, tmp_path, f"data_root={data}", "matchers=[vse_infty_bert]", f"weights.bert={folder}")
    assert f"weights.bert: {folder}: has no tokenizer (tokenizer.json or vocab.txt); copy the tokenizer files of " \
           "google-bert/bert-base-uncased into the folder" in line


def test_a_vocabulary_of_another_dataset(capsys, tmp_path, data):
    """A vocabulary built from other captions: its words never occur in this dataset's training captions."""
    from bench.data.vocab import build_vocab, save_vocab

    other = ["Two young guys with shaggy hair look at their hands while hanging out in the yard.",
             "A man in a blue shirt is standing on a ladder cleaning windows.",
             "Several men in hard hats are operating a giant pulley system.",
             "A child in a pink dress is climbing up a set of stairs in an entry way.",
             "Two men are at the stove preparing food."]
    vocab = data / "vocab" / "f30k_precomp_vocab.json"
    save_vocab(build_vocab(other), vocab)
    (line,) = refusals(capsys, tmp_path, f"data_root={data}", "matchers=[vse_infty]")
    assert re.search(rf"vocab_root: {vocab}: \d+ of its \d+ words \(\d+%\) never occur in "
                     rf"{data}/f30k_precomp/train_caps.txt, e\.g\. '\w+', '\w+', '\w+': the vocabulary of other "
                     r"captions \(another dataset's\?\); use the vocabulary built from this dataset's captions", line)


def test_the_datasets_own_vocabularies_pass(data):
    """No false alarm: each dataset's own vocabulary, and COCO's on Flickr30K (the same synthetic world's
    words), pass; the rule is the share of the vocabulary's words missing from the training captions."""
    from bench.inputs import FOREIGN_VOCAB_SHARE, check_cells
    from bench.spec import Cell

    def cell(name: str) -> Cell:
        return Cell.from_dict({"dataset": {"name": name, "data_root": str(data)}, "matcher": {"name": "vse_infty"},
                               "strategy": {"name": "baseline"}, "scale": "full"})

    assert check_cells([cell("f30k_precomp"), cell("coco_precomp")]) == []
    shutil.copy(data / "vocab" / "coco_precomp_vocab.json", data / "vocab" / "f30k_precomp_vocab.json")
    assert check_cells([cell("f30k_precomp")]) == [] and 0 < FOREIGN_VOCAB_SHARE < 0.5


@pytest.mark.slow  # the session's generated CLIP and BERT folders
def test_a_full_scale_cell_without_its_weights_names_the_download_and_the_override(capsys, tmp_path, data,
                                                                                    published_weights, monkeypatch):
    """Refused with the command that fetches the weights and the override that names them; the overrides, typed
    as printed in a folder where the fetched folders lie (here: the generated ones, of the same files), are
    accepted by the same three commands, and the CLIP cells build ViT-B/32's 151,277,313 parameters."""
    lines = refusals(capsys, tmp_path, f"data_root={data}", "matchers=[clip, vse_infty_bert]")
    overrides = []
    for kind, matcher in (("clip", "clip"), ("bert", "vse_infty_bert")):
        k = KINDS[kind]
        line = one_line(lines, f"{k.key}: not given: a full-scale {matcher} cell starts from local pretrained weights")
        assert f"fetch them on a machine with internet ({fetch_command(kind)}), copy the folder here and add the " \
               f"override {k.key}=models/{k.folder} (3 cell(s): f30k/{matcher}/baseline/s0, " in line
        overrides.append(re.search(rf"add the override ({k.key}=\S+)", line).group(1))
        (tmp_path / "models").mkdir(exist_ok=True)
        (tmp_path / overrides[-1].split("=", 1)[1]).symlink_to(published_weights[kind])  # where the command put it
    monkeypatch.chdir(tmp_path)
    args = ["dbl", "scale=full", "seeds=[0]", F30K, "matchers=[clip, vse_infty_bert]", f"data_root={data}", *overrides,
            "--root", str(tmp_path / "runs")]
    main(["show", *args])
    main(["sweep", *args, "--executor", "slurm", "--cluster", "example-gpu", "--dry-run"])
    out, err = capsys.readouterr()
    assert not err and re.search(r"^ +151,277,313  f30k/clip$", out, re.M) and "nothing is submitted" in out


# The README's fetch commands, verbatim (test_the_readme_download_commands_parse checks the README says them).
README_FETCH = {
    "clip": 'hf download openai/clip-vit-base-patch32 --local-dir models/clip-vit-base-patch32 --include "*.json" --include "*.txt" --include "*.safetensors"',  # noqa: E501
    "bert": 'hf download google-bert/bert-base-uncased --local-dir models/bert-base-uncased --include "*.json" --include "*.txt" --include "*.safetensors"',  # noqa: E501
}


def test_the_readme_download_commands_parse(tmp_path):
    """The README's `hf download` lines (= what a refusal prints) are accepted by the installed Hub client: run
    as written plus --dry-run, offline, each stops only because the Hub cannot be reached."""
    readme = (REPO / "README.md").read_text()
    for kind, k in KINDS.items():
        command = fetch_command(kind, f"models/{k.folder}")
        assert command == README_FETCH[kind] and f"\n{command}\n" in readme
        argv = shlex.split(command)
        hf = Path(sys.executable).parent / argv[0]
        out = subprocess.run([str(hf), *argv[1:], "--dry-run"], cwd=tmp_path, capture_output=True, text=True,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
        assert out.returncode == 1 and "DryRunError" in out.stderr and "No such option" not in out.stderr, out.stderr
        assert not (tmp_path / "models").exists()


def test_a_weights_kind_that_does_not_exist():
    from bench.harness.config import ConfigError, load_suite

    with pytest.raises(ConfigError) as err:
        load_suite("dbl", ["weights.clp=/models/clip"])
    assert str(err.value) == f"{REPO}/bench/suites/dbl.yaml: weights.clp: unknown key 'clp'. Did you mean: clip? " \
                             "Valid: bert, clip"


def test_the_paper_tables_at_smoke_scale_read_every_input_of_the_embedded_data(tiny_data):
    """`make table-<t>`'s default journey (scale=smoke on the embedded data, both datasets, every matcher): no
    input is missing, CLIP's COCO cells included (every preset renders COCO's images and Karpathy file)."""
    from bench.harness.cells import expand
    from bench.harness.config import load_suite
    from bench.inputs import check_cells

    for name in ("dbl", "oas", "oss", "mss", "ablation", "cohort"):
        cells = expand(load_suite(name, ["scale=smoke", f"data_root={tiny_data}", "seeds=[0]"]))
        assert check_cells(cells) == [], name
    clip_coco = [c for c in expand(load_suite("dbl", ["scale=smoke", f"data_root={tiny_data}", "seeds=[0]"]))
                 if c.matcher.name == "clip" and c.dataset.name == "coco_precomp"]
    assert len(clip_coco) == 3
