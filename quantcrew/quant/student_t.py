"""Student's t distribution without scipy: its quantile, distribution and density functions.

The upper tail ``P(T > t) = I_x(df/2, 1/2) / 2`` with ``x = df / (df + t**2)``, the regularized
incomplete beta function by its continued fraction (modified Lentz); the quantile inverts it by
Newton steps on the log tail inside a bisection bracket, and above ``df = 1e5`` is the
Cornish-Fisher expansion in ``1/df``. ``df = math.inf`` is the normal law throughout.

Numpy-free, standard library only: the synthetic markets (agent side) use it, and so may the
ML server.
"""

from __future__ import annotations

import math
from statistics import NormalDist

__all__ = ["standardized_t_ppf", "student_t_cdf", "student_t_pdf", "student_t_ppf"]

_NORMAL = NormalDist()
_LARGE_DF = 1e5  # above this the Cornish-Fisher expansion in 1/df is exact to double precision
_CF_EPS = 1e-15
_CF_TINY = 1e-300
_CF_MAX_ITER = 10_000


def student_t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df`` degrees of freedom (``math.inf``: the normal law).

    Raises:
        ValueError: ``df`` is not positive or ``t`` is NaN.
    """
    if not df > 0 or math.isnan(t):
        raise ValueError(f"student_t_cdf needs df > 0 and a number t, got t={t}, df={df}")
    if math.isinf(df):
        return _NORMAL.cdf(t)
    upper = _t_upper(abs(t), df)
    return 1.0 - upper if t > 0 else upper


def student_t_ppf(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom, without scipy.

    Accurate to about 1e-12 relative for ``1e-12 <= p <= 1 - 1e-12`` and any ``df > 0``
    (``math.inf``: the normal quantile; over 1e5: the Cornish-Fisher expansion in ``1/df``).

    Args:
        p: Probability in (0, 1).
        df: Degrees of freedom (positive, may be fractional).

    Raises:
        ValueError: ``p`` not in (0, 1) or ``df`` not positive.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if not df > 0:
        raise ValueError(f"df must be positive, got {df}")
    if p == 0.5:
        return 0.0
    z = _NORMAL.inv_cdf(p)
    if math.isinf(df):
        return z
    if df > _LARGE_DF:
        return _cornish_fisher(z, df)
    tail = min(p, 1.0 - p)  # 1 - p is exact for p >= 0.5
    sign = 1.0 if p > 0.5 else -1.0
    return sign * _solve_upper_tail(tail, df, abs(_cornish_fisher(z, df)))


def student_t_pdf(t: float, df: float) -> float:
    """Density of Student's t with ``df`` degrees of freedom at ``t`` (``math.inf``: the normal law).

    Raises:
        ValueError: ``df`` is not positive or ``t`` is NaN.
    """
    if not df > 0 or math.isnan(t):
        raise ValueError(f"student_t_pdf needs df > 0 and a number t, got t={t}, df={df}")
    if math.isinf(df):
        return _NORMAL.pdf(t)
    return _t_pdf(t, df)


def standardized_t_ppf(p: float, df: float) -> float:
    """The ``p`` quantile of the UNIT-VARIANCE Student's t: ``student_t_ppf(p, df) * sqrt((df - 2) / df)``.

    Args:
        p: Probability in (0, 1).
        df: Degrees of freedom, above 2 (a finite variance); ``math.inf``: the normal quantile.

    Raises:
        ValueError: ``p`` not in (0, 1) or ``df`` not above 2.
    """
    if not df > 2:
        raise ValueError(f"df must be above 2 for a unit-variance Student-t, got {df}")
    if math.isinf(df):
        if not 0.0 < p < 1.0:
            raise ValueError(f"p must be in (0, 1), got {p}")
        return _NORMAL.inv_cdf(p)
    return student_t_ppf(p, df) * math.sqrt((df - 2.0) / df)


# --- internals ---------------------------------------------------------------------------------


def _t_pdf(t: float, df: float) -> float:
    log_norm = _log_gamma_half_ratio(df / 2.0) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1.0) / 2.0 * math.log1p(t * t / df))


def _t_upper(t: float, df: float) -> float:
    """``P(T > t)`` for ``t >= 0``: ``I_x(df/2, 1/2) / 2`` with ``x = df / (df + t**2)``."""
    if math.isinf(t):
        return 0.0
    if t == 0.0:
        return 0.5
    a, t2 = df / 2.0, t * t
    x, y = df / (df + t2), t2 / (df + t2)
    # log of x**a * y**(1/2) / B(a, 1/2), each piece computed without cancellation
    log_front = _log_gamma_half_ratio(a) - 0.5 * math.log(math.pi) - a * math.log1p(t2 / df) + 0.5 * math.log(y)
    if x < (a + 1.0) / (a + 2.5):  # the continued fraction converges fast here; else use the symmetry
        return 0.5 * math.exp(log_front) * _beta_fraction(a, 0.5, x) / a
    return 0.5 - math.exp(log_front) * _beta_fraction(0.5, a, y)


def _log_gamma_half_ratio(a: float) -> float:
    """``log(Gamma(a + 1/2) / Gamma(a))``, accurate for large ``a`` where the two lgammas cancel."""
    if a < 10.0:
        return math.lgamma(a + 0.5) - math.lgamma(a)
    # Stirling: the (x - 1/2) log x - x parts of the two lgammas are subtracted analytically.
    return a * math.log1p(0.5 / a) + 0.5 * math.log(a) - 0.5 + _stirling_tail(a + 0.5) - _stirling_tail(a)


def _stirling_tail(x: float) -> float:
    """``lgamma(x) - ((x - 1/2) log x - x + log(2 pi) / 2)`` for ``x >= 10`` (error under 1e-16)."""
    inv, inv2 = 1.0 / x, 1.0 / (x * x)
    return inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 * (1.0 / 1260.0 - inv2 / 1680.0)))


def _solve_upper_tail(tail: float, df: float, guess: float) -> float:
    """The ``t > 0`` with ``P(T > t) = tail`` (``tail < 0.5``): Newton on the log tail, kept in a bracket."""
    lo, hi = 0.0, max(guess, 1.0)
    while _t_upper(hi, df) > tail:
        lo, hi = hi, 2.0 * hi
        if hi > 1e300:
            return math.inf
    t = min(max(guess, lo), hi)
    target = math.log(tail)
    for _ in range(200):
        upper = _t_upper(t, df)
        if upper <= 0.0:  # underflow far in the tail: step back by bisection
            hi, t_next = t, 0.5 * (lo + t)
        else:
            gap = math.log(upper) - target
            if gap > 0:
                lo = t
            else:
                hi = t
            slope = -_t_pdf(t, df) / upper  # d log P(T > t) / dt
            t_next = t - gap / slope if slope < 0 else 0.5 * (lo + hi)
            if not lo < t_next < hi:
                t_next = 0.5 * (lo + hi)
        if abs(t_next - t) <= 1e-15 * max(1.0, t) or hi - lo <= 1e-15 * max(1.0, hi):
            return t_next
        t = t_next
    return t


def _cornish_fisher(z: float, df: float) -> float:
    """Student-t quantile from the normal one, to order ``df**-4`` (Abramowitz & Stegun 26.7.5)."""
    z2 = z * z
    g1 = (z2 + 1.0) * z / 4.0
    g2 = ((5.0 * z2 + 16.0) * z2 + 3.0) * z / 96.0
    g3 = (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) * z / 384.0
    g4 = ((((79.0 * z2 + 776.0) * z2 + 1482.0) * z2 - 1920.0) * z2 - 945.0) * z / 92160.0
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function, by the modified Lentz method."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _CF_TINY else _CF_TINY)
    h = d
    for m in range(1, _CF_MAX_ITER + 1):
        m2 = 2 * m
        for coef in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + coef * d
            d = 1.0 / (d if abs(d) > _CF_TINY else _CF_TINY)
            c = 1.0 + coef / c
            c = c if abs(c) > _CF_TINY else _CF_TINY
            step = d * c
            h *= step
        if abs(step - 1.0) < _CF_EPS:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge for a={a}, b={b}, x={x}")
