"""Karpathy JSON + image folder readers for pixel matchers."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data.errors import DataError
from bench.data.karpathy import (
    KarpathyPairs,
    KarpathySplit,
    collate_raw,
    iter_raw_caption_batches,
    iter_raw_image_batches,
)


def make_dataset(root, splits=("train", "train", "restval", "val", "test", "test", "test"), n_captions=5,
                 filepath=None):
    images = root / "images"
    entries = []
    for i, split in enumerate(splits):
        folder = images / filepath if filepath else images
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (i * 30, 0, 0)).save(folder / f"img{i}.png")
        entry = {"filename": f"img{i}.png", "split": split, "imgid": i,
                 "sentences": [{"raw": f"image {i} caption {k}", "tokens": []} for k in range(n_captions)]}
        if filepath:
            entry["filepath"] = filepath
        entries.append(entry)
    path = root / "dataset_test.json"
    path.write_text(json.dumps({"images": entries}))
    return path, images


def test_reads_split_in_order(tmp_path):
    path, images = make_dataset(tmp_path)
    test = KarpathySplit(path, images, "test")
    assert test.filenames == ["img4.png", "img5.png", "img6.png"]
    assert (test.n_images, test.n_captions) == (3, 15)
    assert test.captions[5:7] == ["image 5 caption 0", "image 5 caption 1"]
    assert test.load_image(1).getpixel((0, 0)) == (150, 0, 0)
    train = KarpathySplit(path, images, "train")  # includes restval
    assert train.filenames == ["img0.png", "img1.png", "img2.png"]
    assert KarpathySplit(path, images, "dev").filenames == ["img3.png"]


def test_filepath_and_extra_captions(tmp_path):
    path, images = make_dataset(tmp_path, splits=("test",), n_captions=7, filepath="val2014")
    split = KarpathySplit(path, images, "test")
    assert split.filenames == ["val2014/img0.png"] and split.n_captions == 5


def test_missing_images_named(tmp_path):
    path, images = make_dataset(tmp_path)
    (images / "img5.png").unlink()
    with pytest.raises(DataError, match=r"img5\.png"):
        KarpathySplit(path, images, "test")


def test_too_few_captions(tmp_path):
    path, images = make_dataset(tmp_path, n_captions=4)
    with pytest.raises(DataError, match="dataset_test.json.*img4.png"):
        KarpathySplit(path, images, "test")


def test_missing_json_and_bad_split(tmp_path):
    path, images = make_dataset(tmp_path)
    with pytest.raises(DataError, match="nope.json"):
        KarpathySplit(tmp_path / "nope.json", images, "test")
    with pytest.raises(DataError, match="testall"):
        KarpathySplit(path, images, "testall")
    path.write_text("[1, 2]")
    with pytest.raises(DataError, match="dataset_test.json"):
        KarpathySplit(path, images, "test")


def test_pairs_all_captions(tmp_path):
    path, images = make_dataset(tmp_path)
    pairs = KarpathyPairs(KarpathySplit(path, images, "test"), n_images=2)
    assert len(pairs) == 10
    item = pairs[7]
    assert (item["image_index"], item["caption_index"], item["caption"]) == (1, 7, "image 5 caption 2")
    assert isinstance(item["image"], Image.Image) and item["image"].mode == "RGB"
    batch = collate_raw([pairs[0], pairs[7]])
    assert batch["raw_captions"] == ["image 4 caption 0", "image 5 caption 2"]
    assert len(batch["raw_images"]) == 2 and batch["image_index"].dtype == torch.int64
    assert batch["caption_index"].tolist() == [0, 7]


def test_one_caption_per_image_is_deterministic_per_epoch(tmp_path):
    path, images = make_dataset(tmp_path, splits=("test",) * 12)
    split = KarpathySplit(path, images, "test")
    a, b = KarpathyPairs(split, one_caption_per_image=True, seed=3), KarpathyPairs(split, one_caption_per_image=True,
                                                                                 seed=3)
    assert len(a) == 12
    a.set_epoch(2)
    b.set_epoch(2)
    chosen = [a[i]["caption_index"] for i in range(12)]
    assert chosen == [b[i]["caption_index"] for i in range(12)]
    assert [c // 5 for c in chosen] == list(range(12))  # one caption of each image
    assert [a[i]["image_index"] for i in range(12)] == list(range(12))
    a.set_epoch(3)
    assert [a[i]["caption_index"] for i in range(12)] != chosen
    # across epochs every caption slot gets used
    slots = set()
    for epoch in range(20):
        a.set_epoch(epoch)
        slots |= {int(c) % 5 for c in a.caption_of_item}
    assert slots == set(range(5))


def test_raw_iterators(tmp_path):
    path, images = make_dataset(tmp_path)
    split = KarpathySplit(path, images, "test")
    img_batches = list(iter_raw_image_batches(split, batch_size=2))
    assert [len(b["raw_images"]) for b in img_batches] == [2, 1]
    assert torch.cat([b["image_index"] for b in img_batches]).tolist() == [0, 1, 2]
    reds = [im.getpixel((0, 0))[0] for b in img_batches for im in b["raw_images"]]
    assert reds == [120, 150, 180]
    cap_batches = list(iter_raw_caption_batches(split, batch_size=4, n_images=2))
    assert [c for b in cap_batches for c in b["raw_captions"]] == split.captions[:10]
    assert np.concatenate([b["caption_index"].numpy() for b in cap_batches]).tolist() == list(range(10))
