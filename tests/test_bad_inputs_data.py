"""Bad inputs in the data files (docs/bad-inputs.md, the data entries): caption files split on
``\\n`` only, byte-order marks, non-UTF-8 bytes, empty or zipped feature files, a vocabulary that
does not cover the captions. Each test runs the real cell on a broken copy of the tiny embedded
dataset and asserts the message names the file (and line), the problem and the fix, before any
training step."""

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from bench.data import DataError
from bench.data.precomp import PrecompSplit
from bench.data.vocab import UNK_STOP_SHARE, UNK_WARN_SHARE, Vocabulary, load_vocab, save_vocab, unk_share
from bench.spec import Cell
from bench.train import run_cell


def cell(data) -> Cell:
    return Cell.from_dict({"id": "datacell", "suite": "bad", "seed": 0,
            "dataset": {"name": "f30k_precomp", "data_root": str(data), "vocab_root": str(data / "vocab")},
            "matcher": {"name": "vse_infty", "embed_size": 16, "word_dim": 8},
            "strategy": {"name": "baseline", "params": {}},
            "schedule": {"epochs": 1, "batch_size": 32, "lr": 2e-3, "max_steps_per_epoch": 1},
            "eval": {"dev_images": 10, "batch_size": 64}})


@pytest.fixture
def data(tiny_data, tmp_path):
    """A private copy of the tiny embedded dataset that a test may break."""
    return Path(shutil.copytree(tiny_data, tmp_path / "data"))


def fails_before_training(data, tmp_path) -> str:
    run = tmp_path / "run"
    with pytest.raises(DataError) as info:
        run_cell(cell(data), run)
    assert not (run / "last.pt").exists() and not (run / "best.pt").exists()
    return str(info.value)


def test_a_caption_holding_a_unicode_line_separator(data, tmp_path):
    # U+2028, \x85 and \x0c inside three captions and one caption line missing elsewhere:
    # str.splitlines counted 500 lines again and paired every later caption with the wrong image
    caps = data / "f30k_precomp" / "train_caps.txt"
    lines = caps.read_text(encoding="utf-8").split("\n")[:-1]
    lines[3] = lines[3].replace(" ", "\u2028", 1)
    lines[10] = lines[10].replace(" ", "\x85", 1)
    lines[20] = lines[20].replace(" ", "\x0c", 1)
    del lines[400:403]
    caps.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert len(caps.read_text(encoding="utf-8").splitlines()) == 500  # the old reading: no error
    msg = fails_before_training(data, tmp_path)
    assert f"{caps}: 497 captions for 100 images" in msg and "expected 5 consecutive captions per image" in msg


def test_crlf_line_ends_and_a_byte_order_mark_read_as_the_same_captions(data, tiny_data):
    caps = data / "f30k_precomp" / "train_caps.txt"
    original = PrecompSplit(tiny_data, "f30k_precomp", "train").captions
    text = caps.read_text(encoding="utf-8")
    caps.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    ids = data / "f30k_precomp" / "train_ids.txt"
    ids.write_bytes(b"\xef\xbb\xbf" + ids.read_bytes())
    split = PrecompSplit(data, "f30k_precomp", "train")
    assert split.captions == original and not split.captions[0].startswith("\ufeff")
    assert split.ids == PrecompSplit(tiny_data, "f30k_precomp", "train").ids


def test_caption_bytes_that_are_not_utf8(data, tmp_path):
    caps = data / "f30k_precomp" / "dev_caps.txt"
    lines = caps.read_bytes().split(b"\n")
    lines[6] = b"a caf\xe9 " + lines[6]  # Latin-1 e-acute
    caps.write_bytes(b"\n".join(lines))
    msg = fails_before_training(data, tmp_path)
    assert f"{caps}:7: not UTF-8 (byte 0xe9 at column 6" in msg and "re-save the file as UTF-8" in msg


def test_a_zero_byte_feature_file(data, tmp_path):
    ims = data / "f30k_precomp" / "train_ims.npy"
    ims.write_bytes(b"")
    msg = fails_before_training(data, tmp_path)
    assert msg.startswith(f"{ims}: the file is empty (0 bytes") and "re-download or regenerate it" in msg


def test_an_npz_archive_saved_as_npy(data, tmp_path):
    ims = data / "f30k_precomp" / "test_ims.npy"
    feats = np.load(ims)
    with open(ims, "wb") as f:
        np.savez(f, feats)
    msg = fails_before_training(data, tmp_path)
    assert msg.startswith(f"{ims}: a zip archive (an .npz or a torch checkpoint; members: ['arr_0']), not one .npy")
    assert "numpy.save(path, array)" in msg
    with open(ims, "wb") as f:  # a torch checkpoint of many arrays: its members were all listed
        np.savez(f, **{f"layer{i}.weight": np.zeros(1) for i in range(300)})
    msg = fails_before_training(data, tmp_path)
    assert "members: ['layer0.weight', " in msg and "…" in msg and len(msg) < 400


def test_a_vocabulary_that_covers_few_caption_words_stops(data, tmp_path):
    # an upper-cased vocabulary (built without lower-casing): the lower-cased tokens are all unknown
    path = data / "vocab" / "f30k_precomp_vocab.json"
    vocab = load_vocab(path)
    save_vocab(Vocabulary(vocab.idx2word[i].upper() for i in range(4, len(vocab))), path)
    msg = fails_before_training(data, tmp_path)
    share = unk_share(load_vocab(path), PrecompSplit(data, "f30k_precomp", "train").captions)[0]
    assert share > UNK_STOP_SHARE
    assert msg.startswith(f"{path}: {share:.1%} of the ") and "f30k_precomp/train_caps.txt are not in the" in msg
    assert "read as <unk> (most frequent: 'a'" in msg and "use the vocabulary built from these captions" in msg


def test_a_vocabulary_missing_some_words_warns_with_the_share(data, tmp_path):
    path = data / "vocab" / "f30k_precomp_vocab.json"
    captions = PrecompSplit(data, "f30k_precomp", "train").captions
    vocab = load_vocab(path)
    words = [vocab.idx2word[i] for i in range(4, len(vocab))]
    colours = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
    kept = [w for w in words if w not in colours]  # a vocabulary without colour words
    save_vocab(Vocabulary(kept), path)
    share = unk_share(load_vocab(path), captions)[0]
    assert UNK_WARN_SHARE < share < UNK_STOP_SHARE
    with pytest.warns(UserWarning) as record:
        result = run_cell(cell(data), tmp_path / "run")
    msgs = [str(w.message) for w in record if str(path) in str(w.message)]
    assert len(msgs) == 1 and f"{share:.1%} of the " in msgs[0] and "'green'" in msgs[0]
    assert result["metrics"]  # training went on
    # the vocabulary of the captions themselves passes without a word
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert unk_share(vocab, captions)[0] <= UNK_WARN_SHARE
