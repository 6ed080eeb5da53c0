"""SGRAF: Similarity Graph Reasoning and Attention Filtration (Diao et al., AAAI 2021).

Local encoders (shared with ``models.xattn``):
    regions  v_r = l2norm(W_v x_r)                           [B, R, 1024]
    words    w_l = l2norm(mean_dir BiGRU(dropout(E y)))_l    [B, L, 1024]

Similarity network, for every (image i, caption c) pair (``SGRAF.score``, batched over i × c):
    global   v̄ = SA_img(v), t̄ = SA_txt(w)                   self-attention pooling, L2 norm
    context  a_lr = softmax_r(λ · l2norm_l(LeakyReLU_0.1(v_r·w_l))),  c_l = l2norm(Σ_r a_lr v_r)
    nodes    s_g = l2norm(W_g (v̄ − t̄)²),  s_l = l2norm(W_l (c_l − w_l)²)
    SGR      E = softmax_row((W_q S)(W_k S)ᵀ),  S ← ReLU(W_r(E S))  (×3), output the global node
    SAF      β = l1norm(σ(BN(w_a·S))),  output l2norm(Σ_n β_n s_n)
    score    σ(w_e · s)

The official implementation scores each caption against a block of images in a Python loop;
here all pairs of a tile are computed at once (``bench/benchmarks/sgraf_loop.py`` is the loop,
and the tests check the two agree). Padded regions and words are masked, so padding never
changes a score. Image/text global vectors are computed in ``encode_*``: the reference computes
them once per similarity call from the same inputs, so the result (and BatchNorm's batch
statistics in training) is the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models import preset, register
from models.base import Encoding, Matcher, l2norm

F30K_VOCAB_SIZE = 8481  # len(vocab/f30k_precomp_vocab.json) of the SCAN/SGRAF release


def xavier_linear(in_dim: int, out_dim: int) -> nn.Linear:
    """nn.Linear with Xavier-uniform weight and zero bias (the init of every SGRAF/DBL linear layer)."""
    layer = nn.Linear(in_dim, out_dim)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def length_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """Bool mask [n, width], True at positions < lengths."""
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]


def l1norm(x: torch.Tensor, dim: int, eps: float = 1e-8) -> torch.Tensor:
    """x / (Σ|x| + eps) along ``dim``."""
    return x / (x.abs().sum(dim=dim, keepdim=True) + eps)


def _check_lengths(lengths: torch.Tensor, width: int, name: str) -> torch.Tensor:
    lengths = torch.as_tensor(lengths).long()
    if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > width):
        raise ValueError(
            f"models/sgraf.py: batch[{name!r}] must lie in [1, {width}] (the padded width), "
            f"got min {int(lengths.min())}, max {int(lengths.max())}"
        )
    return lengths


# --------------------------------------------------------------------------- local encoders


class RegionEncoder(nn.Module):
    """Per-region fc img_dim→embed_size (Xavier), L2 norm per region; padded regions are zero."""

    def __init__(self, img_dim: int = 2048, embed_size: int = 1024):
        super().__init__()
        self.fc = xavier_linear(img_dim, embed_size)

    def forward(self, regions: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        feats = l2norm(self.fc(regions), dim=-1)
        if lengths is not None:
            feats = feats * length_mask(lengths.to(feats.device), feats.shape[1])[..., None]
        return feats


class WordEncoder(nn.Module):
    """Word embedding (uniform ±0.1) → dropout 0.4 → BiGRU (directions averaged) → L2 norm per word.

    Captions are packed, so padded positions never enter the GRU; they come out as zeros.
    """

    def __init__(self, vocab_size: int, word_dim: int = 300, embed_size: int = 1024,
                 dropout: float = 0.4, num_layers: int = 1):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        self.dropout = nn.Dropout(dropout)
        self.rnn = nn.GRU(word_dim, embed_size, num_layers, batch_first=True, bidirectional=True)

    def forward(self, captions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.embed(captions))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=captions.shape[1])
        half = out.shape[-1] // 2
        return l2norm((out[..., :half] + out[..., half:]) / 2, dim=-1)


def attended_difference(regions: torch.Tensor, region_mask: torch.Tensor, words: torch.Tensor,
                        word_mask: torch.Tensor, smooth: float) -> torch.Tensor:
    """SCAN text-to-image attention for all pairs, then (c_l − w_l)²: [nI, nC, L, d].

    a[i,c,l,r] = softmax_r(λ · l2norm_l(LeakyReLU_0.1(v_ir · w_cl))), c_l = l2norm(Σ_r a v_ir).
    The L2 norm runs over the caption's valid words only, the softmax over valid regions only.
    The region·word products of a whole tile are one matmul; the [nI, nC, L, d] tensors get as few
    elementwise passes as possible (they dominate memory traffic).
    """
    n_img, n_reg, dim = regions.shape
    n_cap, n_word, _ = words.shape
    logits = (regions.reshape(-1, dim) @ words.reshape(-1, dim).t()).view(n_img, n_reg, n_cap, n_word)
    logits = F.leaky_relu(logits.permute(0, 2, 3, 1), 0.1)  # [nI, nC, L, R]
    logits = logits * word_mask[None, :, :, None]
    logits = l2norm(logits, dim=2) * smooth
    logits = logits.masked_fill(~region_mask[:, None, None, :], float("-inf"))
    attn = torch.softmax(logits, dim=-1)
    context = torch.bmm(attn.reshape(n_img, n_cap * n_word, n_reg), regions).view(n_img, n_cap, n_word, dim)
    inv_norm = 1.0 / (torch.linalg.vector_norm(context, dim=-1, keepdim=True) + 1e-8)
    diff = torch.addcmul(-words[None], context, inv_norm)  # l2norm(context) − word
    return diff.square() if torch.is_grad_enabled() else diff.square_()


# --------------------------------------------------------------------------- SGRAF similarity parts


class ImageAttentionPool(nn.Module):
    """Global image vector: softmax_r(w_c·(tanh(BN_r(W_l v_r)) ⊙ tanh(BN(W_g v̄)))) weights, Σ_r, L2 norm.

    BatchNorm of the local branch has one channel per region index (as published); the mean v̄ and
    the softmax use valid regions only. (Training-mode BN statistics include padded region slots;
    the published features always have 36 valid regions.)
    """

    def __init__(self, embed_size: int, num_regions: int, dropout: float = 0.4):
        super().__init__()
        self.local_proj = nn.Sequential(xavier_linear(embed_size, embed_size), nn.BatchNorm1d(num_regions),
                                        nn.Tanh(), nn.Dropout(dropout))
        self.global_proj = nn.Sequential(xavier_linear(embed_size, embed_size), nn.BatchNorm1d(embed_size),
                                         nn.Tanh(), nn.Dropout(dropout))
        self.weight_proj = xavier_linear(embed_size, 1)

    def forward(self, regions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mean = (regions * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        common = self.local_proj(regions) * self.global_proj(mean)[:, None, :]
        logits = self.weight_proj(common).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(logits, dim=1)
        return l2norm((weights[..., None] * regions).sum(1), dim=-1)


class TextAttentionPool(nn.Module):
    """Global text vector: as :class:`ImageAttentionPool` without BatchNorm, over valid words."""

    def __init__(self, embed_size: int, dropout: float = 0.4):
        super().__init__()
        self.local_proj = nn.Sequential(xavier_linear(embed_size, embed_size), nn.Tanh(), nn.Dropout(dropout))
        self.global_proj = nn.Sequential(xavier_linear(embed_size, embed_size), nn.Tanh(), nn.Dropout(dropout))
        self.weight_proj = xavier_linear(embed_size, 1)

    def forward(self, words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mean = (words * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        common = self.local_proj(words) * self.global_proj(mean)[:, None, :]
        logits = self.weight_proj(common).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(logits, dim=1)
        return l2norm((weights[..., None] * words).sum(1), dim=-1)


class GraphReasoning(nn.Module):
    """One SGR step on nodes S [..., N, s]: E = softmax_row((W_q S)(W_k S)ᵀ), S' = ReLU(W_r(E S)).

    Edge logits are computed as (s_i M + u)·s_j with M = W_qᵀW_k and u = W_kᵀb_q: expanding
    (W_q s_i + b_q)·(W_k s_j + b_k) leaves only terms that are constant along the softmax row j,
    so this is the same function (and gradient) with one projection of the nodes instead of two.
    Padded nodes are masked as keys. With ``global_only`` only row 0 (the global node, the output
    of the last step) is computed; it does not depend on the other rows.
    """

    def __init__(self, sim_dim: int):
        super().__init__()
        self.query = xavier_linear(sim_dim, sim_dim)
        self.key = xavier_linear(sim_dim, sim_dim)
        self.update = xavier_linear(sim_dim, sim_dim)

    def forward(self, nodes: torch.Tensor, node_mask: torch.Tensor, global_only: bool = False) -> torch.Tensor:
        bilinear = self.query.weight.t() @ self.key.weight  # M [s, s]
        key_bias = self.key.weight.t() @ self.query.bias  # u [s]
        rows = nodes[..., :1, :] if global_only else nodes
        edges = torch.addmm(key_bias, rows.reshape(-1, rows.shape[-1]), bilinear).view(rows.shape)
        edges = edges @ nodes.transpose(-1, -2)
        edges = torch.softmax(edges.masked_fill(~node_mask[..., None, :], float("-inf")), dim=-1)
        return F.relu(self.update(edges @ nodes))


class AttentionFiltration(nn.Module):
    """SAF: β = l1norm_n(σ(BN(w_a·s_n))) over valid nodes, output l2norm(Σ_n β_n s_n).

    BN has one channel (as published). In training the reference normalises each caption's call
    over (images × that caption's nodes) and updates the running stats once per caption; this is
    reproduced exactly for a batch of captions (per-caption statistics, composed EMA updates).
    """

    def __init__(self, sim_dim: int):
        super().__init__()
        self.attn = xavier_linear(sim_dim, 1)
        self.bn = nn.BatchNorm1d(1)

    def _batch_norm(self, logits: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        if not self.training and bn.running_mean is not None:
            mean, var = bn.running_mean, bn.running_var
        else:  # statistics of each caption c over its (images × valid nodes)
            m = node_mask[None].to(logits.dtype)  # [1, nC, N]
            count = m.sum(dim=(0, 2)) * logits.shape[0]  # [nC]
            mean = (logits * m).sum(dim=(0, 2)) / count
            var = (((logits - mean[None, :, None]) ** 2) * m).sum(dim=(0, 2)) / count
            if bn.track_running_stats and bn.running_mean is not None:
                self._update_running_stats(mean.detach(), (var * count / (count - 1).clamp(min=1)).detach())
            mean, var = mean[None, :, None], var[None, :, None]
        return (logits - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias

    @torch.no_grad()
    def _update_running_stats(self, means: torch.Tensor, unbiased_vars: torch.Tensor) -> None:
        """Apply x ← (1−m)x + m·stat once per caption, in caption order, in closed form."""
        bn, m = self.bn, self.bn.momentum
        if m is None:
            raise ValueError("models/sgraf.py: AttentionFiltration needs a BatchNorm momentum (not None)")
        n = means.shape[0]
        decay = (1 - m) ** torch.arange(n - 1, -1, -1, dtype=means.dtype, device=means.device)
        bn.running_mean.mul_((1 - m) ** n).add_((m * decay * means).sum())
        bn.running_var.mul_((1 - m) ** n).add_((m * decay * unbiased_vars).sum())
        bn.num_batches_tracked.add_(n)

    def forward(self, nodes: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
        logits = self._batch_norm(self.attn(nodes).squeeze(-1), node_mask)  # [nI, nC, N]
        weights = l1norm(torch.sigmoid(logits) * node_mask, dim=-1)
        return l2norm((weights[..., None] * nodes).sum(-2), dim=-1)


# --------------------------------------------------------------------------- the matcher


class SGRAF(Matcher):
    """SGR or SAF matcher (``module="SGR"|"SAF"``); published sizes by default.

    Encodings: images (regions [n, R, d], lengths [n], global [n, d]); captions (words [n, L, d],
    lengths [n], global [n, d]). ``tile_elems`` bounds n_img·n_cap·L·d of one internal tile (memory
    only; scores do not depend on it). In training, tiles split captions only, so SAF's per-caption
    BatchNorm statistics see all images, as in the reference.
    """

    dual_encoder = False
    input_kind = "regions"
    base_loss = "hinge"
    optimizer = "adam"
    augment: dict = {}

    def __init__(self, vocab_size: int = F30K_VOCAB_SIZE, img_dim: int = 2048, embed_size: int = 1024,
                 word_dim: int = 300, sim_dim: int = 256, module: str = "SGR", sgr_step: int = 3,
                 num_regions: int = 36, smooth: float = 9.0, word_dropout: float = 0.4,
                 pool_dropout: float = 0.4, tile_elems: int = 2**24):
        super().__init__()
        if module not in ("SGR", "SAF"):
            raise ValueError(f"models/sgraf.py: module must be 'SGR' or 'SAF', got {module!r}")
        if module == "SGR" and sgr_step < 1:
            raise ValueError(f"models/sgraf.py: sgr_step must be >= 1, got {sgr_step}")
        self.module, self.num_regions, self.smooth, self.tile_elems = module, num_regions, smooth, tile_elems
        self.compiled_tiles = False  # bench.precision.set_compiled: score tiles through torch.compile
        self.img_enc = RegionEncoder(img_dim, embed_size)
        self.txt_enc = WordEncoder(vocab_size, word_dim, embed_size, word_dropout)
        self.img_pool = ImageAttentionPool(embed_size, num_regions, pool_dropout)
        self.txt_pool = TextAttentionPool(embed_size, pool_dropout)
        self.sim_local = xavier_linear(embed_size, sim_dim)
        self.sim_global = xavier_linear(embed_size, sim_dim)
        self.sim_eval = xavier_linear(sim_dim, 1)
        if module == "SGR":
            self.sgr = nn.ModuleList(GraphReasoning(sim_dim) for _ in range(sgr_step))
        else:
            self.saf = AttentionFiltration(sim_dim)

    # -- encoders
    def encode_images(self, batch: dict) -> Encoding:
        images = batch["images"]
        n, n_reg = images.shape[:2]
        if n_reg > self.num_regions:
            raise ValueError(f"models/sgraf.py: images have {n_reg} regions but the model was built with "
                             f"num_regions={self.num_regions}; build it with num_regions={n_reg}")
        lengths = batch.get("image_lengths")
        if lengths is None:
            lengths = torch.full((n,), n_reg, device=images.device)
        lengths = _check_lengths(lengths, n_reg, "image_lengths").to(images.device)
        images = F.pad(images, (0, 0, 0, self.num_regions - n_reg))  # BN has one channel per region index
        regions = self.img_enc(images, lengths)
        return regions, lengths, self.img_pool(regions, length_mask(lengths, self.num_regions))

    def encode_captions(self, batch: dict) -> Encoding:
        captions = batch["captions"]
        lengths = _check_lengths(batch["caption_lengths"], captions.shape[1], "caption_lengths")
        lengths = lengths.to(captions.device)
        words = self.txt_enc(captions, lengths)
        return words, lengths, self.txt_pool(words, length_mask(lengths, words.shape[1]))

    # -- similarity network
    def similarity_vectors(self, img: Encoding, cap: Encoding) -> tuple[torch.Tensor, torch.Tensor]:
        """Nodes [nI, nC, 1+L, s] = [s_g, s_1..s_L] and the node mask [nC, 1+L]."""
        regions, region_lengths, img_glo = img
        words, word_lengths, txt_glo = cap
        region_mask = length_mask(region_lengths, regions.shape[1])
        word_mask = length_mask(word_lengths, words.shape[1])
        sq_diff = attended_difference(regions, region_mask, words, word_mask, self.smooth)
        local = l2norm(self.sim_local(sq_diff), dim=-1)
        glob = l2norm(self.sim_global((img_glo[:, None] - txt_glo[None]) ** 2), dim=-1)
        nodes = torch.cat([glob[:, :, None], local], dim=2)
        node_mask = torch.cat([torch.ones_like(word_mask[:, :1]), word_mask], dim=1)
        return nodes, node_mask

    def _score_tile(self, img: Encoding, cap: Encoding) -> torch.Tensor:
        nodes, node_mask = self.similarity_vectors(img, cap)
        if self.module == "SGR":
            mask = node_mask[None]  # [1, nC, N], broadcast over images
            for k, step in enumerate(self.sgr):
                nodes = step(nodes, mask, global_only=k == len(self.sgr) - 1)
            sim_vec = nodes[..., 0, :]
        else:
            sim_vec = self.saf(nodes, node_mask)
        return torch.sigmoid(self.sim_eval(sim_vec)).squeeze(-1)

    def score(self, img: Encoding, cap: Encoding) -> torch.Tensor:
        """Scores [n_img, n_cap] of every pair (Eq. above), computed in tiles of all pairs."""
        return tiled_scores(self._score_tile, img, cap, self.tile_elems, split_images=not self.training,
                            compiled=self.compiled_tiles)


def tiled_scores(score_tile, img: Encoding, cap: Encoding, tile_elems: int, split_images: bool,
                 compiled: bool = False) -> torch.Tensor:
    """Run ``score_tile`` on image × caption tiles with n_img·n_cap·L·d <= tile_elems (at least 1×1).

    Eager, captions are trimmed to their longest length first (one read of the lengths on the host).
    Compiled (``compiled=True``, or while torch.compile traces this function), nothing is read on the host:
    the words keep their padded width, rounded up to a multiple of ``WIDTH_BUCKET`` so that batches of
    similar widths share one compiled tile, and each tile is one call of the compiled ``score_tile``
    (padded words are masked: the scores are the same). With ``split_images=False`` every tile holds
    all images (needed for training-mode BatchNorm statistics).
    """
    words, word_lengths = cap[0], cap[1]
    n_img, n_cap = img[0].shape[0], words.shape[0]
    if n_img == 0 or n_cap == 0:
        return words.new_zeros(n_img, n_cap)
    if compiled or torch.compiler.is_compiling():
        width = -(-words.shape[1] // WIDTH_BUCKET) * WIDTH_BUCKET
        words = F.pad(words, (0, 0, 0, width - words.shape[1]))
    else:
        width = int(word_lengths.max())
        words = words[:, :width]
    cap = (words, *cap[1:])
    if compiled:
        score_tile = compiled_tile(score_tile)
    per_pair = width * words.shape[-1]
    img_step = n_img if not split_images else max(1, min(n_img, tile_elems // per_pair))
    cap_step = max(1, tile_elems // (per_pair * img_step))
    rows = []
    for i in range(0, n_img, img_step):
        img_tile = tuple(t[i:i + img_step] for t in img)
        rows.append(torch.cat([score_tile(img_tile, tuple(t[c:c + cap_step] for t in cap))
                               for c in range(0, n_cap, cap_step)], dim=1))
    return torch.cat(rows, dim=0)


#: Compiled tiles pad the words' width to a multiple of this (few distinct shapes, few compilations).
WIDTH_BUCKET = 16
_COMPILED: dict = {}


def compiled_tile(score_tile):
    """``torch.compile`` of a model's bound ``_score_tile`` (static shapes), made once per class."""
    owner, fn = score_tile.__self__, score_tile.__func__
    if fn not in _COMPILED:
        import torch._dynamo

        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        _COMPILED[fn] = torch.compile(fn, dynamic=False)
    compiled = _COMPILED[fn]
    return lambda img, cap: compiled(owner, img, cap)


build_sgr = register("sgr")(preset(SGRAF, module="SGR"))
build_saf = register("saf")(preset(SGRAF, module="SAF"))


@register("sgraf")
class SGRAFEnsemble(Matcher):
    """SGRAF = the average of an SGR and a SAF model's score matrices (models trained separately).

    ``SGRAFEnsemble(sgr_model, saf_model)`` wraps two built (e.g. checkpoint-loaded) models; without
    them, fresh published-size models are built from ``overrides``. Encodings are the two models'
    encodings concatenated into one flat tuple.
    """

    dual_encoder = False
    input_kind = "regions"
    base_loss = "hinge"
    optimizer = "adam"
    augment: dict = {}

    def __init__(self, sgr_model: Matcher | None = None, saf_model: Matcher | None = None, **overrides):
        super().__init__()
        self.sgr = sgr_model if sgr_model is not None else SGRAF(module="SGR", **overrides)
        self.saf = saf_model if saf_model is not None else SGRAF(module="SAF", **overrides)

    def encode_images(self, batch: dict) -> Encoding:
        return (*self.sgr.encode_images(batch), *self.saf.encode_images(batch))

    def encode_captions(self, batch: dict) -> Encoding:
        return (*self.sgr.encode_captions(batch), *self.saf.encode_captions(batch))

    def score(self, img: Encoding, cap: Encoding) -> torch.Tensor:
        """(S_SGR + S_SAF) / 2."""
        ni, nc = len(img) // 2, len(cap) // 2  # both models' encodings have the same arity
        return (self.sgr.score(img[:ni], cap[:nc]) + self.saf.score(img[ni:], cap[nc:])) / 2
