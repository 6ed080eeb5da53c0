"""Evaluate any matcher on a split: encode each item once, score in tiles, apply the protocols.

    img, cap = encode_all(model, image_batches, caption_batches)   # each image encoded once
    S = score_matrix(model, img, cap)                                # float32 [n_images, n_captions]
    evaluate_protocol("coco_1k", S)

Works through the ``models.base.Matcher`` interface only: dual encoders are scored by row chunks
(one matmul against all captions), pairwise matchers by image x caption tiles, each tile one call
of ``model.score``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

import torch
from tqdm import tqdm

from bench.protocols import evaluate_protocol, get_protocol
from models.base import Encoding, Matcher, cat_encodings, encoding_len, slice_encoding, to_device

# Default tile sizes: (images, captions) per model.score call; None = all captions at once.
DUAL_ENCODER_TILE = (1024, None)
PAIRWISE_TILE = (128, 128)
#: On CUDA: (images, captions) per score call; 100 × 1,000 divides the F30K (1,000 × 5,000) and COCO-5K splits,
#: so a compiled tile scoring meets one shape.
CUDA_PAIRWISE_TILE = (100, 1000)


def cuda_tile_elems(device) -> int:
    """Elements of one [images, captions, words, dim] tensor of a pairwise tile that the device's free memory
    holds about a dozen times over (fp32), between 2**24 (the CPU default) and 2**28."""
    free, _ = torch.cuda.mem_get_info(device)
    return int(min(2**28, max(2**24, free // (4 * 12))))


def _model_device(model: torch.nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _batch_to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _encode_stream(model: Matcher, batches: Iterable[dict], encode, index_key: str, device, what: str):
    """Encode every batch (on ``device``), gather on CPU, and order items by ``batch[index_key]``."""
    encodings, indices = [], []
    for batch in batches:
        inputs = _batch_to(model.prepare(batch), device)
        encodings.append(to_device(encode(inputs), "cpu"))
        if index_key in batch:
            indices.append(torch.as_tensor(batch[index_key]).reshape(-1).cpu())
    if not encodings:
        raise ValueError(f"encode_all: the {what} batch iterable yielded no batches")
    enc = cat_encodings(encodings)
    n = encoding_len(enc)
    if not indices:
        return enc  # no index key: trust the stream's order
    if len(indices) != len(encodings):
        raise ValueError(f"encode_all: some {what} batches have {index_key!r} and some do not")
    index = torch.cat(indices)
    if len(index) != n:
        raise ValueError(f"encode_all: {len(index)} {index_key} values for {n} encoded {what}s")
    order, identity = torch.argsort(index), torch.arange(n, device="cpu")
    if not torch.equal(index[order], identity):
        raise ValueError(
            f"encode_all: {index_key} of the {what} batches must be 0..{n - 1}, each once "
            "(every item of the split exactly once)"
        )
    if torch.equal(order, identity):
        return enc
    return slice_encoding(enc, order)


def encode_all(
    model: Matcher,
    image_batches: Iterable[dict],
    caption_batches: Iterable[dict],
    device: str | torch.device | None = None,
) -> tuple[Encoding, Encoding]:
    """Encode a split: ``(img_enc [n_images, ...], cap_enc [n_captions, ...])``, kept on CPU.

    Each batch goes through ``model.prepare`` then ``encode_images`` / ``encode_captions`` under
    ``torch.no_grad()`` in eval mode (the model's previous train/eval mode is restored after).
    Batches are dicts (``bench.data`` image-only and caption-only batches); their tensors are moved
    to ``device`` (default: the model's device). When batches carry ``image_index`` /
    ``caption_index``, rows are put in that order and must cover 0..n-1 exactly once.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            img = _encode_stream(model, image_batches, model.encode_images, "image_index", device, "image")
            cap = _encode_stream(
                model, caption_batches, model.encode_captions, "caption_index", device, "caption"
            )
    finally:
        model.train(was_training)
    return img, cap


def score_matrix(
    model: Matcher,
    img_enc: Encoding,
    cap_enc: Encoding,
    device: str | torch.device | None = None,
    image_tile: int | None = None,
    caption_tile: int | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    """S = model.score(img_enc, cap_enc) as float32 [n_images, n_captions] on CPU, computed in tiles.

    Dual encoders (``model.dual_encoder``): row chunks of ``image_tile`` images (default 1024)
    against all captions, i.e. a chunked matmul. Pairwise matchers: tiles of ``image_tile`` x
    ``caption_tile`` (default 128 x 128), each scored by one ``model.score`` call. The caption
    encoding is moved to ``device`` (default: the model's device) once; image tiles per tile.
    ``progress``: a tqdm bar (default: only when stderr is a terminal).
    """
    device = torch.device(device) if device is not None else _model_device(model)
    n_images, n_captions = encoding_len(img_enc), encoding_len(cap_enc)
    default_tile = DUAL_ENCODER_TILE if model.dual_encoder else PAIRWISE_TILE
    saved_tiles = {}
    if device.type == "cuda" and not model.dual_encoder:
        default_tile = CUDA_PAIRWISE_TILE
        sized = cuda_tile_elems(device)
        for m in model.modules():  # inner tiles of the pairwise matchers, from the device's free memory (restored)
            if hasattr(m, "tile_elems"):
                saved_tiles[m] = m.tile_elems
                m.tile_elems = max(m.tile_elems, sized)
    image_tile = image_tile or default_tile[0]
    caption_tile = caption_tile or default_tile[1] or n_captions
    if image_tile < 1 or caption_tile < 1:
        raise ValueError(f"score_matrix: tile sizes must be >= 1, got {image_tile} x {caption_tile}")
    if progress is None:
        progress = sys.stderr.isatty()

    sims = torch.empty(n_images, n_captions, dtype=torch.float32, device="cpu")  # gathered on the host
    cap_on_device = to_device(cap_enc, device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            tiles = [
                (i, j) for i in range(0, n_images, image_tile) for j in range(0, n_captions, caption_tile)
            ]
            img_tile, img_start = None, None
            for i, j in tqdm(tiles, desc="scoring", disable=not progress, leave=False):
                if i != img_start:
                    img_tile, img_start = (
                        to_device(slice_encoding(img_enc, slice(i, i + image_tile)), device),
                        i,
                    )
                scores = model.score(img_tile, slice_encoding(cap_on_device, slice(j, j + caption_tile)))
                expected = (min(image_tile, n_images - i), min(caption_tile, n_captions - j))
                if tuple(scores.shape) != expected:
                    raise ValueError(
                        f"score_matrix: {type(model).__name__}.score returned shape {tuple(scores.shape)} "
                        f"for a tile of {expected[0]} images x {expected[1]} captions; it must return "
                        "[n_images, n_captions]"
                    )
                sims[i : i + expected[0], j : j + expected[1]] = scores.float().cpu()
    finally:
        model.train(was_training)
        for m, elems in saved_tiles.items():
            m.tile_elems = elems
    return sims


def evaluate_split(
    model: Matcher,
    image_batches: Iterable[dict],
    caption_batches: Iterable[dict],
    protocol_names: str | Sequence[str],
    device: str | torch.device | None = None,
    return_ranks: bool = False,
    **tiles,
) -> dict:
    """Evaluate ``model`` on one split under every protocol in ``protocol_names`` (all on that split).

    Encodes once, builds the score matrix once, and returns ``{protocol: metrics}``; with
    ``return_ranks=True`` ``{protocol: (metrics, i2t_ranks, t2i_ranks)}``. ``tiles`` are passed to
    :func:`score_matrix` (``image_tile``, ``caption_tile``, ``progress``).
    """
    names = [protocol_names] if isinstance(protocol_names, str) else list(protocol_names)
    if not names:
        raise ValueError("evaluate_split: protocol_names is empty")
    protocols = [get_protocol(n) for n in names]
    splits = {(p.dataset, p.split) for p in protocols}
    if len(splits) > 1:
        raise ValueError(
            f"evaluate_split: protocols {names} use different splits {sorted(splits)}; "
            "call evaluate_split once per split"
        )
    img_enc, cap_enc = encode_all(model, image_batches, caption_batches, device=device)
    sims = score_matrix(model, img_enc, cap_enc, device=device, **tiles)
    return {p.name: evaluate_protocol(p, sims, return_ranks=return_ranks) for p in protocols}
