"""Synthetic multi-asset markets and volatility series whose true law is known.

* :func:`generate_factor_market`: returns ``r = mean + B f + e`` with independent factors and
  idiosyncratic shocks, so the true covariance is ``B Sf B' + diag(idio_vol**2)``: the
  one-factor market of the covariance-shrinkage benchmark (100 assets, 120 observations).
* :func:`generate_correlated_market`: returns with a given mean and covariance.
* :func:`generate_garch_series`: a GARCH(1,1) series with standardized Student-t innovations
  and its true conditional volatility, hence its true one-day VaR and CVaR per step: the
  known-truth series for VaR backtests.

With ``dist="t"`` every shock is a Student-t draw scaled by ``sqrt((df - 2) / df)`` to unit
variance (``df > 2``), so the stated covariance stays the true one while the tails get fat.

The Student-t quantile and density come from :mod:`quantcrew.quant.student_t` (no scipy).
Numpy and the standard library only: this module lives on the agent side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from quantcrew.data.panel import Panel
from quantcrew.quant.student_t import standardized_t_ppf, student_t_pdf, student_t_ppf

__all__ = [
    "AssetMarket",
    "GarchSeries",
    "generate_correlated_market",
    "generate_factor_market",
    "generate_garch_series",
]

FloatArray = npt.NDArray[np.float64]
Dist = Literal["normal", "t"]

_NORMAL = NormalDist()


@dataclass(frozen=True, eq=False)
class AssetMarket:
    """Simulated log returns of several assets and the law that generated them.

    Attributes:
        returns: Log returns, shape ``(n_obs, n_assets)``.
        covariance: The TRUE covariance of each row of ``returns``, ``(n_assets, n_assets)``.
        mean: The TRUE mean of each row, ``(n_assets,)``.
        symbols: One name per column.
        seed: Seed of the generator.
        meta: Generator parameters (``model``, ``dist``, ``df``; betas and factor returns for
            a factor market).
    """

    returns: FloatArray
    covariance: FloatArray
    mean: FloatArray
    symbols: tuple[str, ...]
    seed: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.symbols)
        if self.returns.ndim != 2 or self.returns.shape[1] != n:
            raise ValueError(f"returns must have shape (n_obs, {n}), got {self.returns.shape}")
        if self.covariance.shape != (n, n) or self.mean.shape != (n,):
            raise ValueError(f"covariance must be ({n}, {n}) and mean ({n},), got {self.covariance.shape} "
                             f"and {self.mean.shape}")
        if len(set(self.symbols)) != n:
            raise ValueError(f"symbols must be unique, got {self.symbols}")

    def __len__(self) -> int:
        return int(self.returns.shape[0])

    @property
    def n_assets(self) -> int:
        """Number of assets (columns)."""
        return int(self.returns.shape[1])

    def to_panel(self, start: str = "2000-01-03", start_price: float = 100.0) -> Panel:
        """Prices on business days: ``start_price`` on the first day, then cumulated log returns.

        The panel has ``n_obs + 1`` dates (``start`` rolled forward to a business day, then
        consecutive business days) and ``panel.log_returns()`` gives back ``returns``.
        """
        if not start_price > 0:
            raise ValueError(f"start_price must be positive, got {start_price}")
        log_prices = np.vstack([np.zeros((1, self.n_assets)), np.cumsum(self.returns, axis=0)])
        meta = dict(self.meta, seed=self.seed, frequency="daily", source="synthetic")
        return Panel(symbols=self.symbols, timestamps=_business_days(start, len(self) + 1),
                     close=start_price * np.exp(log_prices), meta=meta)

    def to_matrix_payload(self, start: str = "2000-01-03") -> dict[str, Any]:
        """``{"columns", "timestamps", "values"}`` of the returns, dated as :meth:`to_panel` dates them.

        The same dict as ``self.to_panel(start).to_matrix_payload()``, without the round
        trip through prices.
        """
        days = _business_days(start, len(self) + 1)[1:].astype("datetime64[D]")
        return {"columns": list(self.symbols), "timestamps": [str(d) for d in days], "values": self.returns.tolist()}


@dataclass(frozen=True, eq=False)
class GarchSeries:
    """A GARCH(1,1) series with its true conditional volatility.

    ``returns[t] = mu + sigma[t] * z[t]`` with ``z`` i.i.d. standardized Student-t (unit
    variance) and ``sigma[t]**2 = omega + alpha * (returns[t-1] - mu)**2 + beta * sigma[t-1]**2``.

    Attributes:
        returns: The simulated one-step returns, shape ``(n_obs,)``.
        sigma: True conditional volatility of each step (known before the step), ``(n_obs,)``.
        params: ``omega``, ``alpha``, ``beta``, ``df``, ``mu``, ``burn_in`` and
            ``unconditional_variance`` (``omega / (1 - alpha - beta)``).
        seed: Seed of the generator.
    """

    returns: FloatArray
    sigma: FloatArray
    params: dict[str, float]
    seed: int

    def __len__(self) -> int:
        return int(self.returns.shape[0])

    def true_var(self, level: float = 0.99) -> FloatArray:
        """True conditional one-step Value at Risk of each step, as a positive loss.

        ``VaR[t] = -(mu + sigma[t] * q)`` where ``q`` is the ``1 - level`` quantile of the
        standardized Student-t; a breach is ``returns[t] < -VaR[t]``, which happens with
        probability ``1 - level`` at every step.

        Args:
            level: Confidence level in (0, 1), e.g. 0.99.
        """
        q = standardized_t_ppf(1.0 - _check_level(level), self.params["df"])
        return -(self.params["mu"] + self.sigma * q)

    def true_cvar(self, level: float = 0.99) -> FloatArray:
        """True conditional one-step expected shortfall (CVaR) of each step, as a positive loss.

        The mean loss on the steps beyond :meth:`true_var`:
        ``-mu + sigma[t] * s * f(q) / (1 - level) * (df + q**2) / (df - 1)`` with ``q`` the
        Student-t ``level`` quantile, ``f`` its density and ``s = sqrt((df - 2) / df)``.

        Args:
            level: Confidence level in (0, 1), e.g. 0.975.
        """
        tail = 1.0 - _check_level(level)
        df = self.params["df"]
        if math.isinf(df):
            shortfall = _NORMAL.pdf(_NORMAL.inv_cdf(level)) / tail
        else:
            q = student_t_ppf(level, df)
            shortfall = student_t_pdf(q, df) / tail * (df + q * q) / (df - 1.0) * math.sqrt((df - 2.0) / df)
        return -self.params["mu"] + self.sigma * shortfall


def generate_factor_market(
    n_assets: int,
    n_obs: int,
    *,
    n_factors: int = 1,
    factor_vol: float = 0.01,
    beta_mean: float = 1.0,
    beta_sd: float = 0.3,
    idio_vol_range: tuple[float, float] = (0.01, 0.03),
    mean: float | npt.ArrayLike = 0.0,
    dist: Dist = "normal",
    df: float = 5.0,
    seed: int = 0,
) -> AssetMarket:
    """Simulate a linear factor market with a known covariance.

    ``returns[t] = mean + B @ f[t] + e[t]``: ``n_factors`` independent factors with volatility
    ``factor_vol``; loadings on the first (market) factor drawn ``N(beta_mean, beta_sd)``, on
    any further factor ``N(0, beta_sd)``; independent idiosyncratic shocks with volatilities
    drawn uniformly in ``idio_vol_range``. True covariance: ``factor_vol**2 B B' + diag(idio_vol**2)``.
    With ``dist="t"`` the factors and shocks are independent standardized Student-t draws.

    Args:
        n_assets: Number of assets (at least 1).
        n_obs: Number of observations (at least 1).
        n_factors: Number of factors (at least 1).
        factor_vol: Volatility of each factor (positive).
        beta_mean: Mean loading on the first factor.
        beta_sd: Dispersion of the loadings (not negative).
        idio_vol_range: ``(low, high)`` of the idiosyncratic volatilities, ``0 < low <= high``.
        mean: Mean return, one number or one per asset.
        dist: ``"normal"`` or ``"t"``.
        df: Degrees of freedom for ``dist="t"`` (over 2).
        seed: Seed of ``numpy.random.default_rng``.

    Returns:
        The market; ``meta`` holds ``betas`` ``(n_assets, n_factors)``, ``idio_vol``,
        ``factor_returns`` ``(n_obs, n_factors)`` and the parameters.

    Raises:
        ValueError: a size, volatility, range or distribution parameter out of bounds.
    """
    if n_assets < 1 or n_obs < 1 or n_factors < 1:
        raise ValueError(f"n_assets, n_obs and n_factors must be at least 1, got {n_assets}, {n_obs}, {n_factors}")
    if not factor_vol > 0 or not beta_sd >= 0:
        raise ValueError(f"factor_vol must be positive and beta_sd not negative, got {factor_vol}, {beta_sd}")
    low, high = (float(v) for v in idio_vol_range)
    if not 0 < low <= high:
        raise ValueError(f"idio_vol_range must satisfy 0 < low <= high, got {idio_vol_range}")
    _check_dist(dist, df)
    mu = _vector(mean, n_assets, "mean")
    rng = np.random.default_rng(seed)
    betas = rng.normal(0.0, beta_sd, (n_assets, n_factors))
    betas[:, 0] += beta_mean
    idio = rng.uniform(low, high, n_assets)
    factors = factor_vol * _shocks(rng, (n_obs, n_factors), dist, df)
    noise = idio * _shocks(rng, (n_obs, n_assets), dist, df)
    covariance = factor_vol**2 * (betas @ betas.T) + np.diag(idio**2)
    meta: dict[str, Any] = {
        "model": "factor", "n_factors": n_factors, "factor_vol": factor_vol, "beta_mean": beta_mean,
        "beta_sd": beta_sd, "idio_vol_range": (low, high), "dist": dist, "df": df if dist == "t" else None,
        "betas": betas, "idio_vol": idio, "factor_returns": factors,
    }
    return AssetMarket(returns=mu + factors @ betas.T + noise, covariance=covariance, mean=mu,
                       symbols=_default_symbols(n_assets), seed=seed, meta=meta)


def generate_correlated_market(
    covariance: npt.ArrayLike,
    n_obs: int,
    *,
    mean: float | npt.ArrayLike | None = None,
    dist: Dist = "normal",
    df: float = 5.0,
    seed: int = 0,
    symbols: Sequence[str] | None = None,
) -> AssetMarket:
    """Simulate returns with a given covariance.

    ``returns[t] = mean + L z[t]`` with ``L L' = covariance`` (Cholesky, or a symmetric square
    root for a singular positive semi-definite matrix). With ``dist="t"`` the rows are
    multivariate Student-t: ``z`` normal times ``sqrt((df - 2) / w)`` with ``w ~ chi2(df)``
    shared by the row, so the covariance is still ``covariance``.

    Args:
        covariance: Symmetric positive semi-definite ``(n, n)`` matrix.
        n_obs: Number of observations (at least 1).
        mean: Mean return, one number or one per asset; None for zero.
        dist: ``"normal"`` or ``"t"``.
        df: Degrees of freedom for ``dist="t"`` (over 2).
        seed: Seed of ``numpy.random.default_rng``.
        symbols: Column names; default ``A001``, ``A002``...

    Returns:
        The market, with ``covariance`` (symmetrized) as its true covariance.

    Raises:
        ValueError: the matrix is not square, finite, symmetric and positive semi-definite
            (the message gives its smallest eigenvalue), or another argument is out of bounds.
    """
    cov, root, how = _square_root(covariance)
    n = cov.shape[0]
    if n_obs < 1:
        raise ValueError(f"n_obs must be at least 1, got {n_obs}")
    _check_dist(dist, df)
    names = _default_symbols(n) if symbols is None else tuple(str(s) for s in symbols)
    if len(names) != n:
        raise ValueError(f"got {len(names)} symbols for a {n} x {n} covariance")
    mu = _vector(0.0 if mean is None else mean, n, "mean")
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n_obs, n))
    if dist == "t":
        z *= np.sqrt((df - 2.0) / rng.chisquare(df, n_obs))[:, None]
    meta: dict[str, Any] = {"model": "correlated", "dist": dist, "df": df if dist == "t" else None,
                            "factorization": how}
    return AssetMarket(returns=mu + z @ root.T, covariance=cov, mean=mu, symbols=names, seed=seed, meta=meta)


def generate_garch_series(
    n_obs: int,
    *,
    omega: float = 1e-6,
    alpha: float = 0.08,
    beta: float = 0.9,
    df: float = 6.0,
    mu: float = 0.0,
    seed: int = 0,
    burn_in: int = 500,
) -> GarchSeries:
    """Simulate a GARCH(1,1) series with standardized Student-t innovations.

    The variance starts at its unconditional level ``omega / (1 - alpha - beta)``; the first
    ``burn_in`` steps are simulated and dropped. ``df=math.inf`` gives normal innovations.

    Args:
        n_obs: Number of returns kept (at least 1).
        omega: Variance intercept (positive).
        alpha: Weight of the last squared shock (not negative).
        beta: Weight of the last variance (not negative); ``alpha + beta < 1``.
        df: Degrees of freedom of the innovations (over 2, or ``math.inf``).
        mu: Mean return per step.
        seed: Seed of ``numpy.random.default_rng``.
        burn_in: Steps simulated and dropped before the first kept one (not negative).

    Returns:
        The returns, their true conditional volatility and the parameters.

    Raises:
        ValueError: a parameter out of bounds (non-stationary ``alpha + beta >= 1`` included).
    """
    if n_obs < 1 or burn_in < 0:
        raise ValueError(f"n_obs must be at least 1 and burn_in not negative, got {n_obs}, {burn_in}")
    if not (omega > 0 and alpha >= 0 and beta >= 0 and alpha + beta < 1):
        raise ValueError(f"GARCH(1,1) needs omega > 0, alpha >= 0, beta >= 0 and alpha + beta < 1 (stationary), "
                         f"got omega={omega}, alpha={alpha}, beta={beta}")
    if not df > 2 or not math.isfinite(mu):
        raise ValueError(f"df must be over 2 (unit-variance innovations) and mu finite, got df={df}, mu={mu}")
    rng = np.random.default_rng(seed)
    total = n_obs + burn_in
    z = rng.standard_normal(total) if math.isinf(df) else rng.standard_t(df, total) * math.sqrt((df - 2.0) / df)
    unconditional = omega / (1.0 - alpha - beta)
    sigma = np.empty(total)
    shocks = np.empty(total)
    variance = unconditional
    for t, zt in enumerate(z.tolist()):  # a recursion: one step at a time, on Python floats
        s = math.sqrt(variance)
        e = s * zt
        sigma[t] = s
        shocks[t] = e
        variance = omega + alpha * e * e + beta * variance
    params = {"omega": omega, "alpha": alpha, "beta": beta, "df": float(df), "mu": mu, "burn_in": float(burn_in),
              "unconditional_variance": unconditional}
    return GarchSeries(returns=mu + shocks[burn_in:], sigma=sigma[burn_in:], params=params, seed=seed)


# --- market internals --------------------------------------------------------------------


def _check_dist(dist: str, df: float) -> None:
    if dist not in ("normal", "t"):
        raise ValueError(f"dist must be 'normal' or 't', got {dist!r}")
    if dist == "t" and not df > 2:
        raise ValueError(f"dist='t' needs df > 2 for a finite covariance, got {df}")


def _check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), e.g. 0.99, got {level}")
    return level


def _shocks(rng: np.random.Generator, shape: tuple[int, int], dist: str, df: float) -> FloatArray:
    """Independent unit-variance draws: normal, or Student-t scaled by ``sqrt((df - 2) / df)``."""
    if dist == "t":
        return rng.standard_t(df, shape) * math.sqrt((df - 2.0) / df)
    return rng.standard_normal(shape)


def _vector(value: float | npt.ArrayLike, n: int, name: str) -> FloatArray:
    out = np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)) if np.ndim(value) == 0 \
        else np.asarray(value, dtype=np.float64)
    if out.shape != (n,) or not np.all(np.isfinite(out)):
        raise ValueError(f"{name} must be one finite number or {n} of them, got shape {out.shape}")
    return np.array(out)


def _square_root(covariance: npt.ArrayLike) -> tuple[FloatArray, FloatArray, str]:
    """``(cov, L, how)`` with ``L @ L.T == cov``: Cholesky, or ``V sqrt(w)`` for a singular PSD matrix."""
    cov = np.asarray(covariance, dtype=np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] == 0:
        raise ValueError(f"covariance must be a non-empty square matrix, got shape {cov.shape}")
    if not np.all(np.isfinite(cov)):
        raise ValueError("covariance holds NaN or infinite entries")
    scale = float(np.max(np.abs(cov))) or 1.0
    asym = float(np.max(np.abs(cov - cov.T)))
    if asym > 1e-10 * scale:
        raise ValueError(f"covariance is not symmetric: max |C - C'| = {asym:.3g}")
    cov = 0.5 * (cov + cov.T)
    try:
        return cov, np.asarray(np.linalg.cholesky(cov), dtype=np.float64), "cholesky"
    except np.linalg.LinAlgError as exc:
        w, v = np.linalg.eigh(cov)
        if w[0] < -1e-10 * scale:
            raise ValueError(f"covariance is not positive semi-definite: Cholesky failed and its smallest "
                             f"eigenvalue is {w[0]:.6g}") from exc
        # Eigenvalues within rounding of zero are zero: a rank-k matrix gives draws of rank k.
        root = np.sqrt(np.where(w > 1e-10 * scale, w, 0.0))
        return cov, np.asarray(v * root, dtype=np.float64), "eigen"


def _default_symbols(n: int) -> tuple[str, ...]:
    width = max(3, len(str(n)))
    return tuple(f"A{i:0{width}d}" for i in range(1, n + 1))


def _business_days(start: str, n: int) -> npt.NDArray[np.datetime64]:
    days = np.busday_offset(np.datetime64(start, "D"), np.arange(n), roll="forward")
    return days.astype("datetime64[ns]")
