"""SGR, SAF, the SGRAF ensemble and DBL's cross-attention matcher (models/sgraf.py, models/xattn.py)."""

from __future__ import annotations

import copy

import pytest
import torch

import models
from bench.benchmarks.sgraf_loop import loop_scores
from models.base import cat_encodings, slice_encoding
from models.sgraf import SGRAF, SGRAFEnsemble, length_mask
from models.xattn import CrossAttentionMatcher

VOCAB, IMG_DIM, REGIONS = 40, 12, 5
TINY = dict(vocab_size=VOCAB, img_dim=IMG_DIM, embed_size=16, word_dim=8, sim_dim=8)
NAMES = ["sgr", "saf", "xattn"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and do not fight over shared cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(name: str, **kw):
    extra = {} if name == "xattn" else {"num_regions": REGIONS}
    return models.build(name, **TINY, **extra, **kw)


def make_batch(n_img: int, n_cap: int, max_len: int = 7, seed: int = 0, region_lengths=None) -> dict:
    g = torch.Generator().manual_seed(seed)
    cap_len = torch.randint(2, max_len + 1, (n_cap,), generator=g)
    cap_len[0] = max_len
    ids = torch.randint(4, VOCAB, (n_cap, max_len), generator=g)
    ids = ids * length_mask(cap_len, max_len)
    img_len = torch.full((n_img,), REGIONS) if region_lengths is None else torch.as_tensor(region_lengths)
    images = torch.randn(n_img, REGIONS, IMG_DIM, generator=g) * length_mask(img_len, REGIONS)[..., None]
    return dict(images=images, image_lengths=img_len, captions=ids, caption_lengths=cap_len)


@torch.no_grad()
def eval_scores(model, batch):
    model.eval()
    return model.score(model.encode_images(batch), model.encode_captions(batch))


# --------------------------------------------------------------------------- registry / published size


def test_registry_and_attributes():
    assert {"sgr", "saf", "sgraf", "xattn"} <= set(models.available())
    for name in ["sgr", "saf", "sgraf", "xattn"]:
        m = tiny(name) if name != "sgraf" else models.build("sgraf", **TINY, num_regions=REGIONS)
        # DBL's matcher augments captions only where its recipe turns caption_aug on (OAS); SGRAF never
        augment = {"token_aug": False, "token_aug_ends": False} if name == "xattn" else {}
        assert (m.dual_encoder, m.input_kind, m.base_loss, m.optimizer, m.augment) == (
            False, "regions", "hinge", "adam", augment)
    assert tiny("sgr").module == "SGR" and tiny("saf").module == "SAF"
    assert isinstance(tiny("xattn"), CrossAttentionMatcher)
    # the registered sgr/saf constructors expose SGRAF's keyword arguments (for override checking)
    import inspect

    from models.sgraf import build_sgr
    assert {"vocab_size", "sim_dim", "sgr_step"} <= set(inspect.signature(build_sgr).parameters)
    assert "module" not in inspect.signature(build_sgr).parameters
    with pytest.raises(TypeError):
        models.build("sgr", not_an_argument=1)


def test_parameter_counts_match_official_code():
    # Derived by running the official model-construction code outside this repository with this
    # venv's torch: SGRAF python3.6 branch model.py, SGRAF(opt) with opts.py defaults (img_dim 2048,
    # embed 1024, word_dim 300, sim_dim 256, 1-layer BiGRU, sgr_step 3) and vocab_size 8481
    # (len of vocab/f30k_precomp_vocab.json), summing img_enc + txt_enc + sim_enc parameters;
    # DBL (OSS/MSS/OAS model.py are identical) SGRAF(opt) with its opts.py defaults.
    # Breakdown: image fc 2,098,176; text 10,691,244; SGR similarity 5,319,755; SAF 4,727,886; DBL 262,657.
    counts = {"sgr": 18_109_175, "saf": 17_517_306, "xattn": 13_052_077}
    for name, expected in counts.items():
        model = models.build(name, vocab_size=8481)
        assert sum(p.numel() for p in model.parameters()) == expected, name
    assert sum(p.numel() for p in models.build("sgraf").parameters()) == counts["sgr"] + counts["saf"]


def test_bad_input_errors():
    with pytest.raises(ValueError, match="module"):
        SGRAF(module="AVE", **TINY)
    batch = make_batch(2, 2)
    batch["caption_lengths"] = torch.tensor([0, 3])
    with pytest.raises(ValueError, match="caption_lengths"):
        tiny("sgr").encode_captions(batch)
    with pytest.raises(ValueError, match="num_regions"):
        tiny("saf").encode_images(dict(images=torch.randn(2, REGIONS + 1, IMG_DIM)))


# --------------------------------------------------------------------------- shapes, ranges, padding


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_score_range(name):
    torch.manual_seed(0)
    model = tiny(name)
    batch = make_batch(4, 4)
    model.train()
    scores = model(batch)
    assert scores.shape == (4, 4)
    img, cap = model.encode_images(batch), model.encode_captions(batch)
    assert img[0].shape == (4, REGIONS, 16) and cap[0].shape == (4, 7, 16)
    # local features are unit vectors, padded words exactly zero
    mask = length_mask(batch["caption_lengths"], 7)
    torch.testing.assert_close(cap[0].norm(dim=-1), mask.float(), atol=1e-5, rtol=0)
    s = eval_scores(model, make_batch(3, 9, seed=1))
    low, high = (0.0, 1.0) if name != "xattn" else (-1.0, 1.0)
    assert s.shape == (3, 9) and bool(((s > low) & (s < high)).all())
    assert s.std() > 0


@pytest.mark.parametrize("name", NAMES)
def test_padding_never_changes_scores(name):
    torch.manual_seed(0)
    model = tiny(name).eval()
    batch = make_batch(3, 5, region_lengths=[5, 3, 4])
    ref = eval_scores(model, batch)
    # extra padded word columns filled with garbage ids, and garbage in padded region slots
    padded = dict(batch)
    padded["captions"] = torch.cat([batch["captions"], torch.randint(4, VOCAB, (5, 4))], dim=1)
    pad_regions = ~length_mask(batch["image_lengths"], REGIONS)
    padded["images"] = batch["images"] + 7.0 * pad_regions[..., None] * torch.randn_like(batch["images"])
    torch.testing.assert_close(eval_scores(model, padded), ref)
    # an image with 3 valid regions given alone, without padded slots, scores the same
    alone = dict(images=batch["images"][1:2, :3], image_lengths=torch.tensor([3]))
    with torch.no_grad():
        s_alone = model.score(model.encode_images(alone), model.encode_captions(batch))
    torch.testing.assert_close(s_alone, ref[1:2])
    # captions encoded in two batches of different widths and concatenated (zero-padded)
    with torch.no_grad():
        img = model.encode_images(batch)
        short = {k: v[1:] for k, v in batch.items() if k.startswith("caption")}
        short["captions"] = short["captions"][:, : int(short["caption_lengths"].max())]
        first = {k: v[:1] for k, v in batch.items() if k.startswith("caption")}
        cap = cat_encodings([model.encode_captions(first), model.encode_captions(short)])
        torch.testing.assert_close(model.score(img, cap), ref)


# --------------------------------------------------------------------------- batched == loop


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("tile_elems", [1, 300, 2**20])
def test_batched_scores_equal_per_caption_loop(name, tile_elems):
    torch.manual_seed(1)
    model = tiny(name, tile_elems=tile_elems).eval()
    if name != "xattn":  # non-trivial BatchNorm running statistics
        for bn in [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]:
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    batch = make_batch(7, 13, max_len=9, seed=2, region_lengths=[5, 2, 4, 5, 3, 5, 1])
    with torch.no_grad():
        img, cap = model.encode_images(batch), model.encode_captions(batch)
        batched = model.score(img, cap)
        loop = loop_scores(model, img, cap)
        # sub-blocks (the evaluator's tiles) agree too
        block = model.score(slice_encoding(img, slice(2, 7)), slice_encoding(cap, slice(3, 11)))
    torch.testing.assert_close(batched, loop, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(block, batched[2:7, 3:11], atol=1e-6, rtol=1e-5)


def test_saf_training_batchnorm_matches_per_caption_calls():
    """In training the reference runs SAF's BatchNorm once per caption over (images × its nodes)."""
    torch.manual_seed(3)
    model = tiny("saf", word_dropout=0.0, pool_dropout=0.0).train()
    batch = make_batch(4, 6, seed=4)
    bn_ref = copy.deepcopy(model.saf.bn)
    img, cap = model.encode_images(batch), model.encode_captions(batch)
    nodes, node_mask = model.similarity_vectors(img, cap)
    out = model.saf(nodes, node_mask)
    for c, length in enumerate(batch["caption_lengths"].tolist()):
        nodes_c = nodes[:, c, : length + 1]
        logits = bn_ref(model.saf.attn(nodes_c).transpose(1, 2))  # reference: BatchNorm1d(1), train mode
        weights = torch.sigmoid(logits)
        weights = weights / (weights.abs().sum(-1, keepdim=True) + 1e-8)
        ref = torch.matmul(weights, nodes_c).squeeze(1)
        ref = ref / (ref.norm(dim=-1, keepdim=True) + 1e-8)
        torch.testing.assert_close(out[:, c], ref)
    torch.testing.assert_close(model.saf.bn.running_mean, bn_ref.running_mean)
    torch.testing.assert_close(model.saf.bn.running_var, bn_ref.running_var)
    assert int(model.saf.bn.num_batches_tracked) == int(bn_ref.num_batches_tracked) == 6


# --------------------------------------------------------------------------- ensemble


def test_ensemble_is_the_average_of_sgr_and_saf():
    torch.manual_seed(5)
    sgr, saf = tiny("sgr"), tiny("saf")
    ens = SGRAFEnsemble(sgr, saf).eval()
    batch = make_batch(3, 7, seed=6)
    expected = (eval_scores(sgr, batch) + eval_scores(saf, batch)) / 2
    with torch.no_grad():
        img = cat_encodings([ens.encode_images(make_batch(3, 7, seed=6))])
        got = ens.score(img, ens.encode_captions(batch))
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, eval_scores(sgr, batch))
    assert ens.sgr is sgr and ens.saf is saf


# --------------------------------------------------------------------------- training


def bidirectional_hinge(scores: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """Σ over negatives of [m + s(i,c') − s(i,i)]₊ + [m + s(i',c) − s(c,c)]₊ (VSE++ sum form)."""
    diag = scores.diag()
    off = ~torch.eye(len(scores), dtype=torch.bool)
    cost_cap = (margin + scores - diag[:, None]).clamp(min=0)[off]
    cost_img = (margin + scores - diag[None, :]).clamp(min=0)[off]
    return cost_cap.sum() + cost_img.sum()


@pytest.mark.parametrize("name", NAMES)
def test_adam_steps_reduce_hinge_loss(name):
    torch.manual_seed(7)
    model = tiny(name).train()
    batch = make_batch(8, 8, seed=8)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(30):
        loss = bidirectional_hinge(model(batch))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
