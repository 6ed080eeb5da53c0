"""strategies/losses.py: hand-computed values on 2×2 / 3×3 matrices, gradients, zero cases, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from strategies import losses as L


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def close(value, expected, tol=1e-9):
    assert float(value) == pytest.approx(expected, abs=tol)


def softplus(x):
    return math.log1p(math.exp(x))


# Shared 3×3 triplet example. margin m = 0.2.
# image→text rows, cost [m + S_ij − S_ii]_+ :
#   row 0 (S_00=.9): j1 .2+.3−.9<0 → 0 ; j2 .2+.8−.9 = .1
#   row 1 (S_11=.6): j0 .2+.5−.6 = .1  ; j2 .2+.1−.6<0 → 0
#   row 2 (S_22=.4): j0 .2+.5−.4 = .3  ; j1 .2+.7−.4 = .5
# text→image columns, cost [m + S_ij − S_jj]_+ :
#   col 0 (S_00=.9): i1 .2+.5−.9<0 ; i2 .2+.5−.9<0 → 0
#   col 1 (S_11=.6): i0 .2+.3−.6<0 ; i2 .2+.7−.6 = .3
#   col 2 (S_22=.4): i0 .2+.8−.4 = .6 ; i1 .2+.1−.4<0
# max: (.1 + .1 + .5) + (0 + .3 + .6) = 1.6 ; sum: (.1 + .1 + .3 + .5) + (0 + .3 + .6) = 1.9
S3 = [[0.9, 0.3, 0.8], [0.5, 0.6, 0.1], [0.5, 0.7, 0.4]]


def test_triplet_max_vs_sum():
    close(L.triplet(t(S3), margin=0.2, max_violation=True), 1.6)
    close(L.triplet(t(S3), margin=0.2, max_violation=False), 1.9)


def test_triplet_zero_when_well_separated():
    S = 2 * torch.eye(4, dtype=torch.float64) - 1  # positives 1, negatives −1: every hinge 0.2 − 2 < 0
    close(L.triplet(S), 0.0)
    close(L.triplet(S, max_violation=False), 0.0)


# Shared 2×2 boosting example: S target, A anchor.
S2 = [[0.5, 0.4], [0.1, 0.6]]
A2 = [[0.8, 0.2], [0.3, 0.7]]


def test_boost_rel_hand_computed():
    # γ = β·m = 0.2. i2t [γ + (A_ii − A_ij) − (S_ii − S_ij)]_+:
    #   (0,1): .2 + (.8−.2) − (.5−.4) = .7 ;  (1,0): .2 + (.7−.3) − (.6−.1) = .1
    # t2i [γ + (A_jj − A_ij) − (S_jj − S_ij)]_+:
    #   (0,1): .2 + (.7−.2) − (.6−.4) = .5 ;  (1,0): .2 + (.8−.3) − (.5−.1) = .3
    close(L.boost_rel(t(S2), t(A2)), 0.7 + 0.1 + 0.5 + 0.3)
    # β = 0.5 → γ = 0.1: every term 0.1 smaller
    close(L.boost_rel(t(S2), t(A2), beta=0.5), 0.6 + 0.0 + 0.4 + 0.2)
    # B = 2: one negative per query, so max and sum agree
    close(L.boost_rel(t(S2), t(A2), reduction="sum"), 1.6)


def test_boost_rel_is_triplet_with_anchor_margins():
    # A constant → A_ii − A_ij = 0, the per-pair margin is just γ: L_rel(S, c) = L_raw(S; m = γ)
    S = t(S3)
    A = torch.full_like(S, 0.3)
    close(L.boost_rel(S, A, margin=0.2, beta=1.5), float(L.triplet(S, margin=0.3)))
    close(L.boost_rel(S, A, reduction="sum"), float(L.triplet(S, max_violation=False)))


def test_boost_rel_sum_differs_from_max():
    A = torch.zeros(3, 3, dtype=torch.float64)
    close(L.boost_rel(t(S3), A, reduction="max"), 1.6)  # = triplet max (see S3 arithmetic)
    close(L.boost_rel(t(S3), A, reduction="sum"), 1.9)  # = triplet sum


def test_boost_rel_soft_clip_margin():
    # S = 0 so the target gaps vanish; relative margins min(γ, 2 − gap_A) with γ = .2:
    # i2t (0,1): gap .95+.95 = 1.9 → margin min(.2, .1) = .1 → cost .1 + 1.9 = 2.0
    #     (1,0): gap .5 − 0 = .5   → .2 → .7
    # t2i (0,1): gap A_11 − A_01 = .5+.95 = 1.45 → .2 → 1.65 ; (1,0): A_00 − A_10 = .95 → .2 → 1.15
    S = torch.zeros(2, 2, dtype=torch.float64)
    A = t([[0.95, -0.95], [0.0, 0.5]])
    close(L.boost_rel(S, A, soft_margin="clip"), 2.0 + 0.7 + 1.65 + 1.15)
    close(L.boost_rel(S, A, soft_margin="none"), 2.1 + 0.7 + 1.65 + 1.15)


def test_boost_abs_hand_computed_and_alias():
    # γ = .2, g = .5 → γ1 = γ2 = .1
    # positive: 2·([.1 + .8 − .5]_+ + [.1 + .7 − .6]_+) = 2·(.4 + .2) = 1.2
    # negative [.1 + S_ij − A_ij]_+: (0,1) .1+.4−.2 = .3 ; (1,0) .1+.1−.3 < 0 → 0
    #   row maxima .3 + 0, column maxima 0 + .3 → .6
    close(L.boost_abs(t(S2), t(A2)), 1.2 + 0.6)
    # g = .25 → γ1 = .05, γ2 = .15: positive 2·(.35 + .15) = 1.0 ; negative (0,1) .35 twice → .7
    close(L.boost_abs(t(S2), t(A2), split=0.25), 1.0 + 0.7)
    close(L.boost_abs(t(S2), t(A2), 0.2, 1.0, 0.25), 1.7)  # the positional signature
    close(L.boost_abs(t(S2), t(A2), margin=0.2, beta=1.0, gamma=0.25), 1.7)  # gamma = alias of split
    with pytest.raises(ValueError, match="alias"):
        L.boost_abs(t(S2), t(A2), split=0.3, gamma=0.25)


def test_boost_abs_positive_term_counts_twice():
    # Negatives far below the anchor (S_ij = −1, A_ij = .5): every negative hinge is 0, only
    # 2·Σ_i [γ1 + A_ii − S_ii]_+ = 2·((.1 + .8 − .3) + (.1 + .6 − .5)) = 2·(.6 + .2) = 1.6 remains
    S = t([[0.3, -1.0], [-1.0, 0.5]])
    A = t([[0.8, 0.5], [0.5, 0.6]])
    close(L.boost_abs(S, A), 1.6)
    close(L.boost_abs(S, A, reduction="sum"), 1.6)


def test_boost_abs_sum_over_negatives():
    # S = 0, A = 0 off the diagonal and diagonal 1 with γ2 = .1: negative hinges all .1 + 0 − 0 = .1,
    # positive 2·Σ[.1 + 1 − 0] = 2·3·1.1 = 6.6. max: 3·.1 + 3·.1 = .6 ; sum: 6·.1 + 6·.1 = 1.2
    S = torch.zeros(3, 3, dtype=torch.float64)
    A = torch.eye(3, dtype=torch.float64)
    close(L.boost_abs(S, A, reduction="max"), 6.6 + 0.6)
    close(L.boost_abs(S, A, reduction="sum"), 6.6 + 1.2)


def test_boost_abs_soft_margins_vanish_at_the_bound():
    # A at the score bounds: A_ii = 1 → sup(1; .1, 1) = 0 ; A_ij = −1 → inf(−1; .1, 1) = 0.
    # S = 0: positive 2·Σ[0 + 1 − 0] = 4 ; negatives [0 + 0 + 1] = 1, row maxima 2 + column maxima 2 = 4
    S = torch.zeros(2, 2, dtype=torch.float64)
    A = t([[1.0, -1.0], [-1.0, 1.0]])
    close(L.boost_abs(S, A, soft_margin="sigmoid"), 8.0)
    close(L.boost_abs(S, A, soft_margin="clip"), 8.0)
    # hard margins .1: positive 2·2·1.1 = 4.4, negatives 4·1.1 = 4.4
    close(L.boost_abs(S, A, soft_margin="none"), 8.8)


def test_soft_sup_inf_values():
    mu = 0.1
    r = t([1.0, -1.0, 1.0 - 0.05 * math.log(3.0), 0.95, 0.0])
    sup = L.soft_sup(r, mu, 1.0)
    close(sup[0], 0.0)  # at the bound: 2μ·σ(0) − μ = 0
    close(sup[1], mu, 1e-12)  # far below: 2μ·σ(40) − μ ≈ μ
    # (2/μ)(e − r) = ln 3 → σ(ln 3) = 3/4 → 2μ·3/4 − μ = μ/2
    close(sup[2], mu / 2)
    clip = L.soft_sup(r, mu, 1.0, form="clip")
    close(clip[3], 0.05)  # min(.1, 1 − .95)
    close(clip[4], 0.1)  # min(.1, 1 − 0)
    inf = L.soft_inf(-r, mu, 1.0)  # mirror: inf(−r; μ, e) = sup(r; μ, e)
    torch.testing.assert_close(inf, sup)
    close(L.soft_inf(t([-0.95]), mu, 1.0, form="clip")[0], 0.05)  # min(.1, 1 − .95)
    close(L.soft_inf(t([0.5]), mu, 1.0, form="clip")[0], 0.1)
    close(L.soft_sup(t([0.3]), 0.0, 1.0)[0], 0.0)  # zero margin stays zero (no 2/μ blow-up)


def test_soft_margins_are_detached():
    r = torch.tensor([0.2, 0.5], requires_grad=True)
    assert not L.soft_sup(r, 0.1, 1.0).requires_grad
    assert not L.soft_inf(r, 0.1, 1.0, form="clip").requires_grad


def test_boost_zero_when_target_beats_anchor():
    A = t([[0.2, 0.1], [0.0, 0.3]])
    S = t([[0.9, -0.9], [-0.9, 0.9]])  # positives ≫ A_ii + γ, negatives ≪ A_ij − γ
    close(L.boost_abs(S, A), 0.0)
    close(L.boost_rel(S, A), 0.0)
    close(L.boost_rel(S, A, soft_margin="sigmoid"), 0.0)


def explicit_kl_rows_cols(S, A, tau):
    total = 0.0
    for s, a in ((S, A), (S.t(), A.t())):
        p = torch.exp(a / tau) / torch.exp(a / tau).sum(1, keepdim=True)
        q = torch.exp(s / tau) / torch.exp(s / tau).sum(1, keepdim=True)
        total += float((p * (p.log() - q.log())).sum() / s.shape[0])
    return total


def test_kd_and_dml_match_explicit_kl():
    g = torch.Generator().manual_seed(0)
    S = torch.rand(4, 4, generator=g, dtype=torch.float64) * 2 - 1
    A = torch.rand(4, 4, generator=g, dtype=torch.float64) * 2 - 1
    close(L.kd(S, A), explicit_kl_rows_cols(S, A, 0.1))
    close(L.dml(S, A), explicit_kl_rows_cols(S, A, 0.1))
    close(L.kd(S, A, temperature=0.5), explicit_kl_rows_cols(S, A, 0.5))
    close(L.kd(S, S), 0.0)


def test_kd_2x2_by_hand():
    # τ = 1, A = [[ln 3, 0], [0, 0]], S = 0. Row 0: P(A) = (3/4, 1/4), P(S) = (1/2, 1/2);
    # KL = 3/4·ln(3/2) + 1/4·ln(1/2). Row 1: uniform vs uniform → 0. Columns: col 0 = (ln 3, 0) same as
    # row 0, col 1 = (0, 0) → 0. batchmean (/2) per direction: total = 2·KL_row0/2 = KL_row0
    A = t([[math.log(3.0), 0.0], [0.0, 0.0]])
    S = torch.zeros(2, 2, dtype=torch.float64)
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    close(L.kd(S, A, temperature=1.0), expected)


def test_rkd_weight_and_value():
    # differences .5 (quadratic zone: .5·.5² = .125) and 2 (linear zone: 2 − .5 = 1.5), others 0
    # mean over 4 entries = (.125 + 1.5)/4 = .40625 ; ×10
    S = t([[0.5, 0.0], [2.0, 0.0]])
    A = torch.zeros(2, 2, dtype=torch.float64)
    close(L.rkd(S, A), 4.0625)
    close(L.rkd(S, A, weight=1.0), 0.40625)
    close(L.rkd(A, A), 0.0)


def test_sp_value():
    # S rows (3,4)/5 and (1,0); A rows (1,0) and (1,0).
    # rows: ‖(1,0) − (.6,.8)‖² = .16 + .64 = .8 ; second 0 → mean .4
    # transposes of the normalised matrices: Ŝᵀ = [[.6, 1], [.8, 0]] → rows (.6,1)/√1.36, (1,0)
    #   Âᵀ = [[1, 1], [0, 0]] → rows (1,1)/√2, (0,0) (normalize leaves the zero row at 0)
    S = t([[3.0, 4.0], [1.0, 0.0]])
    A = t([[1.0, 0.0], [1.0, 0.0]])
    a = torch.tensor([0.6, 1.0], dtype=torch.float64) / math.sqrt(1.36)
    b = torch.tensor([1.0, 1.0], dtype=torch.float64) / math.sqrt(2.0)
    row0_t = float(((a - b) ** 2).sum())
    row1_t = 1.0  # ‖(0,0) − (1,0)‖²
    expected = 0.4 + (row0_t + row1_t) / 2
    close(L.sp(S, A, weight=1.0), expected)
    close(L.sp(S, A), 10 * expected)
    close(L.sp(S, 2 * S), 0.0)  # scale-invariant per row


# DarkRank on a 3×3 where every row and every column holds {.9, .6, 0} (a Latin square), S = A, top_k = 2.
DR = [[0.9, 0.6, 0.0], [0.0, 0.9, 0.6], [0.6, 0.0, 0.9]]


def test_darkrank_orders_differ_by_hand():
    # "similarity": Z = −3x³: .9 → −2.187, .6 → −.648, 0 → 0. Descending Z: [0, .6, .9]; skip rank 0 (x=0),
    #   keep (.6, .9): −[z1 − lse(z1, z2)] − [z2 − lse(z2)] = softplus(z2 − z1) = softplus(−2.187 + .648)
    # "distance": Z = −3(1−x)³: .9 → −.003, .6 → −.192, 0 → −3. Descending: [.9, .6, 0]; skip .9,
    #   keep (.6, 0): softplus(−3 + .192)
    # Every row and every column is alike: mean over rows = one row, plus the columns → ×2
    S = t(DR)
    close(L.darkrank(S, S, order="similarity", top_k=2), 2 * softplus(-2.187 + 0.648))
    close(L.darkrank(S, S, order="distance", top_k=2), 2 * softplus(-3.0 + 0.192))


def plackett_luce_loop(S, A, transform, k):
    total = 0.0
    for s, a in ((S, A), (S.t(), A.t())):
        rows = []
        for i in range(s.shape[0]):
            za, zs = [transform(float(x)) for x in a[i]], [transform(float(x)) for x in s[i]]
            order = sorted(range(len(za)), key=lambda j: -za[j])[1 : k + 1]
            z = [zs[j] for j in order]
            rows.append(-sum(z[n] - math.log(sum(math.exp(v) for v in z[n:])) for n in range(len(z))))
        total += sum(rows) / len(rows)
    return total


def test_darkrank_default_top4_matches_loop():
    g = torch.Generator().manual_seed(1)
    S = torch.rand(6, 6, generator=g, dtype=torch.float64) * 2 - 1
    A = torch.rand(6, 6, generator=g, dtype=torch.float64) * 2 - 1
    close(L.darkrank(S, A), plackett_luce_loop(S, A, lambda x: -3 * x**3, 4))
    close(L.darkrank(S, A, order="distance"), plackett_luce_loop(S, A, lambda x: -3 * (1 - x) ** 3, 4))


def test_dino_matches_cross_entropy():
    g = torch.Generator().manual_seed(2)
    S = torch.rand(4, 4, generator=g, dtype=torch.float64)
    A = torch.rand(4, 4, generator=g, dtype=torch.float64)
    tau = 0.1
    expected = F.cross_entropy(S / tau, F.softmax(A / tau, 1)) + F.cross_entropy(S.t() / tau, F.softmax(A.t() / tau, 1))
    close(L.dino(S, A), float(expected))
    # reverse: mean_i KL(P(S)_i ‖ P(A)_i) + columns
    rev = 0.0
    for s, a in ((S, A), (S.t(), A.t())):
        p_s, p_a = F.softmax(s / tau, 1), F.softmax(a / tau, 1)
        rev += float((p_s * (p_s.log() - p_a.log())).sum(1).mean())
    close(L.dino(S, A, reverse=True, eps=0.0), rev)
    close(L.dino(S, S, reverse=True, eps=0.0), 0.0)
    close(L.dino(S, A, reverse=True), rev, tol=1e-4)  # the reference's eps: a small change here


def _reference_reverse_kl(S, A, tau=0.1, eps=1e-8):
    """The DBL MSS program's reverse-KL term, from its description: softmax probabilities of the
    student p and the teacher q per row (then per column), Σ_k p_k log(eps + p_k / (q_k + eps)),
    averaged over the queries, both directions added."""
    total = 0.0
    for s, a in ((S, A), (S.t(), A.t())):
        p, q = torch.softmax(s / tau, dim=-1), torch.softmax(a / tau, dim=-1)
        total += float((p * torch.log(eps + p / (q + eps))).sum(1).mean())
    return total


def test_reverse_kl_keeps_the_reference_eps_with_saturated_teacher():
    # A saturated teacher: one column far above the others, so its softmax gives the rest ~1e-30;
    # the student is spread out. The exact KL and the reference's eps-smoothed one then differ.
    g = torch.Generator().manual_seed(4)
    S = torch.rand(6, 6, generator=g, dtype=torch.float64) * 0.4
    A = torch.full((6, 6), -1.0, dtype=torch.float64)
    A.fill_diagonal_(1.0)
    A[:, 0] += 6.0
    ours = float(L.dino(S, A, reverse=True))
    assert ours == pytest.approx(_reference_reverse_kl(S, A), rel=1e-12)
    exact = float(L.dino(S, A, reverse=True, eps=0.0))
    assert abs(exact - ours) / ours > 0.05  # what dropping the eps changed (issue 11, defect 9)
    # float32 saturates to exact zeros: still finite, still the reference value
    ours32 = float(L.dino(S.float(), A.float(), reverse=True))
    assert ours32 == pytest.approx(_reference_reverse_kl(S.float(), A.float()), rel=1e-4)
    with pytest.raises(ValueError, match="eps"):
        L.dino(S, A, reverse=True, eps=-1.0)


def test_dino_2x2_by_hand():
    # τ = 1, A = 0 → uniform teacher (½, ½); S = [[ln 3, 0], [0, ln 3]]: student rows (3/4, 1/4), (1/4, 3/4)
    # H = −½ ln(3/4) − ½ ln(1/4) per row, same for columns → 2·H
    S = t([[math.log(3.0), 0.0], [0.0, math.log(3.0)]])
    A = torch.zeros(2, 2, dtype=torch.float64)
    H = -0.5 * math.log(0.75) - 0.5 * math.log(0.25)
    close(L.dino(S, A, temperature=1.0), 2 * H)


def test_infonce():
    # logit_scale 0 → scale 1; S = I: each row CE = −log(e/(e+1)) = log(1 + e^{−1}); both directions alike
    S = torch.eye(2, dtype=torch.float64)
    close(L.infonce(S, 0.0), math.log1p(math.exp(-1.0)))
    g = torch.Generator().manual_seed(3)
    S = torch.rand(5, 5, generator=g, dtype=torch.float64)
    s = torch.tensor(math.log(1 / 0.07), dtype=torch.float64, requires_grad=True)
    labels = torch.arange(5)
    expected = 0.5 * (F.cross_entropy(s.exp() * S, labels) + F.cross_entropy(s.exp() * S.t(), labels))
    loss = L.infonce(S, s)
    close(loss.detach(), float(expected.detach()))
    loss.backward()
    assert s.grad is not None and s.grad.abs() > 0


TWO_BRANCH = [
    ("boost_abs", {}),
    ("boost_abs", {"soft_margin": "sigmoid", "reduction": "sum"}),
    ("boost_rel", {}),
    ("boost_rel", {"soft_margin": "clip"}),
    ("kd", {}),
    ("rkd", {}),
    ("sp", {}),
    ("darkrank", {}),
    ("darkrank", {"order": "distance"}),
    ("dml", {}),
    ("dino", {}),
    ("dino", {"reverse": True}),
]


@pytest.mark.parametrize("name,kw", TWO_BRANCH)
def test_gradient_never_reaches_the_anchor(name, kw):
    g = torch.Generator().manual_seed(4)
    S = (torch.rand(6, 6, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_()
    A = (torch.rand(6, 6, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_()
    loss = L.LOSSES[name](S, A, **kw)
    assert loss.dim() == 0 and float(loss.detach()) > 0
    loss.backward()
    assert A.grad is None or torch.all(A.grad == 0)
    assert S.grad is not None and S.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(L.LOSSES))
def test_shapes_validated(name):
    fn = L.LOSSES[name]
    args = (0.0,) if name == "infonce" else ()
    square = torch.zeros(3, 3)
    for bad in (torch.zeros(3, 4), torch.zeros(3), torch.zeros(2, 3, 3)):
        with pytest.raises(ValueError, match="square"):
            fn(bad, *args) if name in ("triplet", "infonce") else fn(bad, square)
    if name not in ("triplet", "infonce"):
        with pytest.raises(ValueError, match="same shape"):
            fn(square, torch.zeros(4, 4))


def test_bad_options_raise():
    S = torch.zeros(3, 3)
    for call in (
        lambda: L.boost_rel(S, S, reduction="mean"),
        lambda: L.boost_abs(S, S, soft_margin="tanh"),
        lambda: L.darkrank(S, S, order="rank"),
        lambda: L.boost_abs(S, S, split=1.5),
        lambda: L.soft_sup(S, 0.1, 1.0, form="soft"),
    ):
        with pytest.raises(ValueError):
            call()
