"""The reduced cross-attention matcher of the Deep Boosting Learning reference code (DBL, TIP 2024).

Same local encoders as SGRAF (``models.sgraf``); per (image i, caption c) pair:
    context  c_l = SCAN text-to-image attention (λ = 9)
    s_l      = l2norm(W (c_l − w_l)²)                       [256]
    s        = l2norm(mean over valid words of s_l)
    score    = tanh(w_e · s)                                  in (−1, 1)
No global alignment, no SGR/SAF (DBL's ``EncoderSimilarity``, with its default ``no_simnorm=False``).

DBL's OAS program trains this matcher (both stages) with caption-token augmentation (mask /
random / delete, p = 0.2, ``<start>``/``<end>`` kept) and a ``<mask>`` vocabulary word; its OSS and
MSS programs do not. It is the schedule's ``caption_aug`` (default off for this matcher; the
recipes turn it on for OAS), see ``bench.data.precomp.augment_caption``.
"""

from __future__ import annotations

import torch

from models import register
from models.base import Encoding, Matcher, l2norm
from models.sgraf import (
    F30K_VOCAB_SIZE,
    RegionEncoder,
    WordEncoder,
    _check_lengths,
    attended_difference,
    length_mask,
    tiled_scores,
    xavier_linear,
)


@register("xattn")
class CrossAttentionMatcher(Matcher):
    """DBL's matcher. Encodings: images (regions [n, R, d], lengths [n]); captions (words [n, L, d], lengths [n])."""

    dual_encoder = False
    input_kind = "regions"
    base_loss = "hinge"
    optimizer = "adam"
    augment: dict = {"token_aug": False, "token_aug_ends": False}  # caption_aug: off unless the schedule says so

    def __init__(self, vocab_size: int = F30K_VOCAB_SIZE, img_dim: int = 2048, embed_size: int = 1024,
                 word_dim: int = 300, sim_dim: int = 256, smooth: float = 9.0, word_dropout: float = 0.4,
                 sim_norm: bool = True, tile_elems: int = 2**24):
        super().__init__()
        self.smooth, self.sim_norm, self.tile_elems = smooth, sim_norm, tile_elems
        self.compiled_tiles = False  # bench.precision.set_compiled: score tiles through torch.compile
        self.img_enc = RegionEncoder(img_dim, embed_size)
        self.txt_enc = WordEncoder(vocab_size, word_dim, embed_size, word_dropout)
        self.sim_tran = xavier_linear(embed_size, sim_dim)
        self.sim_eval = xavier_linear(sim_dim, 1)

    def encode_images(self, batch: dict) -> Encoding:
        images = batch["images"]
        lengths = batch.get("image_lengths")
        if lengths is None:
            lengths = torch.full((images.shape[0],), images.shape[1], device=images.device)
        lengths = _check_lengths(lengths, images.shape[1], "image_lengths").to(images.device)
        return self.img_enc(images, lengths), lengths

    def encode_captions(self, batch: dict) -> Encoding:
        captions = batch["captions"]
        lengths = _check_lengths(batch["caption_lengths"], captions.shape[1], "caption_lengths")
        lengths = lengths.to(captions.device)
        return self.txt_enc(captions, lengths), lengths

    def _score_tile(self, img: Encoding, cap: Encoding) -> torch.Tensor:
        regions, region_lengths = img[0], img[1]
        words, word_lengths = cap[0], cap[1]
        word_mask = length_mask(word_lengths, words.shape[1])
        sq_diff = attended_difference(regions, length_mask(region_lengths, regions.shape[1]), words, word_mask,
                                      self.smooth)
        local = l2norm(self.sim_tran(sq_diff), dim=-1)  # [nI, nC, L, s]
        sim_vec = (local * word_mask[None, :, :, None]).sum(2) / word_lengths[None, :, None].to(local.dtype)
        if self.sim_norm:
            sim_vec = l2norm(sim_vec, dim=-1)
        return torch.tanh(self.sim_eval(sim_vec)).squeeze(-1)

    def score(self, img: Encoding, cap: Encoding) -> torch.Tensor:
        """Scores [n_img, n_cap] of every pair, computed in tiles of all pairs."""
        return tiled_scores(self._score_tile, img, cap, self.tile_elems, split_images=True,
                            compiled=self.compiled_tiles)

