"""The statistics behind every verdict of a suite: ΔRSUM intervals, P(X > baseline), Holm, seeds.

Tables (``bench.harness.collect``), figures (``bench.harness.figures``) and the suite's W&B summary
all take their numbers from here.

What ΔRSUM's interval covers
----------------------------
A suite asks whether strategy X beats the baseline *as a training recipe*: over the training runs
one would get with other seeds, and over the test queries one could have drawn. Both vary. For seed
s (X and the baseline trained with the same seed, evaluated on the same test set) let
Δ_s = RSUM_X,s − RSUM_base,s, computed from the per-query ranks. Then

    ΔRSUM = mean_s Δ_s                       (the point estimate: the difference of the mean RSUMs)
    SE²   = sd(Δ_s)² / S  +  V_c             (S = paired seeds, sd with ddof = 1)
    CI    = ΔRSUM ± t_{S−1, (1+level)/2} · SE (Student's t from scipy.stats)

``sd(Δ_s)²/S`` is the variance between training runs; it already holds the part of the query noise
that differs from seed to seed. ``V_c`` is the part of the test-set variance common to every seed
(X may be better on these particular images): with V̄ the bootstrap variance of the seed-averaged
ΔRSUM and V_s that of seed s alone, under resampling of the test set, V_c = (S·V̄ − mean_s V_s)/(S − 1)
(clipped at 0), so nothing is counted twice. The bootstrap (``scipy.stats.bootstrap``, ``n_boot``
resamples, fixed ``seed``; ``n_boot=0``: its closed-form limit) resamples images with their 5
captions as one unit: they share the picture (an image X retrieves well, its captions tend to
retrieve it well too), so resampling captions independently understates the variance. Per image i
and seed s, d_s(i) = Δc_i2t,s(i) + (1/5)·Σ_{its captions} Δc_t2i,s with c(q) = #{K ∈ {1,5,10}:
rank(q) < K}, and Δ_s = 100·mean_i d_s(i). When the captions are not 5 per image (M not a multiple
of N), images and captions are resampled independently.

Why this interval (the simulation of ``tests/test_stats.py``; ``docs/verdicts.md``): 1,000 images ×
5,000 captions, a seed-level random effect on each run's skill (seed sd of RSUM ≈ 3 or ≈ 12 points
on one test set), image-level effects exchangeable between X and the baseline (an exact null with a
test-set component common to the seeds), no true difference; 400 experiments per cell, share of the
95% intervals covering 0 (seed sd ≈ 3 / ≈ 12):

    seeds   queries only (old)   seeds, then images   t, seeds only   t, Satterthwaite df   this
      2        0.79 / 0.25          0.93 / 0.67        0.94 / 0.95       0.94 / 0.88       1.00 / 0.97
      3        0.80 / 0.26          0.95 / 0.74        0.94 / 0.94       0.96 / 0.92       0.99 / 0.96
      5        0.83 / 0.25          0.96 / 0.88        0.94 / 0.96       0.97 / 0.96       0.99 / 0.97
     10        0.86 / 0.37          0.97 / 0.94        0.87 / 0.97       0.97 / 0.98       0.98 / 0.98

The old interval (queries only) and a two-level bootstrap (seeds, then images) are too narrow as
soon as seeds disagree: a bootstrap over 2 to 5 seeds cannot see the tails of the seed
distribution. A t-interval over the per-seed deltas alone misses the test set shared by every seed
(0.87 at 10 seeds). Welch–Satterthwaite degrees of freedom give narrower intervals but fall to 0.88
with 2 seeds, where the sd of 2 deltas is itself a guess. The chosen interval keeps S − 1 degrees of
freedom and both variances: it covers 0 in ≥ 95% of the experiments at every setting above
(conservative at small seed variance). With one seed the seed variance is unknown: ``delta_ci``
returns the delta and NaN bounds (tables print ``n=1: no interval``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize
from scipy import stats as sps

LEVEL = 0.95
ALPHA = 0.05
POWER = 0.8
N_BOOT = 1000  # image-cluster bootstrap resamples of the test-set variance (every table, figure and W&B summary)


def recall_hits(ranks: np.ndarray) -> np.ndarray:
    """c(q) = number of K ∈ {1, 5, 10} with rank(q) < K (0-based ranks), so RSUM = 100·Σ mean c."""
    r = np.asarray(ranks)
    return (r < 1).astype(np.int8) + (r < 5) + (r < 10)


def rsum_from_ranks(i2t: np.ndarray, t2i: np.ndarray) -> float:
    return float(100 * (recall_hits(i2t).mean() + recall_hits(t2i).mean()))


def _query_deltas(pairs) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed, per-query differences of c (strategy − baseline): ([S, N], [S, M])."""
    if not pairs:
        raise ValueError("no (strategy ranks, baseline ranks) pair: ΔRSUM needs at least one paired seed")
    d_i2t, d_t2i = [], []
    for s, (a, b) in enumerate(pairs):
        for key in ("i2t", "t2i"):
            if np.shape(a[key]) != np.shape(b[key]):
                raise ValueError(f"seed pair {s}: {key} ranks of the strategy {np.shape(a[key])} and the baseline "
                                 f"{np.shape(b[key])} differ in length: they were not evaluated on the same test set")
        d_i2t.append(recall_hits(a["i2t"]) - recall_hits(b["i2t"]).astype(float))
        d_t2i.append(recall_hits(a["t2i"]) - recall_hits(b["t2i"]).astype(float))
    return np.asarray(d_i2t), np.asarray(d_t2i)


def per_seed_deltas(pairs) -> np.ndarray:
    """ΔRSUM of each seed pair, in the order given."""
    d_i2t, d_t2i = _query_deltas(pairs)
    return 100 * (d_i2t.mean(axis=1) + d_t2i.mean(axis=1))


def _query_variances(pairs, n_boot: int, seed: int) -> tuple[float, np.ndarray]:
    """Bootstrap variances under resampling of the test set (image clusters): of the seed-averaged
    ΔRSUM, and of each seed's ΔRSUM (``n_boot`` resamples; 0: their closed-form limit)."""
    d_i2t, d_t2i = _query_deltas(pairs)
    mi = 100 * np.vstack([d_i2t, d_i2t.mean(axis=0, keepdims=True)])  # rows: seeds, then their mean
    mt = 100 * np.vstack([d_t2i, d_t2i.mean(axis=0, keepdims=True)])
    n, m = mi.shape[1], mt.shape[1]
    if m and n and m % n == 0:  # caption c belongs to image c // (m / n): one cluster per image
        data = (mi + mt.reshape(len(mt), n, m // n).mean(axis=2),)

        def statistic(x, axis=-1):
            return np.mean(x, axis=axis)
    else:
        data = (mi, mt)

        def statistic(x, y, axis=-1):
            return np.mean(x, axis=axis) + np.mean(y, axis=axis)
    if all(np.ptp(x) == 0 for x in data):  # every resample gives the same values
        return 0.0, np.zeros(len(mi) - 1)
    if n_boot == 0:  # the bootstrap's limit for infinitely many resamples: Var(cluster means) / n
        var = sum(np.var(x, axis=-1) / x.shape[-1] for x in data)
        return float(var[-1]), var[:-1]
    res = sps.bootstrap(data, statistic, n_resamples=n_boot, vectorized=True, paired=False, axis=-1,
                        method="percentile", rng=np.random.default_rng(seed))
    var = np.asarray(res.standard_error, dtype=float) ** 2
    return float(var[-1]), var[:-1]


def query_se(pairs, n_boot: int = N_BOOT, seed: int = 0) -> float:
    """Standard error of the seed-averaged ΔRSUM under resampling of the test set (image clusters).

    An image and its captions (caption c belongs to image c // (M / N)) are resampled together;
    when M is not a multiple of N, images and captions are resampled independently.
    """
    return math.sqrt(_query_variances(pairs, n_boot, seed)[0])


def common_query_variance(pairs, n_boot: int = N_BOOT, seed: int = 0) -> float:
    """The test-set variance common to every seed (needs ≥ 2 seeds): V_c = (S·V̄ − mean_s V_s)/(S − 1),
    V̄ the bootstrap variance of the seed-averaged ΔRSUM, V_s that of seed s alone; clipped at 0."""
    v_avg, v_seeds = _query_variances(pairs, n_boot, seed)
    s = len(v_seeds)
    if s < 2:
        raise ValueError("the common test-set variance needs at least 2 seed pairs")
    return max(0.0, (s * v_avg - float(v_seeds.mean())) / (s - 1))


def prob_improvement(deltas) -> float:
    """P(X > baseline) over the seed pairs (Bouthillier et al. 2021): share of pairs with Δ_s > 0,
    ties counted one half. NaN without pairs."""
    d = np.asarray(deltas, dtype=float)
    if not len(d):
        return math.nan
    return float(np.mean((d > 0) + 0.5 * (d == 0)))


@dataclass(frozen=True)
class DeltaStats:
    """Everything the tables, figures and W&B say about one strategy against its baseline."""

    delta: float  # mean over seed pairs of the paired ΔRSUM
    low: float  # interval bounds (NaN with one seed)
    high: float
    n: int  # paired seeds
    per_seed: tuple[float, ...] = field(default=())  # Δ_s in the order of the pairs
    seed_sd: float = math.nan  # sd of Δ_s (ddof = 1)
    query_se: float = math.nan  # the test set's standard error common to every seed (image clusters)
    se: float = math.nan  # the combined standard error
    df: float = math.nan  # degrees of freedom of the t quantile (S − 1)
    p_value: float = math.nan  # two-sided, H0: ΔRSUM = 0, same t statistic
    p_improve: float = math.nan  # P(X > baseline) over seed pairs
    level: float = LEVEL

    @property
    def has_interval(self) -> bool:
        return self.n >= 2 and not math.isnan(self.low)


def delta_stats(pairs, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> DeltaStats:
    """ΔRSUM of ``strategy − baseline`` with its interval, p-value and P(X > baseline) (module docstring).

    ``pairs``: one ``(strategy ranks, baseline ranks)`` per seed, each ``{"i2t": [N], "t2i": [M]}``
    holding the 0-based rank of the ground truth of every query.
    """
    d = per_seed_deltas(pairs)
    s = len(d)
    point = float(d.mean())
    common = {"delta": point, "n": s, "per_seed": tuple(float(x) for x in d),
              "p_improve": prob_improvement(d), "level": level}
    if s < 2:
        return DeltaStats(low=math.nan, high=math.nan, **common)
    q_se = math.sqrt(common_query_variance(pairs, n_boot, seed))
    seed_sd = float(d.std(ddof=1))
    se = math.sqrt(seed_sd ** 2 / s + q_se ** 2)
    df = s - 1
    if se == 0:
        low = high = point
        p = 1.0 if point == 0 else 0.0
    else:
        half = float(sps.t.ppf((1 + level) / 2, df)) * se
        low, high = point - half, point + half
        p = float(2 * sps.t.sf(abs(point) / se, df))
    return DeltaStats(low=low, high=high, seed_sd=seed_sd, query_se=q_se, se=se, df=float(df), p_value=p,
                      **common)


def delta_ci(pairs, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> tuple[float, float, float]:
    """(ΔRSUM, low, high): the interval covers seed and test-set variance (module docstring).

    With one seed pair the bounds are NaN: the seed-to-seed variance is unknown (``n=1: no interval``).
    """
    r = delta_stats(pairs, n_boot, seed, level)
    return r.delta, r.low, r.high


def holm(p_values, alpha: float = ALPHA) -> list[bool]:
    """Holm–Bonferroni step-down at family-wise level ``alpha``: which hypotheses are rejected.

    NaN p-values (no test, e.g. one seed) are not part of the family and are never rejected."""
    p = np.asarray(p_values, dtype=float)
    tested = np.flatnonzero(~np.isnan(p))
    out = [False] * len(p)
    m = len(tested)
    for k, i in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        if p[i] > alpha / (m - k):
            break
        out[i] = True
    return out


def mean_interval(values, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean over seeds; NaN bounds with fewer than 2."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if not len(v):
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if len(v) < 2:
        return mean, math.nan, math.nan
    sem = float(v.std(ddof=1) / math.sqrt(len(v)))
    if sem == 0:
        return mean, mean, mean
    low, high = sps.t.interval(level, len(v) - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def power(effect: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test over ``n`` seeds to detect ΔRSUM = ``effect``."""
    if n < 2:
        return 0.0
    if sd <= 0:
        return 1.0 if effect else alpha
    df = n - 1
    crit = sps.t.ppf(1 - alpha / 2, df)
    nc = effect * math.sqrt(n) / sd
    p = float(sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc))
    if math.isnan(p):  # scipy's noncentral t fails far in the tail (large nc): the normal limit there
        p = float(sps.norm.sf(crit - nc) + sps.norm.cdf(-crit - nc))
    return p


def seeds_needed(sd: float, effect: float = 1.0, alpha: float = ALPHA, target: float = POWER,
                 max_seeds: int = 10_000) -> int | None:
    """Fewest paired seeds (≥ 2) whose paired t-test detects ``effect`` with power ``target``, given
    the sd of the paired per-seed ΔRSUM; None when more than ``max_seeds`` or sd unknown."""
    if sd is None or math.isnan(sd):
        return None
    if power(effect, sd, max_seeds, alpha) < target:
        return None
    lo, hi = 2, max_seeds
    while lo < hi:  # power grows with n
        mid = (lo + hi) // 2
        if power(effect, sd, mid, alpha) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def min_detectable_effect(sd: float, n: int, alpha: float = ALPHA, target: float = POWER) -> float:
    """Smallest ΔRSUM that ``n`` paired seeds detect with power ``target`` (NaN below 2 seeds)."""
    if n < 2 or sd is None or math.isnan(sd):
        return math.nan
    if sd == 0:
        return 0.0
    return float(optimize.brentq(lambda e: power(e, sd, n, alpha) - target, 1e-9 * sd, 1e3 * sd))


def pooled_sd(sds, ns) -> float:
    """Pooled sd of several strategies' paired per-seed deltas (weights n − 1); NaN if none has 2 seeds."""
    num = den = 0.0
    for sd, n in zip(sds, ns):
        if n >= 2 and not math.isnan(sd):
            num += (n - 1) * sd ** 2
            den += n - 1
    return math.sqrt(num / den) if den else math.nan


def fmt_mean_std(mean: float, std: float, n: int | None = None) -> str:
    """``mean ± std`` over seeds; the mean alone when there is one seed (no ``± 0.0``) or no std."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if n is not None and n < 2 or std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {std:.1f}"


def fmt_delta(r: DeltaStats, significant: bool = False) -> str:
    """``+Δ [low, high]`` (``†`` when it survives Holm); with one seed ``+Δ (n=1: no interval)``."""
    if r.has_interval:
        return f"{r.delta:+.1f} [{r.low:+.1f}, {r.high:+.1f}]" + ("†" if significant else "")
    return f"{r.delta:+.1f} (n={r.n}: no interval)"


def seeds_line(sd: float, declared: int, effect: float = 1.0, alpha: float = ALPHA, target: float = POWER) -> str:
    """The "seeds needed" sentence of a table, from the sd of the paired per-seed ΔRSUM."""
    if sd is None or math.isnan(sd):
        return ("Seeds needed: unknown until a strategy has ≥ 2 seeds paired with the baseline "
                "(the seed-to-seed sd of ΔRSUM cannot be estimated from one).")
    need = seeds_needed(sd, effect, alpha, target)
    need_s = f"{need}" if need is not None else "more than 10,000"
    mde = min_detectable_effect(sd, declared, alpha, target)
    mde_s = f"{mde:.1f}" if not math.isnan(mde) else "undefined (fewer than 2 seeds)"
    return (f"Seeds needed: with the observed sd of paired per-seed ΔRSUM ({sd:.1f}), detecting "
            f"ΔRSUM = {effect:g} (two-sided paired t-test, α = {alpha:g}, power {target:.0%}) needs {need_s} seeds; "
            f"at the declared {declared} seed{'s' if declared != 1 else ''} the minimum detectable ΔRSUM is {mde_s}.")


def verdict_line(rows: list[dict]) -> str:
    """The block's verdict in words, from its own rows (``{"label", "delta", "n",
    "significant", "p_improve"}``; n = paired seeds): which ΔRSUM survive Holm, else that none does,
    and who is ahead of (or behind) the baseline in every seed pair. Empty without a paired row."""
    rows = [r for r in rows if r["n"] >= 2 and not math.isnan(r["delta"])]
    if not rows:
        return ""
    sig = [f"{r['label']} ({r['delta']:+.1f})" for r in rows if r["significant"]]
    if sig:
        text = f"Verdict: significant after Holm–Bonferroni: {', '.join(sig)}"
        rest = [r["label"] for r in rows if not r["significant"]]
        text += f"; not significant: {', '.join(rest)}." if rest else "."
    else:
        text = ("Verdict: no ΔRSUM is significant (every 95% interval contains 0 or none survives "
                "Holm–Bonferroni).")
    ahead = [r["label"] for r in rows if r["p_improve"] == 1.0]
    behind = [r["label"] for r in rows if r["p_improve"] == 0.0]
    n = min(r["n"] for r in rows)
    if ahead:
        text += f" Ahead of the baseline in every seed pair: {', '.join(ahead)}"
        text += f" ({n} pairs: a sign that more seeds could confirm, not a finding)." if not sig else "."
    if behind:
        text += f" Behind it in every seed pair: {', '.join(behind)}."
    return text
