"""The verdict's statistics on constructed numbers: hand-computed cases, and agreement with scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from src.analysis.stats import beats, compare, holm, seeds_needed, seeds_to_tie, t_test_power, tost_power

REFERENCE = [0.80, 0.82, 0.84]
OTHER = [0.78, 0.81, 0.80]  # differences -0.02, -0.01, -0.04


def test_paired_comparison_by_hand():
    result = compare(REFERENCE, OTHER)
    # mean -0.07/3, sd of the differences sqrt(7/3) / 100, so t = -sqrt(7) on 2 degrees of freedom
    assert result.n == 3
    assert result.diff == pytest.approx(-0.07 / 3)
    half_width = 4.302652729749464 * math.sqrt(7 / 3) / 100 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert result.ci_low == pytest.approx(-0.07 / 3 - half_width)
    assert result.ci_high == pytest.approx(-0.07 / 3 + half_width)
    # with 2 degrees of freedom the t distribution has a closed form: two-sided p = 1 - |t| / sqrt(2 + t^2)
    assert result.p_paired == pytest.approx(1 - math.sqrt(7) / 3)
    assert result.p_wilcoxon == pytest.approx(0.25)  # all three differences negative: 2 / 2^3
    assert result.correlation == pytest.approx(np.corrcoef(REFERENCE, OTHER)[0, 1])


def test_comparison_agrees_with_scipy_on_random_pairs():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(3, 12))
        reference = rng.normal(0.88, 0.01, n)
        other = reference * rng.uniform(-1, 1) + rng.normal(0.87, 0.015, n)
        result = compare(list(reference), list(other))
        paired = stats.ttest_rel(other, reference)
        interval = paired.confidence_interval(0.95)
        assert result.diff == pytest.approx(float(np.mean(other - reference)))
        assert (result.ci_low, result.ci_high) == pytest.approx((interval.low, interval.high))
        assert result.p_paired == pytest.approx(paired.pvalue)
        assert result.p_welch == pytest.approx(stats.ttest_ind(other, reference, equal_var=False).pvalue)
        assert result.p_wilcoxon == pytest.approx(stats.wilcoxon(other, reference).pvalue)
        assert result.correlation == pytest.approx(stats.pearsonr(reference, other).statistic)


def test_negatively_correlated_seeds_make_pairing_wider_than_welch():
    """The measured case of the field notes: results that move against each other across seeds."""
    reference = [0.90, 0.88, 0.89, 0.905, 0.895]
    other = [0.85, 0.885, 0.87, 0.84, 0.86]
    result = compare(reference, other)
    assert result.correlation < -0.5
    assert result.p_paired > result.p_welch


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, None, 0.01]) == [pytest.approx(0.5), None, pytest.approx(0.02)]
    assert holm([0.9, 0.2]) == pytest.approx([0.9, 0.4])  # 0.2 * 2; then max(0.4, 0.9 * 1)
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # 0.8 * 2 capped at 1; monotone after it
    assert holm([]) == []


def test_power_and_seeds_needed_match_the_textbook_tables():
    # Cohen's tables: effect size 1 needs 10 seeds paired (one-sample), 17 per group unpaired, at 80% and 0.05
    assert seeds_needed(0.01, 0.01, paired=True) == 10
    assert seeds_needed(0.01, 0.01, paired=False) == 17
    assert t_test_power(1.0, 10, paired=True) >= 0.8 > t_test_power(1.0, 9, paired=True)
    # the same power from scipy's noncentral t by hand, n = 10 paired
    critical = stats.t.ppf(0.975, 9)
    by_hand = stats.nct.sf(critical, 9, math.sqrt(10)) + stats.nct.cdf(-critical, 9, math.sqrt(10))
    assert t_test_power(1.0, 10, paired=True) == pytest.approx(by_hand)


def test_seeds_needed_says_nothing_without_a_measured_spread_or_difference():
    assert seeds_needed(0.0, 0.01, paired=True) is None
    assert seeds_needed(0.01, None, paired=True) is None
    assert seeds_needed(1e-9, 1.0, paired=True) is None  # beyond any budget


def test_identical_results_give_a_point_interval_and_no_rank_test():
    result = compare([0.8, 0.8], [0.8, 0.8])
    assert (result.diff, result.ci_low, result.ci_high, result.p_paired) == (0.0, 0.0, 0.0, 1.0)
    assert result.p_wilcoxon is None and result.p_welch is None and result.correlation is None


def test_unequal_lengths_are_refused():
    with pytest.raises(ValueError, match="length"):
        compare([0.8, 0.9], [0.8])


def test_tost_p_values_are_scipys_one_sided_paired_t_tests_against_the_margins():
    rng = np.random.default_rng(1)
    for _ in range(20):
        n, margin = int(rng.integers(3, 12)), float(rng.uniform(0.002, 0.03))
        reference = rng.normal(0.88, 0.01, n)
        other = reference + rng.normal(rng.uniform(-0.02, 0.02), 0.008, n)
        result = compare(list(reference), list(other), margin=margin)
        # "other - reference <= -margin" rejected: other is more than margin above reference - margin
        lower = stats.ttest_rel(other, reference - margin, alternative="greater").pvalue
        upper = stats.ttest_rel(other, reference + margin, alternative="less").pvalue
        assert result.p_tost_lower == pytest.approx(lower, rel=1e-9)
        assert result.p_tost_upper == pytest.approx(upper, rel=1e-9)
        assert result.p_equivalent == pytest.approx(max(lower, upper), rel=1e-9)


def test_an_exact_tie_is_equivalent_outright_and_wins_half_the_seeds():
    result = compare(REFERENCE, REFERENCE, margin=0.01)
    assert (result.p_tost_lower, result.p_tost_upper, result.p_beats) == (0.0, 0.0, 0.5)
    shifted = compare(REFERENCE, [value - 0.02 for value in REFERENCE], margin=0.01)  # 2 points below, no spread
    assert shifted.p_tost_lower == 1.0 and shifted.p_equivalent == 1.0 and shifted.p_beats == 0.0
    assert compare(REFERENCE, OTHER).p_equivalent is None  # no margin, no equivalence test


def test_p_beats_is_the_share_of_seeds_won_ties_half():
    assert beats([0.01, -0.02, 0.0, 0.03]) == pytest.approx((1 + 0 + 0.5 + 1) / 4)


def test_seeds_to_tie_is_the_fewest_at_which_tost_has_the_power():
    diff, sd, margin = -0.002, 0.01, 0.01
    n = seeds_to_tie(diff, sd, margin)
    assert tost_power(diff, sd, n, margin) >= 0.8 > tost_power(diff, sd, n - 1, margin)
    assert seeds_to_tie(-0.012, sd, margin) is None  # a gap beyond the margin never ties
    assert tost_power(0.0, sd, 10_000, margin) == pytest.approx(1.0)
