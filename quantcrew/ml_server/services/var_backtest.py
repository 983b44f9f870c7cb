"""Rolling one-day VaR backtest: forecast from the past window only, count breaches, test coverage.

For each day ``t >= window`` every method forecasts the one-day VaR from ``pnl[t - window:t]``
ONLY (no look-ahead: the forecast of day ``t`` is a function of rows ``< t``), and day ``t`` is
a breach when its realised loss ``-pnl[t]`` exceeds that VaR (strictly). Each method's
forecasts match the single-window functions of :mod:`quantcrew.ml_server.services.var`
on that window, computed in bulk where they can be:

* ``historical``: the linearly interpolated empirical quantile of the window's losses
  (:func:`~quantcrew.ml_server.services.var.historical_var`), all days at once over a
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
never on the data. Coverage tests: :mod:`quantcrew.ml_server.services.coverage_tests`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view
from scipy import special

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.risk import VAR_METHODS, CovarianceMethod, GarchModel, VarMethod
from quantcrew.ml_server.schemas.risk_backtest import (
    MIN_FORECAST_DAYS,
    VarBacktestRequest,
    VarBacktestResponse,
    VarBacktestResult,
)
from quantcrew.ml_server.services.covariance import estimate_covariance
from quantcrew.ml_server.services.coverage_tests import (
    CoverageTest,
    christoffersen_independence,
    conditional_coverage,
    kupiec_pof,
)
from quantcrew.ml_server.services.garch import MIN_GARCH_ROWS, GarchParams, fit_garch, garch_filter
from quantcrew.ml_server.services.matrix import matrix_from_payload
from quantcrew.ml_server.services.var import monte_carlo_var, parametric_t_var, portfolio_weights

__all__ = ["BLOCK_ELEMENTS", "BacktestOutcome", "LevelBacktest", "backtest_reply", "backtest_var"]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Details = dict[str, float | str | bool]

BLOCK_ELEMENTS = 4_000_000
"""Most window values (32 MB of float64) a bulk rolling computation holds at once."""
_TAIL_WARN = 10.0


@dataclass(frozen=True, eq=False)
class LevelBacktest:
    """One method at one level over the backtest days.

    Attributes:
        method: VaR method.
        level: Confidence level.
        var: Forecast VaR of each backtest day, shape ``(n_days,)``.
        breaches: True where the realised loss exceeded the forecast, shape ``(n_days,)``.
        kupiec: Kupiec proportion-of-failures test.
        christoffersen: Christoffersen independence test.
        conditional: Christoffersen conditional coverage test.
        significance: Test size behind the ``passes_*`` properties.
    """

    method: VarMethod
    level: float
    var: FloatArray
    breaches: BoolArray
    kupiec: CoverageTest
    christoffersen: CoverageTest
    conditional: CoverageTest
    significance: float

    @property
    def n_obs(self) -> int:
        """Backtest days."""
        return int(self.breaches.shape[0])

    @property
    def n_breaches(self) -> int:
        """Days whose loss exceeded the VaR."""
        return int(np.count_nonzero(self.breaches))

    @property
    def breach_rate(self) -> float:
        """Share of breach days."""
        return self.n_breaches / self.n_obs

    @property
    def expected_rate(self) -> float:
        """``1 - level`` (rounded to 12 decimals: 0.05, not 0.050000000000000044)."""
        return round(1.0 - self.level, 12)

    @property
    def mean_var(self) -> float:
        """Average forecast VaR."""
        return float(np.mean(self.var))

    @property
    def passes_kupiec(self) -> bool:
        """Kupiec p-value at least the significance."""
        return self.kupiec.p_value >= self.significance

    @property
    def passes_christoffersen(self) -> bool:
        """Independence p-value at least the significance."""
        return self.christoffersen.p_value >= self.significance

    @property
    def passes_conditional(self) -> bool:
        """Conditional-coverage p-value at least the significance."""
        return self.conditional.p_value >= self.significance

    def breach_offsets(self) -> npt.NDArray[np.intp]:
        """Positions of the breaches among the backtest days (add ``first_forecast`` for rows)."""
        return np.flatnonzero(self.breaches)


@dataclass(frozen=True, eq=False)
class BacktestOutcome:
    """Everything :func:`backtest_var` measured.

    Attributes:
        results: One entry per method and level, methods in the order asked, then levels.
        first_forecast: Row of ``pnl`` of the first backtest day (``window``).
        n_rows: Rows of ``pnl``; the last backtest day is row ``n_rows - 1``.
        window: Estimation window.
        refit_every: Days between refits.
        significance: Test size.
        details: Per method, what was refitted (counts, medians of fitted parameters).
        warnings: Anything worth knowing.
        fallback_reason: Set when some GARCH refits fell back to EWMA.
    """

    results: list[LevelBacktest]
    first_forecast: int
    n_rows: int
    window: int
    refit_every: int
    significance: float
    details: dict[str, Details] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    fallback_reason: str | None = None

    @property
    def n_forecasts(self) -> int:
        """Backtest days."""
        return self.n_rows - self.first_forecast

    @property
    def last_forecast(self) -> int:
        """Row of the last backtest day."""
        return self.n_rows - 1


def backtest_var(
    pnl: FloatArray,
    levels: Sequence[float],
    methods: Sequence[VarMethod],
    *,
    window: int = 500,
    refit_every: int = 20,
    n_paths: int = 10_000,
    seed: int = 0,
    asset_returns: FloatArray | None = None,
    weights: FloatArray | None = None,
    covariance_method: CovarianceMethod = "ledoit_wolf",
    significance: float = 0.05,
    device: str = "cpu",
    garch_model: GarchModel = "gjr",
) -> BacktestOutcome:
    """Rolling one-day VaR of ``pnl`` by each method, with breach counts and coverage tests.

    Args:
        pnl: Portfolio periodic simple returns, oldest first, shape ``(n,)``, ``n > window + 20``.
        levels: Confidence levels strictly inside (0, 1).
        methods: VaR methods (see the module docstring).
        window: Rows behind each forecast (at least 3; 250 for ``filtered_historical``).
        refit_every: Days between refits of the t shape, the Monte Carlo covariance and the GARCH
            parameters.
        n_paths: Monte Carlo paths per refit.
        seed: Seed of the Monte Carlo draws (the same at every refit).
        asset_returns: Per-asset returns ``(n, k)`` behind ``pnl`` for ``monte_carlo``; None uses
            ``pnl`` as a single asset.
        weights: Portfolio weights ``(k,)`` for ``asset_returns``.
        covariance_method: Covariance estimator of ``monte_carlo``.
        significance: Test size of the ``passes_*`` flags.
        device: Where Monte Carlo draws (``"cpu"`` or ``"cuda[:N]"``).

    Returns:
        The forecasts, breaches and tests per method and level.

    Raises:
        InvalidInputError: too few rows for the window, a window too short for a method, bad
            levels, methods or significance, mismatched asset returns, a window of constant
            returns, or a covariance that cannot be estimated on some window.
    """
    x = _check_inputs(pnl, levels, methods, window=window, refit_every=refit_every, significance=significance)
    levels = [float(a) for a in levels]
    n = x.shape[0]
    returns, w = _assets(x, asset_returns, weights)
    moments = _RollingMoments(x, window)
    if any(m in ("parametric_normal", "parametric_t") for m in methods):
        moments.check_not_constant()
    forecasters: dict[VarMethod, Callable[[], tuple[FloatArray, Details]]] = {
        "historical": lambda: _historical(x, window, levels),
        "parametric_normal": lambda: _normal(moments, levels),
        "parametric_t": lambda: _student_t(x, window, refit_every, levels, moments),
        "monte_carlo": lambda: _monte_carlo(returns, w, window, refit_every, levels, n_paths=n_paths, seed=seed,
                                            covariance_method=covariance_method, device=device),
        "filtered_historical": lambda: _filtered_historical(x, window, refit_every, levels, garch_model),
    }
    losses = -x[window:]
    results: list[LevelBacktest] = []
    details: dict[str, Details] = {}
    for method in methods:
        forecasts, details[method] = forecasters[method]()
        if not np.all(np.isfinite(forecasts)):
            raise InvalidInputError(
                f"data: {method} gave a non-finite VaR on some window; the returns are too extreme for it",
                details=[{"loc": ["body", "data", "values"], "msg": "non-finite forecast", "method": method}])
        for j, level in enumerate(levels):
            var = np.ascontiguousarray(forecasts[:, j])
            hits = losses > var
            results.append(LevelBacktest(
                method=method, level=level, var=var, breaches=hits,
                kupiec=kupiec_pof(hits.shape[0], int(np.count_nonzero(hits)), level),
                christoffersen=christoffersen_independence(hits), conditional=conditional_coverage(hits, level),
                significance=significance))
    fallbacks = int(details.get("filtered_historical", {}).get("n_fallbacks", 0))
    reason = None
    if fallbacks:
        refits = int(details["filtered_historical"]["n_refits"])
        reason = (f"filtered_historical: {fallbacks} of {refits} GARCH refits failed or did not converge and used "
                  "the EWMA (lambda 0.94) filter instead")
    return BacktestOutcome(results=results, first_forecast=window, n_rows=n, window=window, refit_every=refit_every,
                           significance=significance, details=details,
                           warnings=_warnings(methods, levels, window, n - window, reason), fallback_reason=reason)


def backtest_reply(request: VarBacktestRequest, *, device: str = "cpu") -> VarBacktestResponse:
    """Run the backtest a request asks for and build the wire reply.

    The portfolio return per row is ``returns @ weights`` (weights held constant).

    Args:
        request: The validated request.
        device: Where Monte Carlo draws (``"cpu"`` or ``"cuda[:N]"``).

    Raises:
        InvalidInputError: constant columns or portfolio, too few rows for the window, and the
            cases of :func:`backtest_var`.
    """
    matrix = matrix_from_payload(request.data, min_rows=2)
    flat = matrix.constant_columns()
    if flat:
        raise InvalidInputError(
            f"data: constant column(s) {', '.join(repr(c) for c in flat)}: a column that never varies has no "
            "risk to backtest; drop it",
            details=[{"loc": ["body", "data", "columns"], "msg": "constant column", "columns": flat}])
    weights, normalized = portfolio_weights(request.weights, matrix.n_columns, normalize=request.normalize_weights)
    pnl = matrix.values @ weights
    outcome = backtest_var(
        pnl, request.levels, request.methods, window=request.window, refit_every=request.refit_every,
        n_paths=request.n_paths, seed=request.seed, asset_returns=matrix.values, weights=weights,
        covariance_method=request.covariance_method, significance=request.significance, device=device,
        garch_model=request.garch_model)
    names = matrix.row_names()
    first = outcome.first_forecast
    results = [
        VarBacktestResult(
            method=r.method, level=r.level, n_observations=r.n_obs, n_breaches=r.n_breaches,
            breach_rate=r.breach_rate, expected_rate=r.expected_rate,
            kupiec_lr=r.kupiec.statistic, kupiec_p_value=r.kupiec.p_value,
            christoffersen_lr=r.christoffersen.statistic, christoffersen_p_value=r.christoffersen.p_value,
            conditional_coverage_p_value=r.conditional.p_value, passes_kupiec=r.passes_kupiec,
            passes_christoffersen=r.passes_christoffersen, passes_conditional_coverage=r.passes_conditional,
            mean_var=r.mean_var,
            var_series=r.var.tolist() if request.include_series else None,
            breach_dates=[names[first + int(i)] for i in r.breach_offsets()] if request.include_series else None,
        )
        for r in outcome.results
    ]
    return VarBacktestResponse(
        model_id=None, model_version=None, method_used="var_backtest:" + ",".join(request.methods),
        fallback=outcome.fallback_reason is not None, fallback_reason=outcome.fallback_reason,
        data_hash=matrix.data_hash, seed=request.seed, as_of=matrix.as_of,
        columns=matrix.columns, weights=weights.tolist(), weights_normalized=normalized,
        window=outcome.window, refit_every=outcome.refit_every, significance=outcome.significance,
        n_forecasts=outcome.n_forecasts, first_forecast_row=first, first_forecast=names[first],
        last_forecast=names[outcome.last_forecast], results=results, method_details=outcome.details,
        warnings=outcome.warnings,
    )


# ---------------------------------------------------------------------------------------------
# forecasters: each returns (forecasts of shape (n_days, n_levels), details)


class _RollingMoments:
    """Sample mean and standard deviation (ddof 1) of every window, computed on first use."""

    def __init__(self, x: FloatArray, window: int) -> None:
        self._x = x
        self._window = window

    @cached_property
    def _both(self) -> tuple[FloatArray, FloatArray]:
        n_days = self._x.shape[0] - self._window
        mean, std = np.empty(n_days), np.empty(n_days)
        for lo, block in _window_blocks(self._x, self._window):
            mean[lo:lo + block.shape[0]] = block.mean(axis=1)
            std[lo:lo + block.shape[0]] = block.std(axis=1, ddof=1)
        return mean, std

    @property
    def mean(self) -> FloatArray:
        return self._both[0]

    @property
    def std(self) -> FloatArray:
        return self._both[1]

    def check_not_constant(self) -> None:
        flat = np.flatnonzero(self.std <= 0.0)
        if flat.size:
            row = int(flat[0]) + self._window
            raise InvalidInputError(
                f"data: the portfolio return is constant over the window before row {row} "
                f"(rows {row - self._window}..{row - 1}); parametric VaR needs some variation in every window",
                details=[{"loc": ["body", "data", "values"], "msg": "constant window", "row": row}])


def _historical(x: FloatArray, window: int, levels: list[float]) -> tuple[FloatArray, Details]:
    out = np.empty((x.shape[0] - window, len(levels)))
    for lo, block in _window_blocks(x, window):
        # quantile of the losses, as historical_var takes it (linear interpolation)
        out[lo:lo + block.shape[0]] = np.quantile(-block, levels, axis=1, method="weibull").T
    return out, {"quantile": "weibull", "losses_per_window": float(window)}


def _normal(moments: _RollingMoments, levels: list[float]) -> tuple[FloatArray, Details]:
    z = np.asarray(special.ndtri(levels), dtype=np.float64)
    out: FloatArray = -moments.mean[:, None] + moments.std[:, None] * z[None, :]
    return out, {"ddof": 1.0, "mean_volatility": float(np.mean(moments.std))}


def _student_t(x: FloatArray, window: int, refit_every: int, levels: list[float],
               moments: _RollingMoments) -> tuple[FloatArray, Details]:
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


def _monte_carlo(returns: FloatArray, weights: FloatArray, window: int, refit_every: int, levels: list[float], *,
                 covariance_method: CovarianceMethod, n_paths: int, seed: int,
                 device: str) -> tuple[FloatArray, Details]:
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


def _filtered_historical(x: FloatArray, window: int, refit_every: int, levels: list[float],
                         garch_model: GarchModel) -> tuple[FloatArray, Details]:
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


def _window_blocks(x: FloatArray, window: int) -> list[tuple[int, FloatArray]]:
    """``(first_day, windows)`` blocks: row ``i`` of a block is ``x[d:d + window]`` for day ``d = first_day + i``."""
    views = sliding_window_view(x[:-1], window)  # views[d] = x[d:d + window], the past of row d + window
    step = max(1, BLOCK_ELEMENTS // window)
    return [(lo, views[lo:lo + step]) for lo in range(0, views.shape[0], step)]


# ---------------------------------------------------------------------------------------------
# checks


def _check_inputs(pnl: FloatArray, levels: Sequence[float], methods: Sequence[VarMethod], *, window: int,
                  refit_every: int, significance: float) -> FloatArray:
    x = np.asarray(pnl, dtype=np.float64)
    if x.ndim != 1 or not np.all(np.isfinite(x)):
        raise InvalidInputError("data: the portfolio return series must be one-dimensional and finite",
                                details=[{"loc": ["body", "data", "values"], "msg": "not a finite series"}])
    n = x.shape[0]
    if window < 3:
        raise InvalidInputError(f"window = {window}: at least 3 rows are needed per forecast",
                                details=[{"loc": ["body", "window"], "msg": "must be >= 3"}])
    if n <= window + MIN_FORECAST_DAYS:
        raise InvalidInputError(
            f"window = {window} leaves {max(n - window, 0)} backtest days in {n} rows; a backtest needs more than "
            f"window + {MIN_FORECAST_DAYS} rows (at least {window + MIN_FORECAST_DAYS + 1}): shorten the window "
            "or send more rows",
            details=[{"loc": ["body", "window"], "msg": f"need more than window + {MIN_FORECAST_DAYS} rows",
                      "rows": n, "window": window}])
    if "filtered_historical" in methods and window < MIN_GARCH_ROWS:
        raise InvalidInputError(
            f"window = {window}: filtered_historical fits a GARCH model on each window and needs window >= "
            f"{MIN_GARCH_ROWS}; raise the window or drop filtered_historical from methods",
            details=[{"loc": ["body", "window"], "msg": f"filtered_historical needs window >= {MIN_GARCH_ROWS}"}])
    if refit_every < 1:
        raise InvalidInputError(f"refit_every = {refit_every}: must be at least 1",
                                details=[{"loc": ["body", "refit_every"], "msg": "must be >= 1"}])
    if not 0.0 < significance < 1.0:
        raise InvalidInputError(f"significance = {significance}: must be strictly between 0 and 1",
                                details=[{"loc": ["body", "significance"], "msg": "must be in (0, 1)"}])
    if len(levels) == 0:
        raise InvalidInputError("levels: give at least one confidence level",
                                details=[{"loc": ["body", "levels"], "msg": "empty"}])
    for i, level in enumerate(levels):
        if not (math.isfinite(level) and 0.0 < level < 1.0):
            raise InvalidInputError(f"levels[{i}] = {level}: each level must be strictly between 0 and 1, e.g. 0.95",
                                    details=[{"loc": ["body", "levels", i], "msg": "must be strictly between 0 and 1"}])
    unknown = [m for m in methods if m not in VAR_METHODS]
    if not methods or unknown or len(set(methods)) != len(methods):
        raise InvalidInputError(
            f"methods: give one or more distinct methods among {', '.join(VAR_METHODS)}"
            + (f"; unknown: {', '.join(map(str, unknown))}" if unknown else ""),
            details=[{"loc": ["body", "methods"], "msg": "empty, repeated or unknown methods"}])
    return x


def _assets(x: FloatArray, asset_returns: FloatArray | None,
            weights: FloatArray | None) -> tuple[FloatArray, FloatArray]:
    if asset_returns is None:
        return x[:, None], np.ones(1)
    r = np.asarray(asset_returns, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != x.shape[0]:
        raise InvalidInputError(f"data: asset returns of shape {r.shape} do not match {x.shape[0]} portfolio returns",
                                details=[{"loc": ["body", "data", "values"], "msg": "shape mismatch"}])
    w = np.full(r.shape[1], 1.0 / r.shape[1]) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (r.shape[1],):
        raise InvalidInputError(f"weights: {w.shape[0]} weights for {r.shape[1]} assets",
                                details=[{"loc": ["body", "weights"], "msg": "length mismatch"}])
    return r, w


def _warnings(methods: Sequence[VarMethod], levels: list[float], window: int, n_days: int,
              fallback: str | None) -> list[str]:
    out = []
    for level in levels:
        tail = window * (1.0 - level)
        empirical = [m for m in methods if m in ("historical", "filtered_historical")]
        if empirical and tail < _TAIL_WARN:
            out.append(f"{', '.join(empirical)}: about {tail:.1f} losses per window lie beyond the {level:g} VaR; "
                       "the empirical quantile is noisy")
        expected = n_days * (1.0 - level)
        if expected < _TAIL_WARN:
            out.append(f"only {expected:.1f} breaches expected at {level:g} over {n_days} days: the coverage tests "
                       "have little power")
    if fallback is not None:
        out.append(fallback)
    return out
