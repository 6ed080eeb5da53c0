"""The interface every matcher implements, and helpers over "encodings".

A matcher maps a batch (a dict built by ``bench.data``) to a score matrix S [n_images, n_captions]
in three steps, so the evaluator can encode each image once and score in tiles:

    img = model.encode_images(batch)     # an Encoding
    cap = model.encode_captions(batch)   # an Encoding
    S   = model.score(img, cap)          # Tensor [len(img), len(cap)]

An *Encoding* is a Tensor, or a tuple of Tensors, all with the item (image or caption) as their
leading dimension. Variable-length encodings (e.g. per-word features [n, L, d] plus lengths [n])
are concatenated across batches by :func:`cat_encodings`, which zero-pads dimension 1.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

Encoding = torch.Tensor | tuple[torch.Tensor, ...]


def l2norm(x: torch.Tensor, dim: int = -1, eps: float = 1e-8) -> torch.Tensor:
    """x / (||x||_2 + eps) along ``dim`` (the reference's l2norm, eps added to the norm)."""
    return x / (x.pow(2).sum(dim=dim, keepdim=True).sqrt() + eps)


def encoding_len(enc: Encoding) -> int:
    return (enc[0] if isinstance(enc, tuple) else enc).shape[0]


def slice_encoding(enc: Encoding, index: slice | torch.Tensor) -> Encoding:
    """Select items ``index`` (a slice or an index tensor) of every tensor of an encoding."""
    if isinstance(enc, tuple):
        return tuple(t[index] for t in enc)
    return enc[index]


def to_device(enc: Encoding, device: torch.device | str) -> Encoding:
    if isinstance(enc, tuple):
        return tuple(t.to(device) for t in enc)
    return enc.to(device)


def _pad_cat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    if tensors[0].dim() >= 2 and len({t.shape[1] for t in tensors}) > 1:
        width = max(t.shape[1] for t in tensors)
        tensors = [F.pad(t, [0, 0] * (t.dim() - 2) + [0, width - t.shape[1]]) for t in tensors]
    return torch.cat(list(tensors), dim=0)


def cat_encodings(encs: Sequence[Encoding]) -> Encoding:
    """Concatenate encodings along the item dimension, zero-padding dimension 1 where widths differ."""
    if isinstance(encs[0], tuple):
        return tuple(_pad_cat([e[k] for e in encs]) for k in range(len(encs[0])))
    return _pad_cat(encs)


class Matcher(nn.Module, metaclass=ABCMeta):
    """Base class of the matchers. Subclasses set the class attributes and the three methods.

    Attributes:
        dual_encoder: True when ``score`` is an inner product of fixed-size embeddings, so the
            evaluator may compute S as one (chunked) matmul of the two embedding matrices.
        input_kind: ``"regions"`` (precomputed region features + vocabulary ids) or ``"pixels"``
            (images + a Hugging Face tokenizer's ids).
        base_loss: ``"hinge"`` (bidirectional triplet, VSE++/VSE∞/SGRAF) or ``"infonce"`` (CLIP).
        optimizer: the published optimiser, ``"adam"`` or ``"adamw"``.
        augment: training-time data augmentation the data loader applies for this matcher,
            e.g. ``{"region_drop": 0.2, "token_aug": True, "token_aug_ends": True}`` for VSE∞
            (``token_aug``: caption-token augmentation, the default of the schedule's
            ``caption_aug``; ``token_aug_ends``: it may touch ``<start>``/``<end>``).
        mask_word: the vocabulary always has the ``<mask>`` word (VSE∞, as its reference code);
            other matchers get it only when trained with ``caption_aug``.
        weight_decay: the published weight decay, the default of the schedule's ``weight_decay``
            (the trainer applies the schedule's value to every parameter group).
        hinge_warmup_epochs: epochs of the hinge loss summed over negatives before the hardest negative
            (VSE∞: 1), the default of the schedule's ``hinge_warmup_epochs`` (0 from a checkpoint).
        weights_args: ``{constructor argument: kind}`` of the local pretrained folders the matcher reads
            (``bench.weights.KINDS``: ``"clip"``, ``"bert"``); a suite gives them as ``weights: {kind: DIR}``.
    """

    dual_encoder: bool = False
    input_kind: str = "regions"
    base_loss: str = "hinge"
    optimizer: str = "adam"
    augment: dict = {}
    mask_word: bool = False
    weight_decay: float = 0.0
    hinge_warmup_epochs: int = 0
    weights_args: dict = {}

    @classmethod
    def architecture(cls, **overrides) -> dict:
        """The configuration a local pretrained folder must hold for a matcher built with ``overrides``:
        ``{dotted config field: value}`` (``bench.weights.folder_problems`` compares them); {} when any will do."""
        return {}

    @classmethod
    def count_parameters(cls, **overrides) -> int:
        """Parameters of the matcher built with ``overrides``, built on PyTorch's meta device (nothing is
        allocated or initialised). A matcher reading a local pretrained folder counts from its config."""
        with torch.device("meta"):
            model = cls(**overrides)
        return sum(p.numel() for p in model.parameters())

    def prepare(self, batch: dict) -> dict:
        """Turn a loader batch into model inputs (pixel matchers run their processor here)."""
        return batch

    @abstractmethod
    def encode_images(self, batch: dict) -> Encoding:
        """Encodings of the batch's images (one item per image)."""

    @abstractmethod
    def encode_captions(self, batch: dict) -> Encoding:
        """Encodings of the batch's captions (one item per caption)."""

    def score(self, img: Encoding, cap: Encoding) -> torch.Tensor:
        """Scores [n_images, n_captions]; for dual encoders ``img @ cap.T``."""
        if self.dual_encoder:
            return img @ cap.t()
        raise TypeError(f"{type(self).__name__} is a pairwise matcher (dual_encoder=False): it must define score()")

    def forward(self, batch: dict) -> torch.Tensor:
        """The B×B score matrix of a training batch (rows images, columns captions)."""
        batch = self.prepare(batch)
        return self.score(self.encode_images(batch), self.encode_captions(batch))

    def param_groups(self, lr: float) -> list[dict]:
        """Optimiser parameter groups; pretrained towers override this to scale their lr. Groups that
        do not set ``weight_decay`` get the schedule's."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def after_optimizer_step(self) -> None:
        """Hook run after each optimiser step (CLIP clamps its logit scale here)."""
