"""Per-caption reference scorer for the SGRAF family, written like the official evaluation.

For each caption: cut it to its valid words, repeat it for every image, run SCAN attention as
batched per-image matrix products, build the similarity nodes and run SGR / SAF / DBL's mean,
and append one column of scores. It uses the model's own layers (same weights), but none of the
batched code in ``models.sgraf`` except the local encoders' outputs and the image pooling, so the
tests can check ``model.score`` (all pairs at once) against it. Eval mode only (dropout/BN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.base import Encoding, l2norm
from models.sgraf import SGRAF, l1norm, length_mask
from models.xattn import CrossAttentionMatcher


def scan_attention(query: torch.Tensor, context: torch.Tensor, region_mask: torch.Tensor,
                   smooth: float) -> torch.Tensor:
    """query [n, L, d] (one caption repeated), context [n, R, d] → attended context [n, L, d]."""
    attn = F.leaky_relu(torch.bmm(context, query.transpose(1, 2)), 0.1)  # [n, R, L]
    attn = l2norm(attn, dim=2).transpose(1, 2) * smooth  # norm over the caption's words
    attn = torch.softmax(attn.masked_fill(~region_mask[:, None, :], float("-inf")), dim=2)  # [n, L, R]
    return l2norm(torch.bmm(attn, context), dim=-1)


@torch.no_grad()
def loop_scores(model: SGRAF | CrossAttentionMatcher, img: Encoding, cap: Encoding) -> torch.Tensor:
    """Scores [n_img, n_cap], one caption at a time (the reference's Python loop)."""
    if model.training:
        raise ValueError("bench/benchmarks/sgraf_loop.py: call model.eval() first (dropout/BatchNorm)")
    regions, region_lengths = img[0], img[1]
    region_mask = length_mask(region_lengths, regions.shape[1])
    words, word_lengths = cap[0], cap[1]
    n_img = regions.shape[0]
    is_sgraf = isinstance(model, SGRAF)
    if is_sgraf:
        img_glo = model.img_pool(regions, region_mask)
    columns = []
    for c in range(words.shape[0]):
        n_word = int(word_lengths[c])
        cap_c = words[c, :n_word].unsqueeze(0)
        cap_rep = cap_c.repeat(n_img, 1, 1)
        context = scan_attention(cap_rep, regions, region_mask, model.smooth)
        if not is_sgraf:  # DBL: mean of local similarity vectors
            local = l2norm(model.sim_tran((context - cap_rep) ** 2), dim=-1)
            sim_vec = local.mean(1)
            if model.sim_norm:
                sim_vec = l2norm(sim_vec, dim=-1)
            columns.append(torch.tanh(model.sim_eval(sim_vec)))
            continue
        txt_glo = model.txt_pool(cap_c, torch.ones(1, n_word, dtype=torch.bool, device=words.device))
        local = l2norm(model.sim_local((context - cap_rep) ** 2), dim=-1)
        glob = l2norm(model.sim_global((img_glo - txt_glo) ** 2), dim=-1)
        nodes = torch.cat([glob.unsqueeze(1), local], dim=1)  # [n_img, 1+L, s]
        if model.module == "SGR":
            for step in model.sgr:
                edges = torch.softmax(torch.bmm(step.query(nodes), step.key(nodes).transpose(1, 2)), dim=-1)
                nodes = F.relu(step.update(torch.bmm(edges, nodes)))
            sim_vec = nodes[:, 0]
        else:
            saf = model.saf
            logits = saf.bn(saf.attn(nodes).transpose(1, 2))  # BatchNorm1d(1) on [n_img, 1, 1+L]
            weights = l1norm(torch.sigmoid(logits), dim=-1)
            sim_vec = l2norm(torch.matmul(weights, nodes).squeeze(1), dim=-1)
        columns.append(torch.sigmoid(model.sim_eval(sim_vec)))
    return torch.cat(columns, dim=1)
