"""Kupiec and Christoffersen coverage tests against values worked out by hand from the formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from quantcrew.ml_server.services.risk.coverage import (
    christoffersen_independence,
    conditional_coverage,
    kupiec_pof,
    transition_counts,
)


def _chi2_1_sf(x: float) -> float:
    """Survival function of chi2(1): P(Z**2 > x) = erfc(sqrt(x / 2))."""
    return math.erfc(math.sqrt(x / 2.0))


def test_kupiec_zero_breaches_matches_hand_value() -> None:
    # 250 days at 99%: 2.5 breaches expected, none seen; p_hat = 0 so the alternative's log L is 0
    lr, p = kupiec_pof(250, 0, 0.99)
    expected = -2.0 * 250 * math.log(0.99)
    assert lr == pytest.approx(expected, rel=1e-12)
    assert lr == pytest.approx(5.0252, abs=1e-4)
    assert p == pytest.approx(_chi2_1_sf(expected), rel=1e-9)
    assert p < 0.05  # 250 clean days are already too many at 99%


def test_kupiec_some_breaches_matches_hand_value() -> None:
    n, x, q = 250, 4, 0.01
    lr, p = kupiec_pof(n, x, 0.99)
    p_hat = x / n
    expected = -2.0 * ((n - x) * math.log(1 - q) + x * math.log(q) - (n - x) * math.log(1 - p_hat)
                       - x * math.log(p_hat))
    assert lr == pytest.approx(expected, rel=1e-12)
    assert p == pytest.approx(_chi2_1_sf(expected), rel=1e-9)
    assert p > 0.05


def test_kupiec_all_breaches_is_finite() -> None:
    lr, p = kupiec_pof(10, 10, 0.99)
    assert lr == pytest.approx(-2.0 * 10 * math.log(0.01), rel=1e-12)
    assert math.isfinite(p) and 0.0 <= p < 1e-10


def test_kupiec_exact_rate_gives_zero_statistic() -> None:
    lr, p = kupiec_pof(1000, 50, 0.95)
    assert lr == pytest.approx(0.0, abs=1e-9)
    assert p == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(("n_obs", "n_breaches", "level"), [(0, 0, 0.99), (10, 11, 0.99), (10, -1, 0.99),
                                                            (10, 1, 1.0), (10, 1, 0.0)])
def test_kupiec_bad_arguments_raise(n_obs: int, n_breaches: int, level: float) -> None:
    with pytest.raises(ValueError):
        kupiec_pof(n_obs, n_breaches, level)


def test_transition_counts_small_sequence() -> None:
    # 0->1, 1->1, 1->0, 0->0, 0->1, 1->0, 0->0
    assert transition_counts([0, 1, 1, 0, 0, 1, 0, 0]) == (2, 2, 2, 1)


def test_christoffersen_small_sequence_matches_hand_value() -> None:
    n00, n01, n10, n11 = 2, 2, 2, 1
    pi01, pi11, pi = n01 / (n00 + n01), n11 / (n10 + n11), (n01 + n11) / 7
    log_null = (n00 + n10) * math.log(1 - pi) + (n01 + n11) * math.log(pi)
    log_alt = n00 * math.log(1 - pi01) + n01 * math.log(pi01) + n10 * math.log(1 - pi11) + n11 * math.log(pi11)
    lr, p = christoffersen_independence(np.array([0, 1, 1, 0, 0, 1, 0, 0], dtype=bool))
    assert lr == pytest.approx(-2.0 * (log_null - log_alt), rel=1e-12)
    assert p == pytest.approx(_chi2_1_sf(lr), rel=1e-9)


def test_christoffersen_rejects_clustered_breaches_but_not_spread_ones() -> None:
    n = 500
    clustered = np.zeros(n, dtype=bool)
    clustered[100:105] = True
    clustered[300:305] = True
    spread = np.zeros(n, dtype=bool)
    spread[25::50] = True
    assert clustered.sum() == spread.sum() == 10
    lr_c, p_c = christoffersen_independence(clustered)
    lr_s, p_s = christoffersen_independence(spread)
    assert p_c < 1e-6 < lr_c
    assert p_s > 0.3
    # same breach count, same Kupiec statistic: only the independence part tells them apart
    assert conditional_coverage(clustered, 0.98).p_value < 0.01 < conditional_coverage(spread, 0.98).p_value


def test_christoffersen_spread_breaches_hand_value() -> None:
    # no breach is followed by a breach: pi11 = 0 and its cells are 0 log 0 = 0
    hits = np.zeros(500, dtype=bool)
    hits[25::50] = True
    n00, n01, n10, n11 = transition_counts(hits)
    assert (n01, n10, n11) == (10, 10, 0)
    pi01, pi = n01 / (n00 + n01), (n01 + n11) / 499
    log_null = (n00 + n10) * math.log(1 - pi) + (n01 + n11) * math.log(pi)
    log_alt = n00 * math.log(1 - pi01) + n01 * math.log(pi01)
    assert christoffersen_independence(hits).statistic == pytest.approx(-2.0 * (log_null - log_alt), rel=1e-12)


@pytest.mark.parametrize("hits", [np.zeros(50, dtype=bool), np.ones(50, dtype=bool), np.array([True]),
                                  np.array([], dtype=bool), np.r_[np.zeros(49, dtype=bool), True]])
def test_christoffersen_degenerate_series_are_finite(hits: np.ndarray) -> None:
    lr, p = christoffersen_independence(hits)
    assert math.isfinite(lr) and lr >= 0.0
    assert 0.0 <= p <= 1.0


def test_conditional_coverage_sums_statistics_on_chi2_two() -> None:
    hits = np.zeros(250, dtype=bool)
    hits[[10, 11, 12, 200]] = True
    uc = kupiec_pof(250, 4, 0.99)
    ind = christoffersen_independence(hits)
    lr, p = conditional_coverage(hits, 0.99)
    assert lr == pytest.approx(uc.statistic + ind.statistic, rel=1e-12)
    assert p == pytest.approx(math.exp(-lr / 2.0), rel=1e-9)  # chi2(2) survival is exp(-x / 2)


def test_conditional_coverage_no_breaches_is_finite() -> None:
    lr, p = conditional_coverage(np.zeros(250, dtype=bool), 0.99)
    assert lr == pytest.approx(-2.0 * 250 * math.log(0.99), rel=1e-12)
    assert p == pytest.approx(math.exp(-lr / 2.0), rel=1e-9)


def test_breaches_must_be_indicators() -> None:
    with pytest.raises(ValueError, match="0/1"):
        christoffersen_independence(np.array([0.0, 0.5, 1.0]))
