"""Student's t without scipy: table values, closed forms, the cdf inverting the ppf, the normal limit."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest

from quantcrew.quant.student_t import standardized_t_ppf, student_t_cdf, student_t_pdf, student_t_ppf


@pytest.mark.parametrize(
    ("df", "p", "expected"),
    [
        (5.0, 0.99, 3.364930),
        (10.0, 0.975, 2.228139),
        (1.0, 0.975, 12.706205),
        (2.0, 0.95, 2.919986),
        (20.0, 0.9, 1.325341),
        (30.0, 0.995, 2.749996),
        (3.0, 0.999, 10.214532),
        (6.0, 0.01, -3.142668),
    ],
)
def test_student_t_ppf_matches_table_values(df: float, p: float, expected: float) -> None:
    assert student_t_ppf(p, df) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("p", [1e-10, 1e-4, 0.01, 0.2, 0.45, 0.6, 0.9, 0.999, 1 - 1e-9])
def test_student_t_ppf_matches_closed_forms_for_one_and_two_df(p: float) -> None:
    tail, sign = min(p, 1 - p), math.copysign(1.0, p - 0.5)  # written in the tail: no cancellation
    cauchy = sign / math.tan(math.pi * tail)
    assert student_t_ppf(p, 1.0) == pytest.approx(cauchy, rel=1e-10)
    two = sign * (1 - 2 * tail) / math.sqrt(2 * tail * (1 - tail))
    assert student_t_ppf(p, 2.0) == pytest.approx(two, rel=1e-10)


@pytest.mark.parametrize("df", [0.5, 3.0, 6.0, 47.5, 1000.0])
def test_student_t_cdf_inverts_the_ppf(df: float) -> None:
    for p in (1e-8, 0.001, 0.05, 0.3, 0.5, 0.8, 0.99):
        assert student_t_cdf(student_t_ppf(p, df), df) == pytest.approx(p, rel=1e-10)


def test_student_t_ppf_tends_to_the_normal_quantile() -> None:
    normal = NormalDist()
    for p in (0.01, 0.975):
        assert student_t_ppf(p, math.inf) == normal.inv_cdf(p)
        assert student_t_ppf(p, 1e7) == pytest.approx(normal.inv_cdf(p), abs=1e-6)
        # the two methods meet where the Cornish-Fisher expansion takes over (above df = 1e5)
        assert student_t_ppf(p, math.nextafter(1e5, math.inf)) == pytest.approx(student_t_ppf(p, 1e5), abs=1e-12)
    # ... and the quantile shrinks toward it as df grows
    assert student_t_ppf(0.99, 5) > student_t_ppf(0.99, 50) > student_t_ppf(0.99, 5000) > normal.inv_cdf(0.99)


def test_student_t_ppf_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="p must be in"):
        student_t_ppf(1.0, 5.0)
    with pytest.raises(ValueError, match="df must be positive"):
        student_t_ppf(0.5, 0.0)


@pytest.mark.parametrize("df", [1.0, 3.0, 6.0, 47.5])
def test_student_t_pdf_is_the_slope_of_the_cdf(df: float) -> None:
    h = 1e-5
    for t in (-4.0, -0.7, 0.0, 1.3, 6.0):
        slope = (student_t_cdf(t + h, df) - student_t_cdf(t - h, df)) / (2 * h)
        assert student_t_pdf(t, df) == pytest.approx(slope, rel=1e-6)


def test_student_t_pdf_closed_forms_and_normal_limit() -> None:
    assert student_t_pdf(0.0, 1.0) == pytest.approx(1 / math.pi, rel=1e-12)  # Cauchy
    assert student_t_pdf(1.0, 2.0) == pytest.approx(1 / 3**1.5, rel=1e-12)  # (2 + t^2)^(-3/2)
    assert student_t_pdf(0.5, math.inf) == NormalDist().pdf(0.5)
    with pytest.raises(ValueError, match="df > 0"):
        student_t_pdf(0.0, -1.0)


def test_standardized_t_ppf_has_unit_variance_scaling() -> None:
    assert standardized_t_ppf(0.99, 6.0) == pytest.approx(3.142668 * math.sqrt(4 / 6), abs=1e-6)
    assert standardized_t_ppf(0.01, 6.0) == pytest.approx(-standardized_t_ppf(0.99, 6.0), rel=1e-12)
    assert standardized_t_ppf(0.975, math.inf) == NormalDist().inv_cdf(0.975)
    with pytest.raises(ValueError, match="above 2"):
        standardized_t_ppf(0.99, 2.0)
    with pytest.raises(ValueError, match="p must be in"):
        standardized_t_ppf(1.0, math.inf)
