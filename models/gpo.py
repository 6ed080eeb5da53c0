"""GPO, the Generalised Pooling Operator of VSE∞ (Chen et al., CVPR 2021, Sec. 3.2).

Given a set of N feature vectors {φ_n} ⊂ R^D (regions or words), GPO pools every dimension d
independently as a weighted sum of its sorted values:

    f_d = Σ_{k=1..N} θ_k · max_k({φ_n,d}_n)          (Eq. 3; max_k = k-th largest value)

The weights θ depend only on the index k and the set size N (Eq. 4–5):

    θ = softmax_k(w · h_k / τ),  h_k = mean of the two directions of BiGRU(PE(1..N))_k,  τ = 0.1

with PE the 32-d sinusoidal position encoding, a 1-layer bidirectional GRU of hidden size 32 and
a bias-free linear 32→1. Sets of different sizes share one padded tensor: padded positions are
filled with −1e4 before sorting (so they sort last), zeroed after, and their scores masked.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

PAD_VALUE = -1e4  # fill value of padded positions before sorting and of their scores


def sinusoidal_position_encoding(length: int, dim: int) -> torch.Tensor:
    """[length, dim] encoding PE[p, 2i] = sin(p / 10000^(2i/dim)), PE[p, 2i+1] = cos(same) (Vaswani et al.),
    computed on the CPU (as the reference does, whatever the model's device)."""
    if dim % 2:
        raise ValueError(f"sinusoidal_position_encoding: dim must be even, got {dim}")
    position = torch.arange(length, dtype=torch.float32, device="cpu").unsqueeze(1)
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device="cpu") * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device="cpu")
    pe[:, 0::2] = torch.sin(position * inv_freq)
    pe[:, 1::2] = torch.cos(position * inv_freq)
    return pe


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Bool [B, max_len], True at the valid positions 0..lengths[b]-1."""
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


class GPO(nn.Module):
    """Generalised pooling over a padded set [B, N, D] with per-item lengths [B] → [B, D]."""

    def __init__(self, d_pe: int = 32, d_hidden: int = 32, temperature: float = 0.1):
        super().__init__()
        self.d_pe = d_pe
        self.temperature = temperature
        self.gru = nn.GRU(d_pe, d_hidden, num_layers=1, batch_first=True, bidirectional=True)
        self.linear = nn.Linear(d_hidden, 1, bias=False)
        self._pe: dict = {}  # (device, length) → PE on that device: a blocking host→device copy once, not per call

    def position_encoding(self, length: int, device: torch.device) -> torch.Tensor:
        key = (str(device), length)
        if key not in self._pe:
            self._pe[key] = sinusoidal_position_encoding(length, self.d_pe).to(device)
        return self._pe[key]

    def pool_weights(self, lengths: torch.Tensor) -> torch.Tensor:
        """θ for every item: [B, max(lengths)], rows sum to 1, zero beyond each item's length.

        θ depends only on N, so the generator runs once per distinct length in the batch. The lengths are read
        on the host (``pack_padded_sequence`` takes them there): given on the CPU, no device read is needed.
        """
        unique_lengths, inverse = torch.unique(lengths.cpu(), return_inverse=True)
        max_len = int(unique_lengths.max())
        device = self.linear.weight.device
        # host→device without a stream synchronisation (small fresh CPU tensors; no-op on the CPU)
        mask = length_mask(unique_lengths.to(device, non_blocking=True), max_len)  # [U, max_len]
        pe = self.position_encoding(max_len, device)
        pe = pe.unsqueeze(0).expand(len(unique_lengths), -1, -1) * mask.unsqueeze(-1)
        packed = pack_padded_sequence(pe, unique_lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=max_len)
        hidden = out.view(*out.shape[:2], 2, -1).mean(dim=2)  # average the two directions
        scores = self.linear(hidden).squeeze(-1).masked_fill(~mask, PAD_VALUE)
        weights = torch.softmax(scores / self.temperature, dim=1)
        return weights[inverse.to(device, non_blocking=True)]

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Eq. 3: features [B, N, D] (positions ≥ lengths[b] are padding), lengths [B] → pooled [B, D]."""
        if features.dim() != 3:
            raise ValueError(f"GPO.forward: features must be [B, N, D], got shape {tuple(features.shape)}")
        lengths = torch.as_tensor(lengths).long()
        host = lengths.cpu()  # one device→host read per call, for the checks and the weight generator
        if lengths.shape != features.shape[:1]:
            raise ValueError(
                f"GPO.forward: lengths must be [B]={features.shape[0]}, got shape {tuple(lengths.shape)}"
            )
        if int(host.min()) < 1 or int(host.max()) > features.shape[1]:
            raise ValueError(
                f"GPO.forward: lengths must lie in [1, {features.shape[1]}] (the set dimension), "
                f"got min {int(host.min())}, max {int(host.max())}"
            )
        weights = self.pool_weights(host)  # [B, max_len]
        max_len = weights.shape[1]
        features = features[:, :max_len]
        pad = ~length_mask(lengths.to(features.device), max_len).unsqueeze(-1)  # [B, max_len, 1]
        ranked = features.masked_fill(pad, PAD_VALUE).sort(dim=1, descending=True).values
        ranked = ranked.masked_fill(pad, 0.0)
        return (ranked * weights.unsqueeze(-1).to(ranked.dtype)).sum(dim=1)
