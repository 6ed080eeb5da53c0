"""Score matrices and split evaluation through the Matcher interface, with two small real matchers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from bench.evaluate import encode_all, evaluate_split, score_matrix
from bench.metrics import coco_5fold, retrieval_metrics
from models.base import Matcher, l2norm, slice_encoding

REGION_DIM, VOCAB, EMBED = 6, 30, 4


def masked_mean(features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean of the first lengths[i] rows of features[i] (padding beyond them is ignored)."""
    mask = torch.arange(features.shape[1])[None, :] < lengths[:, None]
    return (features * mask[..., None]).sum(1) / lengths[:, None].float()


class MeanLinearDual(Matcher):
    """Dual encoder: linear layer over mean region features / mean word embeddings, l2-normalised."""

    dual_encoder = True

    def __init__(self):
        super().__init__()
        self.image_proj = nn.Linear(REGION_DIM, EMBED)
        self.word_embed = nn.Embedding(VOCAB, EMBED)
        self.dropout = nn.Dropout(0.5)  # eval mode must switch it off

    def encode_images(self, batch):
        return l2norm(self.dropout(self.image_proj(masked_mean(batch["images"], batch["image_lengths"]))))

    def encode_captions(self, batch):
        return l2norm(masked_mean(self.word_embed(batch["captions"]), batch["caption_lengths"]))


class MeanBilinearPairwise(Matcher):
    """Pairwise matcher: variable-length tuple encodings, score = tanh(mean_img^T W mean_cap) per pair."""

    dual_encoder = False

    def __init__(self):
        super().__init__()
        self.word_embed = nn.Embedding(VOCAB, EMBED)
        self.bilinear = nn.Parameter(torch.randn(REGION_DIM, EMBED))
        self.score_calls = 0

    def encode_images(self, batch):
        return batch["images"], batch["image_lengths"]  # [n, R, D] + lengths: padded by cat_encodings

    def encode_captions(self, batch):
        return self.word_embed(batch["captions"]), batch["caption_lengths"]

    def score(self, img, cap):
        self.score_calls += 1
        return torch.tanh(masked_mean(*img) @ self.bilinear @ masked_mean(*cap).t())


def make_split(n_images: int, seed: int = 0, cpi: int = 5):
    """A tiny split: region features with varying region counts and captions with varying lengths."""
    g = torch.Generator().manual_seed(seed)
    image_lengths = torch.randint(1, 5, (n_images,), generator=g)
    images = torch.randn(n_images, 4, REGION_DIM, generator=g)
    caption_lengths = torch.randint(2, 7, (n_images * cpi,), generator=g)
    captions = torch.randint(1, VOCAB, (n_images * cpi, 6), generator=g)
    return images, image_lengths, captions, caption_lengths


def image_batches(split, batch_size: int, order=None):
    """Image-only batches, each trimmed to its longest image (so widths differ between batches)."""
    images, lengths, _, _ = split
    order = torch.arange(len(images)) if order is None else order
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = int(lengths[idx].max())
        yield {"images": images[idx, :width], "image_lengths": lengths[idx], "image_index": idx}


def caption_batches(split, batch_size: int, order=None):
    _, _, captions, lengths = split
    order = torch.arange(len(captions)) if order is None else order
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = int(lengths[idx].max())
        yield {"captions": captions[idx, :width], "caption_lengths": lengths[idx], "caption_index": idx}


def per_pair_scores(model: Matcher, img_enc, cap_enc) -> torch.Tensor:
    """S[i, c] computed one pair at a time, the slow obvious way."""
    n_img = (img_enc[0] if isinstance(img_enc, tuple) else img_enc).shape[0]
    n_cap = (cap_enc[0] if isinstance(cap_enc, tuple) else cap_enc).shape[0]
    with torch.no_grad():
        return torch.tensor(
            [
                [
                    float(
                        model.score(
                            slice_encoding(img_enc, slice(i, i + 1)), slice_encoding(cap_enc, slice(c, c + 1))
                        )
                    )
                    for c in range(n_cap)
                ]
                for i in range(n_img)
            ]
        )


@pytest.fixture(params=[MeanLinearDual, MeanBilinearPairwise])
def model(request):
    torch.manual_seed(0)
    return request.param()


def test_encode_all_encodes_each_item_once_in_index_order(model):
    split = make_split(7)
    img, cap = encode_all(model, image_batches(split, 3), caption_batches(split, 8))
    shuffled_img, shuffled_cap = encode_all(
        model,
        image_batches(split, 2, order=torch.randperm(7, generator=torch.Generator().manual_seed(1))),
        caption_batches(split, 9, order=torch.randperm(35, generator=torch.Generator().manual_seed(2))),
    )
    S, S_shuffled = score_matrix(model, img, cap), score_matrix(model, shuffled_img, shuffled_cap)
    torch.testing.assert_close(S_shuffled, S)
    assert S.shape == (7, 35)
    if isinstance(img, tuple):  # variable-width batches were zero-padded to the widest
        assert img[0].shape == (7, int(split[1].max()), REGION_DIM)


def test_encode_all_sets_eval_mode_and_restores_it(model):
    split = make_split(5)
    model.train()
    first = encode_all(model, image_batches(split, 2), caption_batches(split, 10))
    second = encode_all(model, image_batches(split, 5), caption_batches(split, 25))
    assert model.training  # restored
    torch.testing.assert_close(score_matrix(model, *first), score_matrix(model, *second))  # dropout off


@pytest.mark.parametrize(
    "image_tile, caption_tile", [(None, None), (3, 8), (1, 1), (7, 35), (100, 100), (2, None)]
)
def test_score_matrix_equals_per_pair_scores(model, image_tile, caption_tile):
    split = make_split(7, seed=3)
    img, cap = encode_all(model, image_batches(split, 4), caption_batches(split, 16))
    S = score_matrix(model, img, cap, image_tile=image_tile, caption_tile=caption_tile)
    assert S.dtype == torch.float32 and S.device.type == "cpu" and S.shape == (7, 35)
    torch.testing.assert_close(S, per_pair_scores(model, img, cap), rtol=1e-5, atol=1e-6)


def test_pairwise_scoring_is_one_call_per_tile():
    torch.manual_seed(0)
    model = MeanBilinearPairwise()
    split = make_split(7)
    img, cap = encode_all(model, image_batches(split, 7), caption_batches(split, 35))
    model.score_calls = 0
    score_matrix(model, img, cap, image_tile=3, caption_tile=8)
    assert model.score_calls == math.ceil(7 / 3) * math.ceil(35 / 8)


def test_score_matrix_rejects_wrong_tile_shape():
    class Broken(MeanLinearDual):
        def score(self, img, cap):
            return img @ cap.t()[:, :1]

    model = Broken()
    split = make_split(3)
    img, cap = encode_all(model, image_batches(split, 3), caption_batches(split, 15))
    with pytest.raises(ValueError, match="must return"):
        score_matrix(model, img, cap)


def test_encode_all_rejects_missing_or_duplicate_items():
    model = MeanLinearDual()
    split = make_split(4)
    duplicated = torch.tensor([0, 1, 1, 3])
    with pytest.raises(ValueError, match="each once"):
        encode_all(model, image_batches(split, 2, order=duplicated), caption_batches(split, 20))
    with pytest.raises(ValueError, match="no batches"):
        encode_all(model, [], caption_batches(split, 20))


@pytest.mark.parametrize("protocols", [["f30k_1k"], ["coco_1k", "coco_5k"]])
def test_evaluate_split_equals_metrics_of_direct_matrix(model, protocols):
    split = make_split(10, seed=5)
    images, image_lengths, captions, caption_lengths = split
    with torch.no_grad():
        model.eval()
        direct = model.score(
            model.encode_images({"images": images, "image_lengths": image_lengths}),
            model.encode_captions({"captions": captions, "caption_lengths": caption_lengths}),
        )
    results = evaluate_split(
        model,
        image_batches(split, 4),
        caption_batches(split, 12),
        protocols,
        return_ranks=True,
        caption_tile=7,
    )
    assert list(results) == protocols
    for name, (metrics, i2t, t2i) in results.items():
        if name == "coco_1k":
            expected, exp_i2t, exp_t2i = coco_5fold(direct, return_ranks=True)
            for fold, expected_fold in zip(metrics.pop("folds"), expected.pop("folds"), strict=True):
                assert fold == pytest.approx(expected_fold)
        else:
            expected, exp_i2t, exp_t2i = retrieval_metrics(direct, return_ranks=True)
        assert metrics == pytest.approx(expected)
        np.testing.assert_array_equal(i2t, exp_i2t)
        np.testing.assert_array_equal(t2i, exp_t2i)


def test_evaluate_split_rejects_protocols_of_different_splits():
    split = make_split(5)
    with pytest.raises(ValueError, match="different splits"):
        evaluate_split(
            MeanLinearDual(), image_batches(split, 5), caption_batches(split, 25), ["f30k_1k", "coco_5k"]
        )
    with pytest.raises(KeyError, match="valid protocols"):
        evaluate_split(MeanLinearDual(), image_batches(split, 5), caption_batches(split, 25), "coco1k")
