"""VSE∞ matchers (models/vse_infty.py) and GPO (models/gpo.py)."""

from __future__ import annotations

import math

import pytest
import torch

import models
from models.gpo import GPO, sinusoidal_position_encoding
from models.vse_infty import VSEInfty, VSEInftyBert

TINY = dict(vocab_size=30, img_dim=16, embed_size=12, word_dim=8)
BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog", "runs", "on", "the", "grass", "##s", "cat"]
TINY_BERT = dict(vocab_size=len(BERT_VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=48, max_position_embeddings=32)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is several times faster on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def region_batch(lengths, dim=16, width=None, seed=0):
    """Region features [B, width, dim], zero beyond each item's length."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    width = width or int(lengths.max())
    images = torch.randn(len(lengths), width, dim, generator=g)
    images[torch.arange(width)[None, :] >= lengths[:, None]] = 0
    return {"images": images, "image_lengths": lengths}


def caption_batch(lengths, vocab=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    captions = torch.randint(4, vocab, (len(lengths), int(lengths.max())), generator=g)
    captions[torch.arange(captions.shape[1])[None, :] >= lengths[:, None]] = 0
    return {"captions": captions, "caption_lengths": lengths}


# ---------------------------------------------------------------- parameter counts (faithfulness)

def test_gpo_parameter_count_matches_reference():
    # Official GPO(32, 32) (woodfrog/vse_infty, lib/modules/aggr/gpo.py): BiGRU 32→32 plus Linear(32, 1, bias=False).
    # By hand: per direction 3·32·(32 + 32) weights + 2·3·32 biases = 6336; two directions 12672; + 32 = 12704.
    # Confirmed by constructing their GPO(32, 32) from the fetched snapshot (in /tmp) with this venv's torch.
    assert n_params(GPO(32, 32)) == 12704


def test_published_size_parameter_count_matches_reference():
    # Official BiGRU model (woodfrog/vse_infty, branch `bigru`, precomp_enc_type='basic', img_dim 2048,
    # embed 1024, word_dim 300, 1 layer, F30K vocab 8481): their EncoderImageAggr + EncoderText constructed
    # from the fetched snapshot (outside this repo) with this venv's torch count 14_392_300 parameters:
    #   image 3_688_352 = fc 2048·1024+1024 + MLP (2048·512+512, 512·1024+1024, BN(512) 1024, BN(1024) 2048)
    #                     + GPO 12704
    #   text 10_703_948 = embedding 8481·300 + BiGRU 2·(3·1024·(300+1024) + 2·3·1024) + GPO 12704.
    # Their MLP also builds a BatchNorm1d(1024) for the output layer that its forward never applies
    # (2·1024 = 2048 dead parameters); we do not build it, so ours is exactly 2048 fewer.
    official_total, official_dead_output_bn = 14_392_300, 2 * 1024
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = models.build("vse_infty", vocab_size=8481)
    assert n_params(model) == official_total - official_dead_output_bn
    assert n_params(model.img_enc) == 3_688_352 - official_dead_output_bn
    assert n_params(model.txt_enc) == 10_703_948


# ---------------------------------------------------------------- GPO

def test_sinusoidal_position_encoding_values():
    pe = sinusoidal_position_encoding(3, 4)
    assert pe.shape == (3, 4)
    torch.testing.assert_close(pe[0], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    torch.testing.assert_close(pe[1], torch.tensor([math.sin(1), math.cos(1), math.sin(1e-2), math.cos(1e-2)]))


def test_gpo_equal_scores_give_mean_over_valid_elements():
    gpo = GPO()
    torch.nn.init.zeros_(gpo.linear.weight)  # every score 0 → θ uniform over the N valid positions
    feats = torch.tensor([[[1.0, -2.0], [3.0, 4.0], [5.0, 0.0]],
                          [[2.0, 6.0], [99.0, 99.0], [-99.0, 7.0]]])  # item 2: only its first element is valid
    out = gpo(feats, torch.tensor([3, 1]))
    torch.testing.assert_close(out, torch.tensor([[3.0, 2.0 / 3.0], [2.0, 6.0]]))


def test_gpo_sorts_each_dimension_and_weights_by_rank():
    torch.manual_seed(0)
    gpo = GPO()
    feats = torch.tensor([[[1.0, 30.0], [3.0, 10.0], [2.0, 20.0], [-50.0, 50.0]]])  # last position is padding
    with torch.no_grad():
        theta = gpo.pool_weights(torch.tensor([3]))[0]
    assert theta.shape == (3,)
    torch.testing.assert_close(theta.sum(), torch.tensor(1.0))
    expected = torch.tensor([3 * theta[0] + 2 * theta[1] + 1 * theta[2],
                             30 * theta[0] + 20 * theta[1] + 10 * theta[2]])
    torch.testing.assert_close(gpo(feats, torch.tensor([3]))[0], expected)


def test_gpo_weights_depend_only_on_set_size():
    torch.manual_seed(0)
    gpo = GPO()
    w = gpo.pool_weights(torch.tensor([5, 2, 5, 3]))
    assert w.shape == (4, 5)
    torch.testing.assert_close(w.sum(1), torch.ones(4))
    assert torch.all(w[1, 2:] == 0) and torch.all(w[3, 3:] == 0)
    torch.testing.assert_close(w[0], w[2])
    torch.testing.assert_close(w[1, :2], gpo.pool_weights(torch.tensor([2]))[0])
    assert not torch.allclose(w[0, :3], w[3, :3])  # different N → different θ


def test_gpo_rejects_bad_lengths():
    gpo = GPO()
    with pytest.raises(ValueError, match="lengths must lie"):
        gpo(torch.randn(2, 3, 4), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="lengths must lie"):
        gpo(torch.randn(2, 3, 4), torch.tensor([4, 3]))


# ---------------------------------------------------------------- BiGRU matcher

def test_registry_and_attributes():
    model = models.build("vse_infty", **TINY)
    assert isinstance(model, VSEInfty)
    assert "vse_infty" in models.available() and "vse_infty_bert" in models.available()
    assert model.dual_encoder and model.input_kind == "regions"
    assert model.base_loss == "hinge" and model.optimizer == "adamw"
    assert model.augment == {"region_drop": 0.2, "token_aug": True, "token_aug_ends": True}
    assert model.mask_word  # the reference's learned <mask> row (F30K: 8,481 + 1 embeddings)


def test_shapes_and_l2_norm_with_variable_region_counts():
    torch.manual_seed(0)
    model = models.build("vse_infty", **TINY).eval()
    batch = {**region_batch([36, 7, 1, 20], width=36), **caption_batch([9, 4, 12, 2])}
    img, cap = model.encode_images(batch), model.encode_captions(batch)
    assert img.shape == (4, 12) and cap.shape == (4, 12)
    torch.testing.assert_close(img.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(cap.norm(dim=1), torch.ones(4))
    scores = model(batch)
    assert scores.shape == (4, 4)
    torch.testing.assert_close(scores, img @ cap.t())


def test_image_padding_never_changes_the_embedding():
    torch.manual_seed(0)
    model = models.build("vse_infty", **TINY).eval()
    batch = region_batch([7, 3, 5], width=36)
    full = model.encode_images(batch)
    batch["images"][1, 3:] = 1e3  # garbage beyond the valid regions
    torch.testing.assert_close(model.encode_images(batch), full)
    alone = model.encode_images({"images": batch["images"][1:2, :3], "image_lengths": torch.tensor([3])})
    torch.testing.assert_close(alone[0], full[1], atol=1e-6, rtol=1e-5)


def test_train_mode_ignores_padding_width_beyond_longest_item():
    # BatchNorm statistics see the batch trimmed to its longest item (as the reference collate pads)
    torch.manual_seed(0)
    model = models.build("vse_infty", **TINY).train()
    narrow = region_batch([7, 3, 5])
    wide = {"images": torch.nn.functional.pad(narrow["images"], (0, 0, 0, 29)),
            "image_lengths": narrow["image_lengths"]}
    torch.testing.assert_close(model.encode_images(wide), model.encode_images(narrow))


def test_caption_alone_equals_caption_padded_in_a_batch():
    torch.manual_seed(0)
    model = models.build("vse_infty", **TINY).eval()
    batch = caption_batch([11, 4, 7])
    batched = model.encode_captions(batch)
    for i, n in enumerate([11, 4, 7]):
        alone = model.encode_captions({"captions": batch["captions"][i:i + 1, :n], "caption_lengths": torch.tensor([n])})
        torch.testing.assert_close(alone[0], batched[i], atol=1e-6, rtol=1e-5)


def test_missing_lengths_key_is_a_clear_error():
    model = models.build("vse_infty", **TINY)
    with pytest.raises(KeyError, match="image_lengths"):
        model.encode_images({"images": torch.randn(2, 3, 16)})


def test_bigru_param_groups_single_group_at_base_lr():
    model = models.build("vse_infty", **TINY)
    groups = model.param_groups(5e-4)
    assert len(groups) == 1 and groups[0]["lr"] == 5e-4
    # weight decay comes from the schedule (None there: the published AdamW default 1e-2)
    assert "weight_decay" not in groups[0] and model.weight_decay == 1e-2
    from bench.spec import Schedule
    from bench.train import _make_optimizer

    opt = _make_optimizer(model, Schedule(lr=5e-4, weight_decay=None))
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["weight_decay"] == 1e-2
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.parameters()}


def bidirectional_hinge(scores: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """VSE++ triplet loss, sum over negatives: Σ_{j≠i} [m − s_ii + s_ij]_+ + [m − s_ii + s_ji]_+."""
    pos = scores.diag()
    cost_cap = (margin - pos[:, None] + scores).clamp(min=0)
    cost_img = (margin - pos[None, :] + scores).clamp(min=0)
    off_diag = ~torch.eye(len(scores), dtype=torch.bool)
    return (cost_cap[off_diag].sum() + cost_img[off_diag].sum()) / len(scores)


def test_adam_steps_reduce_hinge_loss():
    torch.manual_seed(0)
    model = models.build("vse_infty", **TINY).train()
    batch = {**region_batch([6, 4, 6, 2, 5, 6, 3, 6]), **caption_batch([7, 5, 3, 7, 6, 4, 7, 2])}
    opt = torch.optim.AdamW(model.param_groups(1e-2))
    losses = []
    for _ in range(30):
        loss = bidirectional_hinge(model(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# ---------------------------------------------------------------- BERT matcher

@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A local directory with a tiny BERT (random weights) and its tokenizer, written by save_pretrained."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny_bert")
    (path / "vocab.txt").write_text("\n".join(BERT_VOCAB) + "\n")
    BertTokenizerFast.from_pretrained(str(path), local_files_only=True).save_pretrained(str(path))
    torch.manual_seed(0)
    BertModel(BertConfig(**TINY_BERT)).save_pretrained(str(path))
    return path


def test_bert_variant_from_config_shapes_and_norm():
    torch.manual_seed(0)
    model = models.build("vse_infty_bert", bert_config=TINY_BERT, img_dim=16, embed_size=12).eval()
    assert isinstance(model, VSEInftyBert) and model.dual_encoder and model.input_kind == "regions"
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 12, 3, 0, 0]])
    cap = model.encode_captions({"input_ids": ids, "attention_mask": (ids != 0).long()})
    assert cap.shape == (2, 12)
    torch.testing.assert_close(cap.norm(dim=1), torch.ones(2))
    # padding invariance: the short caption alone gives the same embedding
    alone = model.encode_captions({"input_ids": ids[1:, :3], "attention_mask": torch.ones(1, 3, dtype=torch.long)})
    torch.testing.assert_close(alone[0], cap[1], atol=1e-5, rtol=1e-4)
    # without attention_mask, [PAD]=0 positions are masked (the reference's convention)
    torch.testing.assert_close(model.encode_captions({"input_ids": ids}), cap)


def test_bert_variant_needs_a_path_or_a_config(tmp_path):
    with pytest.raises(ValueError, match="bert_path"):
        models.build("vse_infty_bert")
    with pytest.raises(FileNotFoundError, match="bert-base-uncased"):
        models.build("vse_infty_bert", bert_path=str(tmp_path / "missing"))


def test_bert_variant_loads_local_dir_and_tokenises_raw_captions(bert_dir):
    from transformers import BertModel

    torch.manual_seed(0)
    model = models.build("vse_infty_bert", bert_path=str(bert_dir), img_dim=16, embed_size=12).eval()
    saved = BertModel.from_pretrained(str(bert_dir), local_files_only=True)
    for name, p in model.txt_enc.bert.named_parameters():  # round trip: the saved weights, not fresh ones
        torch.testing.assert_close(p, saved.state_dict()[name])

    batch = {**region_batch([5, 3]), "raw_captions": ["A dog runs on the grass", "cats"]}
    prepared = model.prepare(batch)
    assert prepared["input_ids"].tolist() == [[2, 5, 6, 7, 8, 9, 10, 3], [2, 12, 11, 3, 0, 0, 0, 0]]
    assert prepared["attention_mask"].sum(1).tolist() == [8, 4]
    assert prepared["images"] is batch["images"]
    scores = model(batch)
    assert scores.shape == (2, 2)
    cap = model.encode_captions({"input_ids": prepared["input_ids"], "attention_mask": prepared["attention_mask"]})
    torch.testing.assert_close(scores, model.encode_images(batch) @ cap.t())


def test_bert_param_groups_scale_bert_lr(bert_dir):
    model = models.build("vse_infty_bert", bert_path=str(bert_dir), img_dim=16, embed_size=12)
    rest, bert = model.param_groups(5e-4)
    assert rest["lr"] == 5e-4 and bert["lr"] == pytest.approx(5e-5)
    assert "weight_decay" not in rest and "weight_decay" not in bert and model.weight_decay == 1e-4
    assert {id(p) for p in bert["params"]} == {id(p) for p in model.txt_enc.bert.parameters()}
    assert {id(p) for p in rest["params"] + bert["params"]} == {id(p) for p in model.parameters()}
    assert len(rest["params"]) + len(bert["params"]) == len(list(model.parameters()))


def test_bert_word_augmentation_frequencies_and_word_grouping():
    torch.manual_seed(0)
    n_words = 2000
    ids = [5 + i for i in range(2 * n_words)]  # every word has two word-pieces
    word_ids = [i // 2 for i in range(2 * n_words)]
    assert VSEInftyBert.augment_words(ids, word_ids, vocab_size=10_000, mask_id=4, p=0.0) == ids
    out = VSEInftyBert.augment_words(ids, word_ids, vocab_size=10_000, mask_id=4, p=1.0)
    masked, kept = out.count(4), len(out)
    assert masked % 2 == 0 and kept % 2 == 0  # a word's pieces share one fate
    assert abs(masked / 2 / n_words - 0.5) < 0.05  # 50% masked
    assert abs((kept - masked) / 2 / n_words - 0.1) < 0.03  # 10% random ids
    # 40% deleted: the rest
    out = VSEInftyBert.augment_words(ids, word_ids, vocab_size=10_000, mask_id=4, p=0.2)
    assert abs(1 - len(out) / len(ids) - 0.2 * 0.4) < 0.03 and abs(out.count(4) / len(ids) - 0.1) < 0.03


def test_bert_prepare_augments_only_in_training(bert_dir):
    model = models.build("vse_infty_bert", bert_path=str(bert_dir), img_dim=16, embed_size=12)
    captions = ["a dog runs on the grass " * 4] * 8
    model.eval()
    clean = model.prepare({"raw_captions": captions})["input_ids"]
    assert (clean == clean[0]).all() and clean.shape[1] == 26
    model.train()
    torch.manual_seed(0)
    noisy = model.prepare({"raw_captions": captions})
    lengths = noisy["attention_mask"].sum(1)
    assert (noisy["input_ids"][:, 0] == 2).all()
    assert (noisy["input_ids"][torch.arange(8), lengths - 1] == 3).all()  # [SEP] closes every caption
    assert (noisy["input_ids"] == 4).any() and not torch.equal(noisy["input_ids"], clean)
