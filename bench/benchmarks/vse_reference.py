"""VSE∞ (BiGRU branch) training step and ``evalrank`` written the way the official program runs them.

A re-implementation of the reference loops for side-by-side timing (``bench_reference``): it runs
the layers of one of our ``VSEInfty`` models (same weights), but with the reference's control flow:

* training: the batch sorted by caption length (longest first) as its collate does, captions packed
  as a sorted batch; the image tower's fc + (Linear → BatchNorm → ReLU → Linear) residual on every
  region; GPO's weight generator run on one positional-encoding sequence *per item* (not per
  distinct length); the hinge loss on ``im @ s.T`` with an identity mask; ``zero_grad`` → backward →
  ``clip_grad_norm_(2.0)`` → AdamW step.
* evaluation: every (image, caption) pair of the split encoded in batches (each image once per
  caption), embeddings copied into float64 NumPy arrays, ``sims = img[::5] @ cap.T``, then the
  per-query ``argsort`` loops of ``i2t`` / ``t2i``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.base import l2norm
from models.gpo import sinusoidal_position_encoding
from models.vse_infty import VSEInfty


def _gpo(gpo, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reference GPO: the weight generator over one PE sequence per item (B sequences), padding masked."""
    b, max_len, device = lengths.shape[0], int(lengths.max()), features.device
    pe = sinusoidal_position_encoding(max_len, gpo.d_pe).unsqueeze(0).repeat(b, 1, 1).to(device)
    mask = (torch.arange(max_len, device=device).expand(b, max_len) < lengths.long().unsqueeze(1)).unsqueeze(-1)
    pe = pe.masked_fill(~mask, 0)
    packed = pack_padded_sequence(pe, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, _ = gpo.gru(packed)
    out, _ = pad_packed_sequence(out, batch_first=True)
    half = out.shape[2] // 2
    scores = gpo.linear((out[:, :, :half] + out[:, :, half:]) / 2)
    scores = scores.masked_fill(~mask, -10000)
    weights = torch.softmax(scores / gpo.temperature, 1)
    features = features[:, :max_len]
    ranked = features.masked_fill(~mask, -10000).sort(dim=1, descending=True)[0].masked_fill(~mask, 0)
    return (ranked * weights).sum(1)


def encode_images(model: VSEInfty, images: torch.Tensor, image_lengths: torch.Tensor) -> torch.Tensor:
    enc = model.img_enc
    b, n, d = images.shape
    hidden = torch.relu(enc.mlp.bn(enc.mlp.fc1(images.reshape(b * n, d))))
    features = enc.mlp.fc2(hidden).view(b, n, -1) + enc.fc(images)
    return l2norm(_gpo(enc.gpo, features, image_lengths), dim=-1)


def encode_captions(model: VSEInfty, captions: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Captions sorted by length, longest first (the reference collate's order)."""
    enc = model.txt_enc
    packed = pack_padded_sequence(enc.embed(captions), torch.tensor(lengths, device="cpu"), batch_first=True)
    out, _ = enc.rnn(packed)
    out, out_len = pad_packed_sequence(out, batch_first=True)
    half = out.shape[2] // 2
    out = (out[:, :, :half] + out[:, :, half:]) / 2
    return l2norm(_gpo(enc.gpo, out, out_len), dim=-1)


def collate(batch: dict) -> tuple:
    """A loader batch (our keys) → the reference collate's tensors: sorted by caption length, padded to the
    longest item (images to their longest region set, captions to their longest caption)."""
    order = torch.argsort(batch["caption_lengths"], descending=True, stable=True)
    lengths = [int(x) for x in batch["caption_lengths"][order]]
    img_lengths = batch["image_lengths"][order]
    images = batch["images"][order][:, : int(img_lengths.max())]
    captions = batch["captions"][order][:, : max(lengths)]
    return images, img_lengths.float(), captions, lengths, order


def hinge(im: torch.Tensor, s: torch.Tensor, margin: float = 0.2, max_violation: bool = True) -> torch.Tensor:
    scores = im.mm(s.t())
    diagonal = scores.diag().view(im.size(0), 1)
    cost_s = (margin + scores - diagonal.expand_as(scores)).clamp(min=0)
    cost_im = (margin + scores - diagonal.t().expand_as(scores)).clamp(min=0)
    eye = torch.eye(scores.size(0), device=scores.device) > 0.5
    cost_s, cost_im = cost_s.masked_fill_(eye, 0), cost_im.masked_fill_(eye, 0)
    if max_violation:
        cost_s, cost_im = cost_s.max(1)[0], cost_im.max(0)[0]
    return cost_s.sum() + cost_im.sum()


def train_step(model: VSEInfty, optimizer: torch.optim.Optimizer, batch: dict, grad_clip: float = 2.0,
               max_violation: bool = True) -> float:
    images, img_lengths, captions, lengths, _ = collate(batch)
    img_emb = encode_images(model, images, img_lengths)
    cap_emb = encode_captions(model, captions, lengths)
    optimizer.zero_grad()
    loss = hinge(img_emb, cap_emb, max_violation=max_violation)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(model.parameters()), grad_clip)
    optimizer.step()
    return float(loss.detach())


# ------------------------------------------------------------------------------------------ evalrank
@torch.no_grad()
def evalrank(model: VSEInfty, images: torch.Tensor, image_lengths: torch.Tensor, captions: torch.Tensor,
             caption_lengths: torch.Tensor, batch_size: int = 128) -> dict:
    """R@1/5/10 both ways and RSUM, 5 captions per image (caption c describes image c // 5)."""
    model.eval()
    n_cap = captions.shape[0]
    img_embs = cap_embs = None
    for start in range(0, n_cap, batch_size):
        idx = torch.arange(start, min(start + batch_size, n_cap), device="cpu")
        img_idx = idx // 5
        batch = {"images": images[img_idx], "image_lengths": image_lengths[img_idx],
                 "captions": captions[idx], "caption_lengths": caption_lengths[idx]}
        ims, img_len, caps, lengths, order = collate(batch)
        img_emb, cap_emb = encode_images(model, ims, img_len), encode_captions(model, caps, lengths)
        if img_embs is None:
            img_embs, cap_embs = np.zeros((n_cap, img_emb.size(1))), np.zeros((n_cap, cap_emb.size(1)))
        ids = idx[order.cpu()].numpy()
        img_embs[ids] = img_emb.cpu().numpy().copy()
        cap_embs[ids, :] = cap_emb.cpu().numpy().copy()
        hinge(img_emb, cap_emb)  # the reference logs the loss of every evaluation batch
    npts = n_cap // 5
    sims = img_embs[::5] @ cap_embs.T
    ranks_i2t = np.zeros(npts)
    for index in range(npts):
        inds = np.argsort(sims[index])[::-1]
        ranks_i2t[index] = min(np.where(inds == i)[0][0] for i in range(5 * index, 5 * index + 5))
    ranks_t2i = np.zeros(5 * npts)
    sims_t = sims.T
    for index in range(npts):
        for i in range(5):
            inds = np.argsort(sims_t[5 * index + i])[::-1]
            ranks_t2i[5 * index + i] = np.where(inds == index)[0][0]
    out = {}
    for name, ranks in (("i2t", ranks_i2t), ("t2i", ranks_t2i)):
        for k in (1, 5, 10):
            out[f"{name}_r{k}"] = 100.0 * float((ranks < k).mean())
    out["rsum"] = sum(v for v in out.values())
    return out
