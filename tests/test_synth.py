"""The embedded dataset: layout readable by the real readers, determinism, learnable-not-trivial."""

import hashlib
import json

import numpy as np
import pytest

from bench.data.errors import DataError
from bench.data.karpathy import KarpathySplit
from bench.data.precomp import DATASETS, PrecompSplit, vocab_path
from bench.data.synth import PRESETS, Preset, generate, main
from bench.data.vocab import load_vocab, tokenize


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("synth") / "tiny", "tiny", seed=0)


def digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_is_readable_by_the_real_readers(tiny):
    manifest = json.loads((tiny / "MANIFEST.json").read_text())
    assert manifest["preset"] == "tiny" and manifest["seed"] == 0
    for dataset, splits in DATASETS.items():
        vocab = load_vocab(vocab_path(tiny / "vocab", dataset))
        assert manifest["vocab_sizes"][dataset] == len(vocab)
        for split in splits:
            data = PrecompSplit(tiny, dataset, split)
            assert data.region_shape == (12, 64) and data.images.dtype == np.float32
            assert data.n_images == manifest["sizes"][dataset][split]
            assert np.isfinite(data.read_images(0, data.n_images)).all()
            encoded = [vocab.encode(c) for c in data.captions]
            assert all(3 not in ids for ids in encoded)  # every caption word is in the vocabulary
    sizes = manifest["sizes"]
    assert sizes["f30k_precomp"] == {"train": 100, "dev": 30, "test": 30}
    assert sizes["coco_precomp"]["testall"] == 5 * sizes["coco_precomp"]["test"]


def test_coco_test_is_first_fold_of_testall(tiny):
    test, testall = PrecompSplit(tiny, "coco_precomp", "test"), PrecompSplit(tiny, "coco_precomp", "testall")
    n = test.n_images
    np.testing.assert_array_equal(test.read_images(0, n), testall.read_images(0, n))
    assert test.captions == testall.captions[: 5 * n] and test.ids == testall.ids[:n]
    assert not np.array_equal(testall.read_images(0, n), testall.read_images(n, 2 * n))


def test_karpathy_json_matches_f30k_precomp(tiny):
    for split in ("train", "dev", "test"):
        precomp = PrecompSplit(tiny, "f30k_precomp", split)
        pixels = KarpathySplit(tiny / "karpathy" / "dataset_f30k.json", tiny / "images", split)
        assert pixels.captions == precomp.captions and pixels.n_images == precomp.n_images
    image = pixels.load_image(0)
    assert image.size == (64, 64) and len(set(image.getdata())) > 1  # objects drawn on the background
    for entry in json.loads((tiny / "karpathy" / "dataset_f30k.json").read_text())["images"]:
        assert entry["split"] in ("train", "val", "test") and len(entry["sentences"]) == 5
        for sentence in entry["sentences"]:  # Karpathy tokens: the words, without punctuation
            words = [t for t in tokenize(sentence["raw"]) if t[0].isalnum()]
            assert sentence["tokens"] == words and words


def test_same_seed_same_bytes_other_seed_differs(tiny, tmp_path):
    again = generate(tmp_path / "again", "tiny", seed=0)
    assert digest(again) == digest(tiny)
    other = generate(tmp_path / "other", "tiny", seed=1)
    a, b = digest(tiny), digest(other)
    assert a.keys() == b.keys()
    assert a["f30k_precomp/train_ims.npy"] != b["f30k_precomp/train_ims.npy"]
    assert a["f30k_precomp/train_caps.txt"] != b["f30k_precomp/train_caps.txt"]
    assert a["images/f30k_test_000000.png"] != b["images/f30k_test_000000.png"]


def test_skip_when_manifest_matches_and_refuse_other(tmp_path):
    preset = Preset(regions=4, dim=8, f30k={"train": 3, "dev": 2, "test": 2}, coco_train=2, coco_dev=2,
                    coco_fold=1, image_size=16)
    out = generate(tmp_path / "d", preset, seed=5)
    marker = out / "f30k_precomp" / "train_caps.txt"
    marker.write_text("edited\n")
    generate(out, preset, seed=5)  # manifest matches: nothing rewritten
    assert marker.read_text() == "edited\n"
    with pytest.raises(DataError, match="MANIFEST.json"):
        generate(out, preset, seed=6)
    generate(out, preset, seed=6, overwrite=True)
    assert json.loads((out / "MANIFEST.json").read_text())["seed"] == 6
    assert PrecompSplit(out, "coco_precomp", "testall").region_shape == (4, 8)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(DataError, match="full"):
        generate(tmp_path / "full", preset)
    with pytest.raises(DataError, match="huge"):
        generate(tmp_path / "e", "huge")


def test_cli(tmp_path, capsys):
    assert main(["--preset", "tiny", "--out", str(tmp_path / "cli"), "--seed", "2"]) == 0
    assert "tiny" in capsys.readouterr().out
    assert json.loads((tmp_path / "cli" / "MANIFEST.json").read_text())["seed"] == 2


def test_presets_shapes():
    assert (PRESETS["f30k"].regions, PRESETS["f30k"].dim, PRESETS["f30k"].f30k["test"]) == (36, 2048, 1000)
    assert PRESETS["demo"].f30k["train"] >= 1000 and PRESETS["tiny"].regions == 12


def bag_of_words(captions, vocab):
    x = np.zeros((len(captions), len(vocab)))
    for i, caption in enumerate(captions):
        for token in tokenize(caption):
            x[i, vocab(token)] += 1
    return x


def test_ridge_baseline_learns_but_is_not_perfect(tiny):
    """Ridge regression bag-of-words -> mean region feature, ranked by cosine (t2i and i2t R@1)."""
    vocab = load_vocab(vocab_path(tiny / "vocab", "f30k_precomp"))
    train, test = PrecompSplit(tiny, "f30k_precomp", "train"), PrecompSplit(tiny, "f30k_precomp", "test")
    y_train = train.read_images(0, train.n_images).mean(axis=1)
    mean = y_train.mean(axis=0)
    x = bag_of_words(train.captions, vocab)
    w = np.linalg.solve(x.T @ x + np.eye(len(vocab)), x.T @ (np.repeat(y_train, 5, axis=0) - mean))
    text = bag_of_words(test.captions, vocab) @ w
    image = test.read_images(0, test.n_images).mean(axis=1) - mean
    text /= np.linalg.norm(text, axis=1, keepdims=True) + 1e-8
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    sims = image @ text.T  # [N, 5N]
    n = test.n_images
    t2i_r1 = 100 * np.mean(sims.argmax(axis=0) == np.arange(5 * n) // 5)
    i2t_r1 = 100 * np.mean(sims.argmax(axis=1) // 5 == np.arange(n))
    chance = 100 / n
    assert 3 * chance < t2i_r1 < 90, t2i_r1
    assert 3 * chance < i2t_r1 < 90, i2t_r1
    # shuffling the pairing destroys the signal (the score is not an artefact of the metric)
    perm = np.random.default_rng(0).permutation(n)
    assert 100 * np.mean(sims[perm].argmax(axis=0) == np.arange(5 * n) // 5) < t2i_r1


def test_the_rehearsal_preset_has_the_published_shapes(rehearsal_data, tiny):
    """36 x 2048 regions, both datasets with 224-px images and a Karpathy file whose splits are the precomp
    splits' images and captions (COCO's test = the 5 folds of testall); the presets written before keep
    their manifest (no `pixels` key) and so are not regenerated."""
    from bench.data.layout import KARPATHY_JSON, karpathy_split

    manifest = json.loads((rehearsal_data / "MANIFEST.json").read_text())
    assert manifest["region_shape"] == [36, 2048] and manifest["config"]["pixels"] == ["f30k_precomp", "coco_precomp"]
    assert "pixels" not in json.loads((tiny / "MANIFEST.json").read_text())["config"]
    for dataset, splits in (("f30k_precomp", ("train", "dev", "test")), ("coco_precomp", ("train", "dev", "testall"))):
        for split in splits:
            precomp = PrecompSplit(rehearsal_data, dataset, split)
            pixels = KarpathySplit(rehearsal_data / "karpathy" / KARPATHY_JSON[dataset], rehearsal_data / "images",
                                   karpathy_split(split))
            assert precomp.region_shape == (36, 2048) and precomp.images.dtype == np.float32
            assert pixels.captions == precomp.captions and pixels.n_images == precomp.n_images
        assert pixels.load_image(0).size == (224, 224)
    assert PrecompSplit(rehearsal_data, "coco_precomp", "testall").n_images == 5 * manifest["sizes"]["coco_precomp"]["test"]
    assert PrecompSplit(rehearsal_data, "f30k_precomp", "train").n_images >= 2 * 128  # two published batches
    coco = json.loads((rehearsal_data / "karpathy" / "dataset_coco.json").read_text())["images"]
    assert len(coco) == len({e["filename"] for e in coco})  # test (the first fold) is not listed twice


def test_every_preset_has_coco_images_and_the_files_before_them_keep_every_byte(tiny, tmp_path):
    """tiny, demo and f30k render COCO after everything else (their COCO predates its images): a Karpathy file
    whose splits are the precomp splits' captions, an image per entry; a folder written before (no COCO
    Karpathy file) gets them in place, every file it had left byte for byte; the caption file is written last,
    so a folder that has it is complete and left as it is."""
    from bench.data.layout import KARPATHY_JSON, karpathy_split
    from bench.data.synth import write_late_pixels

    for split in ("train", "dev", "testall"):
        precomp = PrecompSplit(tiny, "coco_precomp", split)
        pixels = KarpathySplit(tiny / "karpathy" / KARPATHY_JSON["coco_precomp"], tiny / "images", karpathy_split(split))
        assert pixels.captions == precomp.captions and pixels.n_images == precomp.n_images
        assert pixels.load_image(0).size == (64, 64)
    # a folder as the generator wrote it before COCO had images: regenerating adds them and changes nothing else
    old = tmp_path / "old"
    generate(old, "tiny", seed=0)
    (old / "karpathy" / "dataset_coco.json").unlink()
    for png in (old / "images").glob("coco_*.png"):
        png.unlink()
    before = digest(old)
    generate(old, "tiny", seed=0)
    after = digest(old)
    assert {k: after[k] for k in before} == before and after == digest(tiny)
    assert write_late_pixels(old, PRESETS["tiny"], seed=0) == []  # complete: nothing written again
