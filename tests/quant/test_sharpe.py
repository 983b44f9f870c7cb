"""Probabilistic and deflated Sharpe ratios against Bailey and Lopez de Prado's numbers."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from quantcrew.quant.sharpe import (
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    sharpe_moments,
)

PHI = NormalDist().cdf
DAYS = 250  # the paper's trading days per year (T = 1250 daily observations = 5 years)


def test_deflated_sharpe_ratio_reproduces_paper_example() -> None:
    # Bailey & Lopez de Prado (2014), numerical example: annualised SR 2.5, T = 1250, skew -3,
    # kurtosis 10, N = 100 trials whose annualised SRs have variance 0.5 -> DSR ~ 0.9004.
    sr = 2.5 / math.sqrt(DAYS)
    variance = 0.5 / DAYS
    sr0 = expected_max_sharpe(100, variance)
    assert sr0 * math.sqrt(DAYS) == pytest.approx(1.7894, abs=1e-4)  # the paper's annualised SR0
    dsr = deflated_sharpe_ratio(sr, 1250, -3.0, 10.0, 100, variance)
    assert dsr == pytest.approx(0.9004, abs=1e-4)
    assert dsr == probabilistic_sharpe_ratio(sr, sr0, 1250, -3.0, 10.0)


def test_probabilistic_sharpe_ratio_normal_returns_hand_case() -> None:
    sr, bench, n = 0.1, 0.05, 500
    expected = PHI((sr - bench) * math.sqrt(n - 1) / math.sqrt(1 + sr**2 / 2))
    assert probabilistic_sharpe_ratio(sr, bench, n, 0.0, 3.0) == pytest.approx(expected, rel=1e-12)
    # At SR = 0 the moments drop out: PSR = Phi(-SR* sqrt(n-1)) whatever the skew and kurtosis.
    assert probabilistic_sharpe_ratio(0.0, 0.05, n, -2.0, 9.0) == pytest.approx(PHI(-0.05 * math.sqrt(n - 1)))
    assert probabilistic_sharpe_ratio(0.2, 0.2, 100, 0.0, 3.0) == pytest.approx(0.5)


def test_probabilistic_sharpe_ratio_monotonic_in_inputs() -> None:
    base = probabilistic_sharpe_ratio(0.08, 0.02, 400, 0.0, 3.0)
    assert probabilistic_sharpe_ratio(0.10, 0.02, 400, 0.0, 3.0) > base  # higher SR
    assert probabilistic_sharpe_ratio(0.08, 0.04, 400, 0.0, 3.0) < base  # higher benchmark
    assert probabilistic_sharpe_ratio(0.08, 0.02, 800, 0.0, 3.0) > base  # longer track record
    assert probabilistic_sharpe_ratio(0.08, 0.02, 400, -1.0, 3.0) < base  # negative skew hurts
    assert probabilistic_sharpe_ratio(0.08, 0.02, 400, 0.0, 8.0) < base  # fat tails hurt


def test_expected_max_sharpe_grows_with_trials_and_variance() -> None:
    values = [expected_max_sharpe(n, 0.01) for n in (2, 10, 100, 1000)]
    assert values == sorted(values) and values[0] > 0
    assert expected_max_sharpe(10, 0.04) == pytest.approx(2 * expected_max_sharpe(10, 0.01))
    assert expected_max_sharpe(10, 0.0) == 0.0
    dsr = [deflated_sharpe_ratio(0.1, 1000, 0.0, 3.0, n, 0.001) for n in (2, 10, 100)]
    assert dsr == sorted(dsr, reverse=True)


def test_sharpe_moments_match_definitions() -> None:
    rng = np.random.default_rng(3)
    r = rng.standard_t(5, 5000) * 0.01 + 0.0005
    m = sharpe_moments(r)
    assert m.n == 5000
    assert m.sr == pytest.approx(r.mean() / r.std(ddof=1))
    z = (r - r.mean()) / r.std()
    assert m.skew == pytest.approx(np.mean(z**3)) and m.kurtosis == pytest.approx(np.mean(z**4))
    assert m.kurtosis > 3.5  # Student t(5) is fat-tailed: non-excess kurtosis well above 3


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"sr": math.nan}, "sr"),
        ({"sr_benchmark": math.inf}, "sr_benchmark"),
        ({"n": 1}, "n"),
        ({"n": 10.5}, "n"),
        ({"skew": math.nan}, "skew"),
        ({"kurtosis": 0.0}, "kurtosis"),
        ({"kurtosis": -2.0}, "kurtosis"),
    ],
)
def test_probabilistic_sharpe_ratio_bad_input_raises_naming_argument(kwargs: dict[str, float], name: str) -> None:
    args: dict[str, float] = {"sr": 0.1, "sr_benchmark": 0.0, "n": 100, "skew": 0.0, "kurtosis": 3.0} | kwargs
    with pytest.raises(ValueError, match=name):
        probabilistic_sharpe_ratio(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n_trials", "variance", "name"), [(1, 0.01, "n_trials"), (0, 0.01, "n_trials"), (10, -0.1, "sr_variance")]
)
def test_deflated_sharpe_ratio_bad_input_raises_naming_argument(n_trials: int, variance: float, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        deflated_sharpe_ratio(0.1, 100, 0.0, 3.0, n_trials, variance)


def test_sharpe_moments_constant_returns_raise() -> None:
    with pytest.raises(ValueError, match="zero variance"):
        sharpe_moments(np.full(10, 0.01))
