"""Every loss of DBL and of the cooperative strategies it is compared with (spec: method.md).

All functions are plain functions over B×B score matrices: rows are images, columns are captions,
the diagonal holds the positives. ``S`` is the target/student branch, ``A`` the anchor/teacher/peer.
``A`` is detached inside every two-branch loss (stop-gradient): no gradient ever reaches the anchor.

Reductions follow the reference code: hinge losses (triplet, boosting) are *summed* over the batch;
distribution losses (kd, dml, dino) are averaged over queries (rows, then columns) and the two
directions added; rkd is an elementwise mean; sp and darkrank average over rows.

    L_raw  = triplet(S)                       # VSE++ hinge, hardest negative
    L_boo  = boost_abs(S, A) | boost_rel(S, A)
    target = L_raw + alpha * L_boo
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

REDUCTIONS = ("max", "sum")
SOFT_MARGINS = ("none", "sigmoid", "clip")
DARKRANK_ORDERS = ("similarity", "distance")


# ----------------------------------------------------------------------------- input checks


def _check_square(fn: str, name: str, X: torch.Tensor) -> None:
    if not isinstance(X, torch.Tensor):
        raise ValueError(f"strategies/losses.py {fn}: {name} must be a torch.Tensor, got {type(X).__name__}")
    if X.dim() != 2 or X.shape[0] != X.shape[1] or X.shape[0] == 0:
        raise ValueError(
            f"strategies/losses.py {fn}: {name} must be a square B×B score matrix (rows images, columns "
            f"captions, positives on the diagonal), got shape {tuple(X.shape)}"
        )


def _check_pair(fn: str, S: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Validate S and A (same square shape) and return A detached."""
    _check_square(fn, "S", S)
    _check_square(fn, "A", A)
    if S.shape != A.shape:
        raise ValueError(
            f"strategies/losses.py {fn}: S {tuple(S.shape)} and A {tuple(A.shape)} must have the same shape "
            "(both branches must score the same batch)"
        )
    return A.detach()


def _check_choice(fn: str, arg: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"strategies/losses.py {fn}: {arg}={value!r} is not one of {', '.join(valid)}")


def _reduce_hinges(cost_i2t: torch.Tensor, cost_t2i: torch.Tensor, reduction: str) -> torch.Tensor:
    """Σ_i red_j cost_i2t[i, j] + Σ_j red_i cost_t2i[i, j], diagonal zeroed, red ∈ {max, sum}.

    Costs are hinges (≥ 0), so zeroing the diagonal before the max equals excluding it.
    """
    eye = torch.eye(cost_i2t.shape[0], dtype=torch.bool, device=cost_i2t.device)
    cost_i2t = cost_i2t.masked_fill(eye, 0.0)
    cost_t2i = cost_t2i.masked_fill(eye, 0.0)
    if reduction == "max":
        return cost_i2t.max(dim=1).values.sum() + cost_t2i.max(dim=0).values.sum()
    return cost_i2t.sum() + cost_t2i.sum()


# ----------------------------------------------------------------------------- base loss


def triplet(S: torch.Tensor, margin: float = 0.2, max_violation: bool = True) -> torch.Tensor:
    """L_raw, the bidirectional hinge triplet loss (VSE++), summed over the batch.

        L_raw(S) = Σ_i max_{j≠i} [m + S_ij − S_ii]_+  +  Σ_j max_{i≠j} [m + S_ij − S_jj]_+

    First term image→text (row i is an image query), second text→image (column j a caption query).
    ``max_violation=False`` replaces each max by a sum over the negatives (VSE0 / VSE∞ warm-up).
    """
    _check_square("triplet", "S", S)
    pos = S.diag()
    cost_i2t = (margin + S - pos[:, None]).clamp(min=0)  # [i, j]: m + S_ij − S_ii
    cost_t2i = (margin + S - pos[None, :]).clamp(min=0)  # [i, j]: m + S_ij − S_jj
    return _reduce_hinges(cost_i2t, cost_t2i, "max" if max_violation else "sum")


# ----------------------------------------------------------------------------- DBL soft adaptation


def soft_sup(r: torch.Tensor, margin: float, edge: float, form: str = "sigmoid") -> torch.Tensor:
    """Margin that shrinks as ``r`` approaches its upper bound ``edge`` (γ^SA, detached).

        sigmoid:  sup(r; μ, e) = 2μ·σ(−(2/μ)(r − e)) − μ      (→ μ for r ≪ e, = 0 at r = e)
        clip:     sup(r; μ, e) = min(μ, e − r)
    """
    _check_choice("soft_sup", "form", form, ("sigmoid", "clip"))
    r = r.detach()
    if margin < 0:
        raise ValueError(f"strategies/losses.py soft_sup: margin must be ≥ 0, got {margin}")
    if margin == 0:
        return torch.zeros_like(r)
    if form == "clip":
        return (edge - r).clamp(max=margin)
    return 2 * margin * torch.sigmoid(-(2 / margin) * (r - edge)) - margin


def soft_inf(r: torch.Tensor, margin: float, edge: float, form: str = "sigmoid") -> torch.Tensor:
    """Margin that shrinks as ``r`` approaches its lower bound ``−edge`` (γ^SA, detached).

        sigmoid:  inf(r; μ, e) = 2μ·σ((2/μ)(r + e)) − μ       (→ μ for r ≫ −e, = 0 at r = −e)
        clip:     inf(r; μ, e) = min(μ, e + r)
    """
    _check_choice("soft_inf", "form", form, ("sigmoid", "clip"))
    r = r.detach()
    if margin < 0:
        raise ValueError(f"strategies/losses.py soft_inf: margin must be ≥ 0, got {margin}")
    if margin == 0:
        return torch.zeros_like(r)
    if form == "clip":
        return (edge + r).clamp(max=margin)
    return 2 * margin * torch.sigmoid((2 / margin) * (r + edge)) - margin


# ----------------------------------------------------------------------------- DBL boosting losses


def boost_rel(
    S: torch.Tensor,
    A: torch.Tensor,
    margin: float = 0.2,
    beta: float = 1.0,
    reduction: str = "max",
    soft_margin: str = "none",
    score_bound: float = 1.0,
) -> torch.Tensor:
    """DBL relative boosting L_rel (Relative-Max; ``reduction="sum"`` is Relative-Sum), summed.

        L_rel(S, A) = Σ_i max_{j≠i} [γ_ij + (A_ii − A_ij) − (S_ii − S_ij)]_+
                    + Σ_j max_{i≠j} [γ'_ij + (A_jj − A_ij) − (S_jj − S_ij)]_+

    γ = β·m. With ``soft_margin="none"`` γ_ij = γ'_ij = γ; otherwise (soft adaptation, detached)
    γ_ij = sup(A_ii − A_ij; γ, 2b) and γ'_ij = sup(A_jj − A_ij; γ, 2b), b = ``score_bound`` (1 for
    tanh/cosine scores), ``soft_margin`` picking the sigmoid or clip form. The max is over the
    combined hinge value, diagonal zeroed first. A is detached.
    """
    A = _check_pair("boost_rel", S, A)
    _check_choice("boost_rel", "reduction", reduction, REDUCTIONS)
    _check_choice("boost_rel", "soft_margin", soft_margin, SOFT_MARGINS)
    gamma = beta * margin
    gap_S_i2t = S.diag()[:, None] - S  # [i, j]: S_ii − S_ij
    gap_S_t2i = S.diag()[None, :] - S  # [i, j]: S_jj − S_ij
    gap_A_i2t = A.diag()[:, None] - A
    gap_A_t2i = A.diag()[None, :] - A
    if soft_margin == "none":
        margin_i2t = margin_t2i = gamma
    else:
        margin_i2t = soft_sup(gap_A_i2t, gamma, 2 * score_bound, soft_margin)
        margin_t2i = soft_sup(gap_A_t2i, gamma, 2 * score_bound, soft_margin)
    cost_i2t = (margin_i2t + gap_A_i2t - gap_S_i2t).clamp(min=0)
    cost_t2i = (margin_t2i + gap_A_t2i - gap_S_t2i).clamp(min=0)
    return _reduce_hinges(cost_i2t, cost_t2i, reduction)


def boost_abs(
    S: torch.Tensor,
    A: torch.Tensor,
    margin: float = 0.2,
    beta: float = 1.0,
    split: float = 0.5,
    reduction: str = "max",
    soft_margin: str = "none",
    score_bound: float = 1.0,
    *,
    gamma: float | None = None,
) -> torch.Tensor:
    """DBL absolute boosting L_abs (Absolute-Max; ``reduction="sum"`` is Absolute-Sum), summed.

        L_abs(S, A) = 2·Σ_i [γ1_i + A_ii − S_ii]_+
                    + Σ_i max_{j≠i} [γ2_ij + S_ij − A_ij]_+ + Σ_j max_{i≠j} [γ2_ij + S_ij − A_ij]_+

    γ = β·m, γ1 = g·γ, γ2 = (1 − g)·γ with g = ``split`` (``gamma=`` is accepted as an alias of
    ``split``, the reference's name). The positive term counts twice (the pair is the positive in
    both directions). Soft adaptation (detached): γ1_i = sup(A_ii; g·γ, b), γ2_ij = inf(A_ij;
    (1 − g)·γ, b), b = ``score_bound``; at g = 0.5 these are the spec's sup(A_ii; γ/2, 1) and
    inf(A_ij; γ/2, 1). A is detached.
    """
    A = _check_pair("boost_abs", S, A)
    _check_choice("boost_abs", "reduction", reduction, REDUCTIONS)
    _check_choice("boost_abs", "soft_margin", soft_margin, SOFT_MARGINS)
    if gamma is not None:
        if split != 0.5 and split != gamma:
            raise ValueError(
                f"strategies/losses.py boost_abs: split={split} and gamma={gamma} disagree; gamma is an alias "
                "of split (the absolute margin split g), pass only one"
            )
        split = gamma
    if not 0.0 <= split <= 1.0:
        raise ValueError(f"strategies/losses.py boost_abs: split must lie in [0, 1], got {split}")
    total = beta * margin
    margin_pos, margin_neg = split * total, (1.0 - split) * total
    if soft_margin != "none":
        margin_pos = soft_sup(A.diag(), margin_pos, score_bound, soft_margin)
        margin_neg = soft_inf(A, margin_neg, score_bound, soft_margin)
    cost_pos = (margin_pos + A.diag() - S.diag()).clamp(min=0).sum()
    cost_neg = (margin_neg + S - A).clamp(min=0)
    return 2 * cost_pos + _reduce_hinges(cost_neg, cost_neg, reduction)


# ----------------------------------------------------------------------------- distribution losses


def _kl_rows_and_columns(S: torch.Tensor, A: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(P(A) ‖ P(S)) per row, summed and divided by B ("batchmean"), plus the same on columns."""
    loss = S.new_zeros(())
    for s, a in ((S, A), (S.t(), A.t())):
        log_p_s = F.log_softmax(s / temperature, dim=1)
        log_p_a = F.log_softmax(a / temperature, dim=1)
        loss = loss + F.kl_div(log_p_s, log_p_a, reduction="batchmean", log_target=True)
    return loss


def kd(S: torch.Tensor, A: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Hinton-style distillation on similarity distributions, P(X) = softmax(X/τ) per row / column.

        L_kd = (1/B) Σ_i KL(P(A)_i· ‖ P(S)_i·) + (1/B) Σ_j KL(P(A)_·j ‖ P(S)_·j)

    Each direction is averaged over its B queries (batchmean); no τ² factor. A (teacher) detached.
    """
    A = _check_pair("kd", S, A)
    return _kl_rows_and_columns(S, A, temperature)


def dml(S: torch.Tensor, A: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Deep mutual learning, one peer's mimicry term (the strategy adds L_raw and makes it symmetric).

        L_dml = (1/B) Σ_i KL(P(A)_i· ‖ P(S)_i·) + (1/B) Σ_j KL(P(A)_·j ‖ P(S)_·j),  P = softmax(X/τ)

    batchmean in each direction; A (the other peer) detached.
    """
    A = _check_pair("dml", S, A)
    return _kl_rows_and_columns(S, A, temperature)


def dino(S: torch.Tensor, A: torch.Tensor, temperature: float = 0.1, reverse: bool = False,
         eps: float = 1e-8) -> torch.Tensor:
    """Contrastive self-distillation from a momentum teacher (DINO style, no centering), P = softmax(X/τ).

        reverse=False:  (1/B) Σ_i H(P(A)_i·, P(S)_i·) + (1/B) Σ_j H(P(A)_·j, P(S)_·j),
                        H(p, q) = −Σ_k p_k log q_k (cross-entropy, teacher as target);
        reverse=True:   (1/B) Σ_i KL(P(S)_i· ‖ P(A)_i·) + (1/B) Σ_j KL(P(S)_·j ‖ P(A)_·j),
                        the reverse KL (student distribution first; gradient flows through both the
                        weights P(S) and log P(S)), with the reference's smoothing ``eps`` (1e-8):
                        KL_eps(p ‖ q) = Σ_k p_k log(eps + p_k / (q_k + eps)); ``eps=0`` gives the
                        exact KL, computed from log-probabilities. They differ where the teacher
                        saturates (q_k → 0 while p_k > 0): the exact term grows without bound, the
                        smoothed one is capped near log(1/eps).

    Same temperature for teacher and student. A (teacher) detached.
    """
    if eps < 0:
        raise ValueError(f"strategies/losses.py dino: eps must be ≥ 0, got {eps}")
    A = _check_pair("dino", S, A)
    loss = S.new_zeros(())
    for s, a in ((S, A), (S.t(), A.t())):
        log_p_s = F.log_softmax(s / temperature, dim=1)
        log_p_a = F.log_softmax(a / temperature, dim=1)
        if reverse and eps > 0:
            p_s = log_p_s.exp()
            per_query = (p_s * torch.log(eps + p_s / (log_p_a.exp() + eps))).sum(dim=1)
        elif reverse:
            per_query = (log_p_s.exp() * (log_p_s - log_p_a)).sum(dim=1)
        else:
            per_query = -(log_p_a.exp() * log_p_s).sum(dim=1)
        loss = loss + per_query.mean()
    return loss


def infonce(S: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """CLIP's symmetric InfoNCE, averaged over rows:  ½[CE(e^s·S, diag) + CE(e^s·Sᵀ, diag)].

    ``logit_scale`` is s, the *log* of the inverse temperature (a tensor receives gradient).
    """
    _check_square("infonce", "S", S)
    scale = torch.as_tensor(logit_scale, dtype=S.dtype, device=S.device).exp()
    labels = torch.arange(S.shape[0], device=S.device)
    logits = scale * S
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


# ----------------------------------------------------------------------------- conventional distillation


def rkd(S: torch.Tensor, A: torch.Tensor, weight: float = 10.0) -> torch.Tensor:
    """Relational KD, distance term on score matrices: weight · mean_ij SmoothL1(S_ij − A_ij) (β = 1).

    A (teacher) detached.
    """
    A = _check_pair("rkd", S, A)
    return weight * F.smooth_l1_loss(S, A, reduction="mean")


def sp(S: torch.Tensor, A: torch.Tensor, weight: float = 10.0) -> torch.Tensor:
    """Similarity-preserving KD on score matrices.

    Ŝ, Â = row-L2-normalised S, A;  Ŝ', Â' = row-L2-normalised Ŝᵀ, Âᵀ (transposes of the normalised
    matrices, as in the reference):

        L_sp = weight · [ (1/B) Σ_i ‖Â_i − Ŝ_i‖² + (1/B) Σ_i ‖Â'_i − Ŝ'_i‖² ]

    A (teacher) detached.
    """
    A = _check_pair("sp", S, A)
    S_hat, A_hat = F.normalize(S, dim=1), F.normalize(A, dim=1)
    S_hat_t, A_hat_t = F.normalize(S_hat.t(), dim=1), F.normalize(A_hat.t(), dim=1)
    loss = (A_hat - S_hat).pow(2).sum(dim=1).mean() + (A_hat_t - S_hat_t).pow(2).sum(dim=1).mean()
    return weight * loss


def _darkrank_rows(S: torch.Tensor, A: torch.Tensor, order: str, alpha: float, power: float, top_k: int):
    if order == "similarity":  # the reference: Z = −α·X^p applied directly to similarities
        z_S, z_A = -alpha * S.pow(power), -alpha * A.pow(power)
    else:  # DarkRank's design: Z = −α·d^p on distances d = 1 − X
        z_S, z_A = -alpha * (1 - S).pow(power), -alpha * (1 - A).pow(power)
    ranked = z_A.argsort(dim=1, descending=True)[:, 1 : top_k + 1]  # skip rank 0
    z = torch.gather(z_S, 1, ranked)  # student scores in the teacher's order [B, k]
    log_norm = torch.logcumsumexp(z.flip(1), dim=1).flip(1)  # logsumexp(z_k, ..., z_K)
    return -(z - log_norm).sum(dim=1).mean()


def darkrank(
    S: torch.Tensor,
    A: torch.Tensor,
    order: str = "similarity",
    alpha: float = 3.0,
    power: float = 3.0,
    top_k: int = 4,
) -> torch.Tensor:
    """DarkRank listwise transfer (Plackett–Luce), rows plus columns.

    Per row: Z = −α·D^p (α = 3, p = 3); sort the teacher's Z descending, skip rank 0, keep the next
    ``top_k`` indices π_1..π_K (fewer when B − 1 < K); with z_k = Z^S at π_k,

        L_row = −Σ_k [z_k − log Σ_{l ≥ k} exp(z_l)],   averaged over rows;  L = L_row(S, A) + L_row(Sᵀ, Aᵀ)

    ``order`` picks D:
      - "similarity" (default): D = X, the similarity itself, exactly as the reference code. Since
        −α·X³ decreases in X, the "top" of the ranking is then the *least* similar items: rank 0
        (usually the hardest-to-confuse negative) is skipped and the next least-similar ones are
        ranked. This inverts the ranking DarkRank was designed for, but it is what the compared
        numbers were produced with, so it is the default for reproducing the paper's comparison.
      - "distance": D = 1 − X (cosine distance), DarkRank's design: nearest items rank first, rank 0
        (normally the positive, like the query itself in the original) is skipped and the next
        ``top_k`` nearest neighbours are ranked.

    A (teacher) detached.
    """
    A = _check_pair("darkrank", S, A)
    _check_choice("darkrank", "order", order, DARKRANK_ORDERS)
    if top_k < 1:
        raise ValueError(f"strategies/losses.py darkrank: top_k must be ≥ 1, got {top_k}")
    return _darkrank_rows(S, A, order, alpha, power, top_k) + _darkrank_rows(S.t(), A.t(), order, alpha, power, top_k)


LOSSES = {
    "triplet": triplet,
    "infonce": infonce,
    "boost_abs": boost_abs,
    "boost_rel": boost_rel,
    "kd": kd,
    "rkd": rkd,
    "sp": sp,
    "darkrank": darkrank,
    "dml": dml,
    "dino": dino,
}
