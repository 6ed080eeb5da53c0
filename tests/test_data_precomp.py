"""SCAN precomp readers: validation, memory mapping, items, augmentation determinism, batches."""

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from bench.data.errors import DataError
from bench.data.precomp import (
    DATASETS,
    PrecompDataset,
    PrecompSplit,
    augment_caption,
    collate_pairs,
    iter_caption_batches,
    iter_image_batches,
    vocab_path,
)
from bench.data.vocab import Vocabulary

WORDS = ["a", "red", "blue", "ball", "dog", "cat", "big", "next", "to"]


def write_split(root, dataset="f30k_precomp", split="test", n_images=4, regions=6, dim=8, ims=None,
                captions=None, ids=None, seed=0):
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if ims is None:
        ims = rng.standard_normal((n_images, regions, dim)).astype(np.float32)
    np.save(folder / f"{split}_ims.npy", ims)
    if captions is None:
        captions = [" ".join(rng.choice(WORDS, size=3 + (c % 4))) for c in range(5 * len(ims))]
    (folder / f"{split}_caps.txt").write_text("".join(c + "\n" for c in captions))
    if ids is None:
        ids = [str(1000 + i) for i in range(len(ims))]
    (folder / f"{split}_ids.txt").write_text("".join(i + "\n" for i in ids))
    return ims, captions


@pytest.fixture
def vocab():
    return Vocabulary(WORDS)


def test_reads_split_with_memmap(tmp_path):
    ims, captions = write_split(tmp_path, n_images=4, regions=36, dim=64)
    split = PrecompSplit(tmp_path, "f30k_precomp", "test")
    assert isinstance(split.images, np.memmap)
    assert (split.n_images, split.n_captions, split.region_shape) == (4, 20, (36, 64))
    assert split.captions == captions and split.image_ids == ["1000", "1001", "1002", "1003"]
    assert split.path == tmp_path / "f30k_precomp" / "test_ims.npy"
    np.testing.assert_array_equal(split.read_images(1, 3), ims[1:3])
    # pickling (DataLoader workers) must not copy the array; the copy reopens the memmap
    blob = pickle.dumps(split)
    assert len(blob) < ims.nbytes
    clone = pickle.loads(blob)
    assert isinstance(clone.images, np.memmap)
    np.testing.assert_array_equal(clone.read_images(0, 4), ims)


def test_ids_per_caption_accepted(tmp_path):
    write_split(tmp_path, n_images=2, ids=[str(i // 5) for i in range(10)])
    assert PrecompSplit(tmp_path, "f30k_precomp", "test").image_ids == ["0", "1"]


def test_datasets_and_vocab_path(tmp_path):
    assert DATASETS["f30k_precomp"] == ("train", "dev", "test")
    assert "testall" in DATASETS["coco_precomp"]
    assert vocab_path(tmp_path, "coco_precomp") == tmp_path / "coco_precomp_vocab.json"
    with pytest.raises(DataError):
        vocab_path(tmp_path, "f30k")


@pytest.mark.parametrize("missing", ["test_ims.npy", "test_caps.txt", "test_ids.txt"])
def test_missing_file(tmp_path, missing):
    write_split(tmp_path)
    (tmp_path / "f30k_precomp" / missing).unlink()
    with pytest.raises(DataError, match=missing):
        PrecompSplit(tmp_path, "f30k_precomp", "test")


@pytest.mark.parametrize("kwargs,file", [
    ({"ims": np.zeros((4, 8), np.float32)}, "test_ims.npy"),  # ndim 2
    ({"ims": np.zeros((4, 6, 8), np.int32)}, "test_ims.npy"),  # not float
    ({"ims": np.zeros((0, 6, 8), np.float32), "captions": [], "ids": []}, "test_ims.npy"),  # empty
    ({"captions": ["a dog"] * 19}, "test_caps.txt"),  # 19 != 5 x 4
    ({"captions": ["a dog"] * 7 + ["  "] + ["a dog"] * 12}, "test_caps.txt:8"),  # empty line
    ({"ids": ["1", "2", "3"]}, "test_ids.txt"),
])
def test_validation_errors_name_the_file(tmp_path, kwargs, file):
    write_split(tmp_path, n_images=4, **kwargs)
    with pytest.raises(DataError, match=file):
        PrecompSplit(tmp_path, "f30k_precomp", "test")


def test_unknown_split(tmp_path):
    with pytest.raises(DataError, match="testall"):
        PrecompSplit(tmp_path, "f30k_precomp", "testall")


def test_nan_detected_on_read(tmp_path, vocab):
    ims = np.ones((3, 4, 5), np.float32)
    ims[2, 1, 3] = np.nan
    write_split(tmp_path, ims=ims)
    split = PrecompSplit(tmp_path, "f30k_precomp", "test")  # construction does not scan the file
    dataset = PrecompDataset(split, vocab)
    dataset[9]  # image 1 is fine
    with pytest.raises(DataError, match=r"test_ims.npy: image 2"):
        dataset[10]
    with pytest.raises(DataError, match="image 2"):
        list(iter_image_batches(split, batch_size=2))


def test_items_pair_caption_with_its_image(tmp_path, vocab):
    ims, captions = write_split(tmp_path, n_images=4)
    split = PrecompSplit(tmp_path, "f30k_precomp", "test")
    dataset = PrecompDataset(split, vocab, n_images=3)
    assert len(dataset) == 15
    item = dataset[7]
    assert (item["image_index"], item["caption_index"]) == (1, 7)
    np.testing.assert_array_equal(item["image"], ims[1])
    assert item["caption"].tolist() == vocab.encode(captions[7])
    with pytest.raises(IndexError):
        dataset[15]
    with pytest.raises(DataError, match="n_images=5"):
        PrecompDataset(split, vocab, n_images=5)


def test_no_augmentation_unless_training(tmp_path, vocab):
    ims, captions = write_split(tmp_path)
    split = PrecompSplit(tmp_path, "f30k_precomp", "test")
    dataset = PrecompDataset(split, vocab.with_mask(), train=False, region_drop=0.5, token_aug=True)
    item = dataset[3]
    assert item["image"].shape == (6, 8) and item["caption"].tolist() == vocab.encode(captions[3])


def test_augmentation_is_a_function_of_seed_epoch_index(tmp_path, vocab):
    write_split(tmp_path, n_images=4, regions=30)
    split = PrecompSplit(tmp_path, "f30k_precomp", "test")

    def make(seed):
        return PrecompDataset(split, vocab.with_mask(), train=True, region_drop=0.5, token_aug=True, seed=seed)

    a, b = make(0), make(0)
    a.set_epoch(3)
    b.set_epoch(3)
    for index in (5, 0, 17):  # any access order gives the same item
        ia, ib = a[index], b[index]
        np.testing.assert_array_equal(ia["image"], ib["image"])
        np.testing.assert_array_equal(ia["caption"], ib["caption"])
    images_epoch3 = [a[i]["image"].shape[0] for i in range(20)]
    a.set_epoch(4)
    assert [a[i]["image"].shape[0] for i in range(20)] != images_epoch3
    other_seed = make(1)
    other_seed.set_epoch(3)
    assert [other_seed[i]["image"].shape[0] for i in range(20)] != images_epoch3
    # dropped regions are a subset of the real ones, at least one kept
    full = split.read_images(0, 1)[0]
    kept = a[2]["image"]
    assert 1 <= len(kept) < 30
    assert all(any(np.array_equal(r, f) for f in full) for r in kept)


def test_region_drop_keeps_at_least_one(tmp_path, vocab):
    write_split(tmp_path, n_images=4, regions=2)
    split = PrecompSplit(tmp_path, "f30k_precomp", "test")
    dataset = PrecompDataset(split, vocab, train=True, region_drop=0.95)
    assert min(dataset[i]["image"].shape[0] for i in range(20)) == 1


@pytest.mark.parametrize("touch_ends", [True, False])
def test_token_augmentation_rates(touch_ends):
    rng = np.random.default_rng(0)
    n = 20000
    ids = np.concatenate([[1], np.full(n, 7), [2]])
    out = augment_caption(ids, rng, mask_id=50, vocab_size=51, touch_ends=touch_ends)
    if not touch_ends:
        assert out[0] == 1 and out[-1] == 2
    words = out[1:-1]
    deleted = n + 2 - len(out)
    masked = int((words == 50).sum())
    replaced = int(((words != 7) & (words != 50)).sum())
    # p = 0.2: masked 10%, replaced 2% (minus the few that hit id 7 or the mask), deleted 8%
    assert abs(masked / n - 0.10) < 0.01 and abs(deleted / n - 0.08) < 0.01 and abs(replaced / n - 0.02) < 0.005
    # replacements come from the whole vocabulary, specials and the mask word included
    assert words.min() == 0 and words.max() == 50


def _reference_augment(tokens, vocab, rng, touch_ends, p=0.2):
    """The reference rule, re-implemented from its description: caption tokens as strings with
    <start>/<end> around them; one uniform per token; below p: mask (first half of the band),
    random id of the whole vocabulary (next tenth), else delete. DBL (touch_ends=False) still
    draws for <start>/<end> but never changes them."""
    out = []
    for token in ["<start>", *tokens, "<end>"]:
        u = rng.random()
        if u < p and (touch_ends or token not in ("<start>", "<end>")):
            if u / p < 0.5:
                out.append(vocab.word2idx["<mask>"])
            elif u / p < 0.6:
                out.append(int(rng.integers(len(vocab))))
            continue
        out.append(vocab(token))
    return out


@pytest.mark.parametrize("touch_ends", [True, False])
def test_augmented_caption_equals_the_reference_rule(tmp_path, touch_ends):
    from bench.data.vocab import tokenize

    _, captions = write_split(tmp_path, n_images=40, regions=4)
    split = PrecompSplit(tmp_path, "f30k_precomp", "test")
    vocab = Vocabulary(WORDS).with_mask()
    assert len(vocab) == len(WORDS) + 5 and vocab.word2idx["<mask>"] == len(WORDS) + 4
    dataset = PrecompDataset(split, vocab, train=True, token_aug=True, token_aug_ends=touch_ends, seed=7)
    dataset.set_epoch(2)
    changed = ends_hit = 0
    for index in range(len(dataset)):
        rng = np.random.default_rng([7, 2, index])  # the item's random stream
        want = _reference_augment(tokenize(captions[index]), vocab, rng, touch_ends)
        got = dataset[index]["caption"].tolist()
        if want:  # (where the reference would delete every token, the caption is kept instead)
            assert got == want, index
        changed += got != vocab.encode(captions[index])
        ends_hit += got[:1] != [1] or got[-1:] != [2]
    assert changed > 50  # the augmentation ran on most captions
    assert (ends_hit > 0) == touch_ends  # VSE∞ may touch <start>/<end>, DBL never


def test_token_augmentation_needs_the_mask_word(tmp_path, vocab):
    write_split(tmp_path)
    split = PrecompSplit(tmp_path, "f30k_precomp", "test")
    with pytest.raises(ValueError, match=r"<mask>.*vocab.with_mask\(\)"):
        PrecompDataset(split, vocab, train=True, token_aug=True)
    # with_mask copies: the loaded vocabulary (and its file) stay without the word
    extended = vocab.with_mask()
    assert "<mask>" not in vocab and len(extended) == len(vocab) + 1
    assert extended.word2idx["<mask>"] == len(vocab) and len(extended.with_mask()) == len(extended)


def test_collate_pairs_pads(tmp_path, vocab):
    write_split(tmp_path, regions=6, dim=8)
    split = PrecompSplit(tmp_path, "f30k_precomp", "test")
    dataset = PrecompDataset(split, vocab, train=True, region_drop=0.5, seed=1)
    items = [dataset[i] for i in (0, 6, 13)]
    batch = collate_pairs(items)
    assert batch["images"].dtype == torch.float32 and batch["images"].shape[0] == 3
    assert batch["image_lengths"].tolist() == [len(it["image"]) for it in items]
    assert batch["images"].shape[1] == max(batch["image_lengths"].tolist())
    for i, it in enumerate(items):
        n = len(it["image"])
        torch.testing.assert_close(batch["images"][i, :n], torch.from_numpy(it["image"]))
        assert batch["images"][i, n:].abs().sum() == 0
        L = len(it["caption"])
        assert batch["captions"][i, :L].tolist() == it["caption"].tolist()
        assert batch["captions"][i, L:].sum() == 0
    assert batch["captions"].dtype == torch.int64 and batch["caption_lengths"].dtype == torch.int64
    assert batch["image_index"].tolist() == [0, 1, 2] and batch["caption_index"].tolist() == [0, 6, 13]


def test_dataloader_with_collate(tmp_path, vocab):
    write_split(tmp_path, n_images=4)
    split = PrecompSplit(tmp_path, "f30k_precomp", "test")
    loader = DataLoader(PrecompDataset(split, vocab), batch_size=8, shuffle=False, collate_fn=collate_pairs)
    batches = list(loader)
    assert [b["images"].shape[0] for b in batches] == [8, 8, 4]
    assert torch.cat([b["caption_index"] for b in batches]).tolist() == list(range(20))


def test_eval_iterators_each_image_once(tmp_path, vocab):
    ims, captions = write_split(tmp_path, n_images=5, regions=6, dim=8)
    split = PrecompSplit(tmp_path, "f30k_precomp", "test")
    batches = list(iter_image_batches(split, batch_size=2, n_images=4))
    assert [sorted(b) for b in batches][0] == ["image_index", "image_lengths", "images"]
    assert torch.cat([b["image_index"] for b in batches]).tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(torch.cat([b["images"] for b in batches]).numpy(), ims[:4])
    assert all(b["image_lengths"].tolist() == [6] * len(b["images"]) for b in batches)
    caps = list(iter_caption_batches(split, vocab, batch_size=7, n_images=4))
    assert [sorted(b) for b in caps][0] == ["caption_index", "caption_lengths", "captions", "raw_captions"]
    assert torch.cat([b["caption_index"] for b in caps]).tolist() == list(range(20))
    first = caps[0]
    for row in range(7):
        L = int(first["caption_lengths"][row])
        assert first["captions"][row, :L].tolist() == vocab.encode(captions[row])
