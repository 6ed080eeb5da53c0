"""bench.harness.stats, tested by simulation with fixed seeds (the numbers are in docs/verdicts.md).

The simulated suite: 1,000 test images with 5 captions each. A query's outcome in one training run
is a latent score skill_run − difficulty_query + noise, cut at three thresholds into a rank that is
a hit at K = 1, 5, 10 or none. A caption's difficulty is its image's plus its own, so an image and
its captions are correlated. Each run's skill carries a seed-level random effect of sd ``tau``
(RSUM sd between seeds on one test set ≈ 3 points at tau = 0.025, ≈ 14 at 0.125). Under the null the
strategy and the baseline differ only by image-level effects that are exchangeable between them
(each image helps one of the two at random), so E[ΔRSUM] = 0 exactly while a given test set has a
common component shared by every seed.
"""

import math

import numpy as np
import pytest
from scipy import stats as sps

from bench.harness import stats

N_IMAGES, CAPS = 1000, 5
THRESHOLDS = (1.0, 0.0, -0.7)  # latent score above: hit at K = 1 / 5 / 10
RANK_OF_HITS = np.array([20, 7, 2, 0])  # number of K hit -> a 0-based rank with exactly that many hits
SLOPE = 110.0  # RSUM points per unit of skill in this model (measured), to express effects in RSUM
LOW, HIGH = 0.025, 0.125


def _ranks(rng, skill, b_img, b_cap, g_img, g_cap):
    def draw(b, g):
        z = skill + g - b + 0.4 * rng.logistic(size=len(b))
        return RANK_OF_HITS[(z > THRESHOLDS[0]).astype(int) + (z > THRESHOLDS[1]) + (z > THRESHOLDS[2])]

    return {"i2t": draw(b_img, g_img), "t2i": draw(b_cap, g_cap)}


def simulate(rng, seeds, tau, delta_rsum=0.0, image_sd=0.3, n=N_IMAGES):
    """One experiment: ``seeds`` (strategy ranks, baseline ranks) pairs on one test set."""
    b_img = rng.normal(0, 2.0, n)
    b_cap = np.repeat(b_img, CAPS) + rng.normal(0, 1.0, CAPS * n)
    g = rng.normal(0, image_sd, n)
    to_strategy = rng.random(n) < 0.5  # exchangeable image-level effects: exact null, common component
    g_s, g_b = np.where(to_strategy, g, 0.0), np.where(to_strategy, 0.0, g)
    pairs = []
    for _ in range(seeds):
        a = _ranks(rng, delta_rsum / SLOPE + rng.normal(0, tau), b_img, b_cap, g_s, np.repeat(g_s, CAPS))
        b = _ranks(rng, rng.normal(0, tau), b_img, b_cap, g_b, np.repeat(g_b, CAPS))
        pairs.append((a, b))
    return pairs


def _rates(seed, seeds, tau, delta_rsum=0.0, experiments=300, n_boot=0):
    rng = np.random.default_rng(seed)
    covered = query_only_covered = 0
    truth = 0.0 if delta_rsum == 0 else None
    for _ in range(experiments):
        pairs = simulate(rng, seeds, tau, delta_rsum)
        r = stats.delta_stats(pairs, n_boot=n_boot, seed=0)
        covered += r.low <= 0 <= r.high
        half = 1.96 * stats.query_se(pairs, n_boot=n_boot)  # what the old, query-only interval amounts to
        query_only_covered += abs(r.delta) <= half
    return covered / experiments, query_only_covered / experiments, truth


@pytest.mark.parametrize("seeds", [3, 5])
@pytest.mark.parametrize("tau", [LOW, HIGH], ids=["seed-sd-3", "seed-sd-14"])
def test_null_interval_covers_zero(seeds, tau):
    """No true difference, a seed-level random effect: the 95% interval covers 0 in ≥ 90% of 300
    experiments; a query-only interval does not (that is what the old table printed)."""
    coverage, query_only, _ = _rates(seed=1000 * seeds + int(tau == HIGH), seeds=seeds, tau=tau)
    print(f"null, {seeds} seeds, tau {tau}: coverage {coverage:.3f}, query-only interval {query_only:.3f}")
    assert coverage >= 0.90
    assert query_only < (0.9 if tau == LOW else 0.5)


@pytest.mark.parametrize("seeds,tau,effect,at_least", [(5, LOW, 10.0, 0.5), (3, LOW, 10.0, 0.2), (5, HIGH, 30.0, 0.3)])
def test_true_effect_is_detected_at_a_reported_rate(seeds, tau, effect, at_least):
    """A true ΔRSUM: the share of experiments whose interval excludes 0 (the power; docs/verdicts.md)."""
    coverage, _, _ = _rates(seed=7, seeds=seeds, tau=tau, delta_rsum=effect, experiments=100)
    print(f"effect {effect}, {seeds} seeds, tau {tau}: interval excludes 0 in {1 - coverage:.2f}")
    assert 1 - coverage >= at_least


def _clustered_population(rng, n):
    """Paired ranks on ``n`` images in which an image and its 5 captions move together."""
    u = np.repeat(rng.random(n), CAPS + 1).reshape(n, CAPS + 1)  # one draw per image, shared by its queries
    noise = rng.random((n, CAPS + 1)) < 0.1
    strategy_hit = (u < 0.55) ^ noise
    baseline_hit = (u < 0.45) ^ noise
    a = np.where(strategy_hit, 0, 20)
    b = np.where(baseline_hit, 0, 20)
    return {"i2t": a[:, 0], "t2i": a[:, 1:].ravel()}, {"i2t": b[:, 0], "t2i": b[:, 1:].ravel()}


def test_an_image_and_its_captions_are_resampled_together():
    """The query standard error matches the spread of ΔRSUM over independently drawn test sets when
    an image and its captions are correlated; resampling captions alone would be far too small."""
    rng = np.random.default_rng(3)
    deltas, se_cluster, se_naive = [], [], []
    for _ in range(150):
        a, b = _clustered_population(rng, 300)
        deltas.append(stats.per_seed_deltas([(a, b)])[0])
    for _ in range(10):
        a, b = _clustered_population(rng, 300)
        se_cluster.append(stats.query_se([(a, b)], n_boot=500, seed=1))
        di = 100 * (stats.recall_hits(a["i2t"]) - stats.recall_hits(b["i2t"]).astype(float))
        dt = 100 * (stats.recall_hits(a["t2i"]) - stats.recall_hits(b["t2i"]).astype(float))
        se_naive.append(math.sqrt(di.var(ddof=1) / len(di) + dt.var(ddof=1) / len(dt)))
    true_sd = float(np.std(deltas, ddof=1))
    print(f"sd over test sets {true_sd:.2f}, image-cluster SE {np.mean(se_cluster):.2f}, "
          f"independent-caption SE {np.mean(se_naive):.2f}")
    assert 0.8 < np.mean(se_cluster) / true_sd < 1.25
    assert np.mean(se_naive) / true_sd < 0.75


def test_unclustered_queries_are_resampled_independently():
    rng = np.random.default_rng(4)
    a = {"i2t": rng.integers(0, 15, 100), "t2i": rng.integers(0, 15, 333)}  # 333 is not 5 per image
    b = {"i2t": rng.integers(0, 15, 100), "t2i": rng.integers(0, 15, 333)}
    di = 100 * (stats.recall_hits(a["i2t"]) - stats.recall_hits(b["i2t"]).astype(float))
    dt = 100 * (stats.recall_hits(a["t2i"]) - stats.recall_hits(b["t2i"]).astype(float))
    expected = math.sqrt(di.var() / len(di) + dt.var() / len(dt))
    assert stats.query_se([(a, b)], n_boot=2000, seed=0) == pytest.approx(expected, rel=0.1)
    assert stats.query_se([(a, b)], n_boot=0) == pytest.approx(expected, rel=1e-9)


def test_the_bootstrap_converges_to_its_closed_form():
    """``n_boot=0`` (used by the simulations for speed) is the limit of the tables' bootstrap."""
    pairs = simulate(np.random.default_rng(6), 3, HIGH)
    exact = stats.delta_stats(pairs, n_boot=0)
    boot = stats.delta_stats(pairs, n_boot=4000, seed=2)
    assert boot.delta == exact.delta and boot.seed_sd == exact.seed_sd
    assert boot.se == pytest.approx(exact.se, rel=0.05) and boot.query_se == pytest.approx(exact.query_se, rel=0.2)


def test_point_estimate_one_seed_and_degenerate_cases():
    rng = np.random.default_rng(1)
    pairs = [({"i2t": rng.integers(0, 15, 100), "t2i": rng.integers(0, 15, 500)},
              {"i2t": rng.integers(0, 15, 100), "t2i": rng.integers(0, 15, 500)}) for _ in range(3)]
    diffs = [stats.rsum_from_ranks(a["i2t"], a["t2i"]) - stats.rsum_from_ranks(b["i2t"], b["t2i"]) for a, b in pairs]
    delta, low, high = stats.delta_ci(pairs, n_boot=200)
    assert delta == pytest.approx(np.mean(diffs)) and low < delta < high
    r = stats.delta_stats(pairs, n_boot=200)
    assert r.per_seed == pytest.approx(diffs) and r.df == 2
    assert r.seed_sd == pytest.approx(np.std(diffs, ddof=1))
    assert high - delta == pytest.approx(sps.t.ppf(0.975, 2) * math.sqrt(r.seed_sd ** 2 / 3 + r.query_se ** 2))
    # one seed: the delta, no interval, and the table says so
    one = stats.delta_stats(pairs[:1])
    assert one.delta == pytest.approx(diffs[0]) and math.isnan(one.low) and math.isnan(one.high)
    assert all(math.isnan(x) for x in stats.delta_ci(pairs[:1])[1:])  # NaN bounds
    assert stats.fmt_delta(one) == f"{diffs[0]:+.1f} (n=1: no interval)"
    # identical runs: a zero-width interval at zero
    same = [(a, a) for a, _ in pairs]
    assert stats.delta_ci(same, n_boot=50) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same test set"):
        stats.delta_ci([(pairs[0][0], {"i2t": pairs[0][1]["i2t"][:50], "t2i": pairs[0][1]["t2i"]})] * 2)


def test_probability_of_improvement_counts_seed_pairs():
    assert stats.prob_improvement([1.0, -1.0, 0.0, 2.0]) == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert math.isnan(stats.prob_improvement([]))


def test_holm_bonferroni_step_down():
    assert stats.holm([0.01, 0.04, 0.03, math.nan]) == [True, False, False, False]  # 0.03 > 0.05/2
    assert stats.holm([0.01, 0.02, 0.04]) == [True, True, True]  # 0.01 ≤ .05/3, 0.02 ≤ .05/2, 0.04 ≤ .05
    assert stats.holm([0.2, 0.001]) == [False, True]


def test_seeds_needed_and_minimum_detectable_effect():
    # paired t-test, effect = sd: 10 pairs give 80% power (the textbook value, Cohen's d = 1)
    assert stats.seeds_needed(1.0, effect=1.0) == 10
    assert stats.power(1.0, 1.0, 10) >= 0.8 > stats.power(1.0, 1.0, 9)
    assert stats.min_detectable_effect(1.0, 10) == pytest.approx(1.0, abs=0.01)
    assert stats.seeds_needed(math.nan) is None and math.isnan(stats.min_detectable_effect(2.0, 1))
    # the power the formula claims is the power a simulation of paired deltas sees
    rng = np.random.default_rng(5)
    d = rng.normal(1.0, 2.0, size=(4000, stats.seeds_needed(2.0)))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(d.shape[1]))
    assert np.mean(np.abs(t) > sps.t.ppf(0.975, d.shape[1] - 1)) == pytest.approx(0.8, abs=0.03)
    assert "needs 10 seeds" in stats.seeds_line(1.0, declared=3)


def test_mean_interval_and_formatting():
    mean, low, high = stats.mean_interval([230.0, 236.0, 233.0])
    assert (low, high) == pytest.approx(sps.t.interval(0.95, 2, loc=233.0, scale=sps.sem([230.0, 236.0, 233.0])))
    assert math.isnan(stats.mean_interval([233.0])[1])
    assert stats.fmt_mean_std(233.0, math.nan, 1) == "233.0" and stats.fmt_mean_std(233.0, 0.0, 1) == "233.0"
    assert stats.fmt_mean_std(233.0, 4.04, 2) == "233.0 ± 4.0"


def test_the_verdict_line_says_what_the_intervals_and_seed_pairs_say():
    from bench.harness.stats import verdict_line

    def row(label, delta, sig=False, p=0.5, n=3):
        return {"label": label, "delta": delta, "low": delta - 5, "high": delta + 5, "n": n, "significant": sig,
                "p_improve": p}

    none = verdict_line([row("DML", -0.6, p=1 / 3), row("DBL abs", 6.7, p=1.0), row("DBL rel", 7.5, p=1.0)])
    assert none.startswith("Verdict: no ΔRSUM is significant")
    assert "Ahead of the baseline in every seed pair: DBL abs, DBL rel (3 pairs: a sign" in none
    assert "DML" not in none and "Behind" not in none
    some = verdict_line([row("DBL", 9.0, sig=True, p=1.0), row("DML", -2.0, p=0.0)])
    assert some.startswith("Verdict: significant after Holm–Bonferroni: DBL (+9.0); not significant: DML.")
    assert "Ahead of the baseline in every seed pair: DBL." in some and "Behind it in every seed pair: DML." in some
    assert verdict_line([row("DML", 1.0, n=1)]) == ""  # one seed pair: no interval, no verdict
    assert verdict_line([]) == ""
