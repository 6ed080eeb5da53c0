"""The CLIP-style matcher: tiny CLIPModel built offline, tokenizer, logit scale, save/reload, InfoNCE."""

import math
import os
import socket

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers / huggingface_hub read it

import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

import models
from models.clip import ClipMatcher, build_word_tokenizer, learn_bpe_merges

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 230), "yellow": (230, 220, 40)}
SHAPES = ("circle", "square")
SIDES = ("left", "right")
WORDS = sorted({"a", "on", "the", *COLOURS, *SHAPES, *SIDES})


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Offline mode, and any attempt to open a socket connection fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def render(colour: str, shape: str, side: str, size: int = 48) -> Image.Image:
    """A grey canvas with one coloured shape in the left or right half."""
    image = Image.new("RGB", (size, size), (128, 128, 128))
    x0 = 4 if side == "left" else size // 2 + 4
    box = (x0, size // 4, x0 + size // 2 - 8, size // 4 + size // 2 - 8)
    draw = ImageDraw.Draw(image)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLOURS[colour])
    return image


def fixed_batch(n: int = 8) -> dict:
    combos = [(c, s, d) for c in COLOURS for s in SHAPES for d in SIDES][:n]
    return {
        "raw_images": [render(*combo) for combo in combos],
        "raw_captions": [f"a {c} {s} on the {d}" for c, s, d in combos],
        "image_index": torch.arange(n),
    }


def tiny(**kwargs) -> ClipMatcher:
    torch.manual_seed(0)
    return ClipMatcher(preset="tiny", vocab_words=WORDS, **kwargs)


def test_registered_and_attributes():
    assert models._REGISTRY["clip"] is ClipMatcher
    model = tiny()
    assert (model.dual_encoder, model.input_kind, model.base_loss, model.optimizer) == (
        True, "pixels", "infonce", "adamw")
    n_params = sum(p.numel() for p in model.parameters())
    n_token_table = model.clip.text_model.embeddings.token_embedding.weight.numel()
    assert 30_000 < n_params - n_token_table < 45_000  # the spec's ~39k tiny towers


def test_encode_normalised_and_score_shape():
    model = tiny().eval()
    batch = model.prepare(fixed_batch(3))
    assert batch["pixel_values"].shape == (3, 3, 32, 32)  # resized to the config's image size
    assert torch.equal(batch["image_index"], torch.arange(3))  # other keys kept
    captions = model.prepare({"raw_captions": ["a red circle", "blue", "the green square on the left", "x", "a"]})
    with torch.no_grad():
        img, cap = model.encode_images(batch), model.encode_captions(captions)
    assert img.shape == (3, 32) and cap.shape == (5, 32)
    torch.testing.assert_close(img.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(cap.norm(dim=1), torch.ones(5))
    scores = model.score(img, cap)
    assert scores.shape == (3, 5)
    torch.testing.assert_close(scores, img @ cap.t())
    assert scores.abs().max() <= 1 + 1e-5  # cosine
    torch.testing.assert_close(model.infonce_logits(scores), scores / 0.07)


def test_learn_bpe_merges_by_hand():
    # pairs (a,b) (a,b</w>) (b,c</w>) all count 1: lexicographically smallest (a,b) first; then
    # [a,b</w>] [ab,c</w>] -> (a,b</w>) before (ab,c</w>).
    assert learn_bpe_merges(["ab", "abc"]) == [("a", "b"), ("a", "b</w>"), ("ab", "c</w>")]
    # (y,z</w>) occurs in both words, so it wins over the count-1 pairs (w,y) (x,y) that sort before it.
    assert learn_bpe_merges(["xyz", "wyz"])[0] == ("y", "z</w>")


def test_tokenizer_special_ids_inside_vocab_and_eos_in_every_row():
    model = tiny()
    tok, text_cfg = model.tokenizer, model.clip.config.text_config
    assert text_cfg.vocab_size == len(tok) < 1000
    assert (text_cfg.bos_token_id, text_cfg.eos_token_id, text_cfg.pad_token_id) == (
        tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    assert tok.eos_token_id == len(tok) - 1 and tok.bos_token_id == len(tok) - 2
    # every vocabulary word is one token; unseen text still tokenises (bytes), never to the end token
    assert [tok.convert_ids_to_tokens(i) for i in tok("yellow square")["input_ids"]] == [
        "<|startoftext|>", "yellow</w>", "square</w>", "<|endoftext|>"]
    assert tok.eos_token_id not in tok("zebra 42 !")["input_ids"][1:-1]
    long = " ".join(["red circle"] * 60)
    batch = model.prepare({"raw_captions": ["a red circle", long, "", "zebra 42 !"]})
    ids = batch["input_ids"]
    assert ids.shape[1] == text_cfg.max_position_embeddings  # truncated to the positions
    assert (ids == tok.eos_token_id).any(dim=1).all()
    assert ids.max() < text_cfg.vocab_size


def test_tokenizer_deterministic():
    a = build_word_tokenizer(WORDS, 32)
    b = build_word_tokenizer(list(reversed(WORDS)) * 2 + ["RED"], 32)
    assert a.get_vocab() == b.get_vocab()


def test_text_embedding_independent_of_padding():
    """Pooling at the first end token (pad = eos) with the attention mask: padding changes nothing."""
    model = tiny().eval()
    with torch.no_grad():
        alone = model.encode_captions({"raw_captions": ["a red circle"]})
        padded = model.encode_captions({"raw_captions": ["a red circle", "a blue square on the left " * 3]})
    torch.testing.assert_close(alone[0], padded[0], atol=1e-5, rtol=1e-5)


def test_logit_scale_init_and_clamp():
    model = tiny()
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07), abs=1e-6)
    opt = torch.optim.SGD(model.param_groups(lr=1.0))
    for sign, bound in ((-1.0, math.log(100.0)), (1.0, 0.0)):
        opt.zero_grad()
        (sign * 10.0 * model.logit_scale).backward()
        opt.step()
        assert not 0.0 <= model.logit_scale.item() <= math.log(100.0)  # the model itself does not clamp
        model.after_optimizer_step()
        assert model.logit_scale.item() == pytest.approx(bound)


def test_param_groups_lr_mult_and_decay():
    model = tiny(tower_lr_mult=0.1, weight_decay=0.2)
    groups = {g["name"]: g for g in model.param_groups(lr=1e-3)}
    ids = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # every parameter exactly once
    assert groups["towers_decay"]["lr"] == pytest.approx(1e-4) and groups["head_decay"]["lr"] == 1e-3
    head_no_decay = groups["head_no_decay"]
    assert [p is model.logit_scale for p in head_no_decay["params"]] == [True]
    assert head_no_decay["weight_decay"] == 0.0 and groups["towers_decay"]["weight_decay"] == 0.2
    assert all(p.ndim < 2 for p in groups["towers_no_decay"]["params"])


def test_save_pretrained_reload_identical(tmp_path):
    model = tiny().eval()
    with torch.no_grad():
        model.logit_scale.fill_(3.0)  # a trained value must survive the round trip
    model.save_pretrained(tmp_path / "clip")
    reloaded = ClipMatcher(pretrained_path=tmp_path / "clip", vocab_words=["ignored"]).eval()
    batch = fixed_batch(4)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.encode_images(batch), model.encode_images(batch), rtol=0, atol=0)
        torch.testing.assert_close(reloaded.encode_captions(batch), model.encode_captions(batch), rtol=0, atol=0)
    assert reloaded.logit_scale.item() == 3.0
    assert reloaded.tokenizer.get_vocab() == model.tokenizer.get_vocab()
    assert reloaded.image_size == 32


def test_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrained_path"):
        ClipMatcher(pretrained_path=tmp_path / "missing")
    tiny().save_pretrained(tmp_path / "clip")
    with pytest.raises(ValueError, match="image_size=64"):
        ClipMatcher(pretrained_path=tmp_path / "clip", image_size=64)
    with pytest.raises(ValueError, match="unknown preset"):
        ClipMatcher(preset="huge")


def test_symmetric_infonce_decreases():
    model = tiny().train()
    batch = model.prepare(fixed_batch(8))
    assert len(set(batch["raw_captions"])) == 8
    opt = torch.optim.AdamW(model.param_groups(lr=1e-3), **model.optimizer_kwargs)
    target = torch.arange(8)
    losses = []
    for _ in range(30):
        logits = model.infonce_logits(model(batch))
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.after_optimizer_step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(8), abs=0.5)  # near chance at init
    assert losses[-1] < 0.6 * losses[0]  # 2.15 -> ~1.05 in 30 steps
