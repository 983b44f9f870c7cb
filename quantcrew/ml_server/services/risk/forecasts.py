"""Rolling one-day VaR forecasts, one method at a time, for every day of a backtest.

The forecast of day ``t >= window`` uses ``pnl[t - window:t]`` ONLY. Each method matches the
single-window function of :mod:`quantcrew.ml_server.services.risk.var` on that window, computed
in bulk where it can be:

* ``historical``: the empirical quantile of the window's losses
  (:func:`~quantcrew.ml_server.services.risk.var.historical_var`), all days at once over a
  ``sliding_window_view`` in row blocks (bounded memory).
* ``parametric_normal``: ``-m_t + s_t z_a`` from the window's sample mean and standard
  deviation (ddof 1) of the portfolio return, every day.
* ``parametric_t``: the Student t (``parametric_t_var``, maximum likelihood) is refitted every
  ``refit_every`` days; in between the fitted shape is kept and the location and scale follow
  the window's mean and standard deviation daily: ``VaR_t = -m_t + s_t (VaR_r + m_r) / s_r``
  with ``r`` the last refit day, which is exactly ``parametric_t_var`` on refit days.
* ``monte_carlo``: every ``refit_every`` days, the window's shrunk covariance
  (``covariance_method``) of the asset returns (a single series: its variance) and mean feed
  ``monte_carlo_var`` with ``n_paths`` paths and the same ``seed``; the VaR is held until the
  next refit.
* ``filtered_historical``: GARCH(1,1)-t parameters are refitted every ``refit_every`` days on
  the window; EVERY day the window is refiltered with those parameters (``garch_filter``) and
  ``VaR_t = `` the ``a``-quantile of ``-(mu + sigma_t e)`` over the window's standardised
  residuals ``e``, ``sigma_t`` the one-step-ahead volatility: exactly
  ``filtered_historical_var(window, params=...)`` at horizon 1. A refit that falls back to
  EWMA (RiskMetrics) is counted and reported.

Refit days are ``window, window + refit_every, ...``: the schedule depends on row indices only,
never on the data. Every forecaster returns ``(forecasts, details)``: forecasts of shape
``(n_days, n_levels)`` with ``n_days = len(x) - window``, and what it refitted.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view
from scipy import special

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.risk import CovarianceMethod, GarchModel
from quantcrew.ml_server.services.risk.covariance import estimate_covariance
from quantcrew.ml_server.services.risk.garch import GarchParams, fit_garch, garch_filter
from quantcrew.ml_server.services.risk.var import monte_carlo_var, parametric_t_var

__all__ = [
    "BLOCK_ELEMENTS",
    "Details",
    "Forecasts",
    "RollingMoments",
    "filtered_historical_forecasts",
    "historical_forecasts",
    "monte_carlo_forecasts",
    "normal_forecasts",
    "student_t_forecasts",
    "window_blocks",
]

FloatArray = npt.NDArray[np.float64]
Details = dict[str, float | str | bool]
Forecasts = tuple[FloatArray, Details]

BLOCK_ELEMENTS = 4_000_000
"""Most window values (32 MB of float64) a bulk rolling computation holds at once."""


class RollingMoments:
    """Sample mean and standard deviation (ddof 1) of every window, computed on first use.

    Args:
        x: Portfolio returns, oldest first.
        window: Rows behind each forecast.
    """

    def __init__(self, x: FloatArray, window: int) -> None:
        self._x = x
        self._window = window

    @cached_property
    def _both(self) -> tuple[FloatArray, FloatArray]:
        n_days = self._x.shape[0] - self._window
        mean, std = np.empty(n_days), np.empty(n_days)
        for lo, block in window_blocks(self._x, self._window):
            mean[lo:lo + block.shape[0]] = block.mean(axis=1)
            std[lo:lo + block.shape[0]] = block.std(axis=1, ddof=1)
        return mean, std

    @property
    def mean(self) -> FloatArray:
        """Mean of the window behind each backtest day."""
        return self._both[0]

    @property
    def std(self) -> FloatArray:
        """Standard deviation (ddof 1) of the window behind each backtest day."""
        return self._both[1]

    def check_not_constant(self) -> None:
        """Refuse a window of constant returns (field ``data``): parametric VaR has no scale there."""
        flat = np.flatnonzero(self.std <= 0.0)
        if flat.size:
            row = int(flat[0]) + self._window
            raise InvalidInputError(
                f"data: the portfolio return is constant over the window before row {row} "
                f"(rows {row - self._window}..{row - 1}); parametric VaR needs some variation in every window",
                details=[{"loc": ["data", "values"], "msg": "constant window", "row": row}])


def historical_forecasts(x: FloatArray, window: int, levels: list[float]) -> Forecasts:
    """Empirical quantile of each window's losses (Weibull plotting position, as ``historical_var``)."""
    out = np.empty((x.shape[0] - window, len(levels)))
    for lo, block in window_blocks(x, window):
        # quantile of the losses, as historical_var takes it
        out[lo:lo + block.shape[0]] = np.quantile(-block, levels, axis=1, method="weibull").T
    return out, {"quantile": "weibull", "losses_per_window": float(window)}


def normal_forecasts(moments: RollingMoments, levels: list[float]) -> Forecasts:
    """``-m_t + s_t z_a`` from each window's mean and standard deviation."""
    z = np.asarray(special.ndtri(levels), dtype=np.float64)
    out: FloatArray = -moments.mean[:, None] + moments.std[:, None] * z[None, :]
    return out, {"ddof": 1.0, "mean_volatility": float(np.mean(moments.std))}


def student_t_forecasts(x: FloatArray, window: int, refit_every: int, levels: list[float],
                        moments: RollingMoments) -> Forecasts:
    """Student t refitted every ``refit_every`` days, its location and scale following the window daily."""
    n_days = x.shape[0] - window
    mean, std = moments.mean, moments.std
    scaled = np.empty((n_days, len(levels)))
    dfs = []
    for start in range(0, n_days, refit_every):
        t = start + window
        fitted, df = parametric_t_var(x[t - window:t], levels)
        dfs.append(df)
        # the fitted VaR in units of the window's standard deviation, above its mean
        scaled[start:start + refit_every] = [(f.var + mean[start]) / std[start] for f in fitted]
    out: FloatArray = -mean[:, None] + std[:, None] * scaled
    return out, {"n_refits": float(len(dfs)), "df_min": min(dfs), "df_median": float(np.median(dfs)),
                 "df_max": max(dfs)}


def monte_carlo_forecasts(returns: FloatArray, weights: FloatArray, window: int, refit_every: int,
                          levels: list[float], *, covariance_method: CovarianceMethod, n_paths: int, seed: int,
                          device: str) -> Forecasts:
    """Monte Carlo VaR of the window's shrunk asset covariance, refitted every ``refit_every`` days.

    Raises:
        InvalidInputError: the covariance cannot be estimated on some window (the window is named).
    """
    n_days = returns.shape[0] - window
    out = np.empty((n_days, len(levels)))
    shrinkage: list[float] = []
    for start in range(0, n_days, refit_every):
        t = start + window
        try:
            est = estimate_covariance(returns[t - window:t], covariance_method)
        except InvalidInputError as exc:
            raise InvalidInputError(f"monte_carlo, window of rows {t - window}..{t - 1}: {exc.message}",
                                    details=exc.details) from exc
        if est.shrinkage is not None:
            shrinkage.append(est.shrinkage)
        fitted = monte_carlo_var(weights, est.mean, est.covariance, levels, n_paths=n_paths, seed=seed, device=device)
        out[start:start + refit_every] = [f.var for f in fitted]
    info: Details = {"n_refits": float(-(-n_days // refit_every)), "n_paths": float(n_paths),
                     "covariance_method": covariance_method, "device": device}
    if shrinkage:
        info["shrinkage_median"] = float(np.median(shrinkage))
    return out, info


def filtered_historical_forecasts(x: FloatArray, window: int, refit_every: int, levels: list[float],
                                  garch_model: GarchModel) -> Forecasts:
    """GARCH refitted every ``refit_every`` days, the window refiltered and its residual quantile taken daily."""
    n_days = x.shape[0] - window
    out = np.empty((n_days, len(levels)))
    fits: list[GarchParams] = []
    params: GarchParams | None = None
    for day in range(n_days):
        past = x[day:day + window]
        if day % refit_every == 0:
            params = fit_garch(past, model=garch_model)
            fits.append(params)
        assert params is not None
        sigma, resid = garch_filter(past, params)
        out[day] = np.quantile(-(params.mu + float(sigma[-1]) * resid), levels, method="weibull")
    good = [p for p in fits if not p.fallback]
    info: Details = {"n_refits": float(len(fits)), "n_fallbacks": float(len(fits) - len(good))}
    if good:
        info.update(alpha_median=float(np.median([p.alpha for p in good])),
                    gamma_median=float(np.median([p.gamma for p in good])),
                    beta_median=float(np.median([p.beta for p in good])),
                    persistence_median=float(np.median([p.persistence for p in good])))
        nus = [p.nu for p in good if p.nu is not None]
        if nus:
            info["nu_median"] = float(np.median(nus))
    return out, info


def window_blocks(x: FloatArray, window: int) -> list[tuple[int, FloatArray]]:
    """``(first_day, windows)`` blocks: row ``i`` of a block is ``x[d:d + window]`` for day ``d = first_day + i``."""
    views = sliding_window_view(x[:-1], window)  # views[d] = x[d:d + window], the past of row d + window
    step = max(1, BLOCK_ELEMENTS // window)
    return [(lo, views[lo:lo + step]) for lo in range(0, views.shape[0], step)]
