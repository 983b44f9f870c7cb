"""Rolling one-day VaR backtest: forecast from the past window only, count breaches, test coverage.

For each day ``t >= window`` every method forecasts the one-day VaR from ``pnl[t - window:t]``
ONLY (no look-ahead: the forecast of day ``t`` is a function of rows ``< t``), and day ``t`` is
a breach when its realised loss ``-pnl[t]`` exceeds that VaR (strictly). How each method
forecasts, and when it refits: :mod:`quantcrew.ml_server.services.risk.forecasts`; the coverage
tests: :mod:`quantcrew.ml_server.services.risk.coverage`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.risk import VAR_METHODS, CovarianceMethod, GarchModel, VarMethod
from quantcrew.ml_server.schemas.risk_backtest import MIN_FORECAST_DAYS
from quantcrew.ml_server.services.risk.coverage import (
    CoverageTest,
    christoffersen_independence,
    conditional_coverage,
    kupiec_pof,
)
from quantcrew.ml_server.services.risk.forecasts import (
    Details,
    Forecasts,
    RollingMoments,
    filtered_historical_forecasts,
    historical_forecasts,
    monte_carlo_forecasts,
    normal_forecasts,
    student_t_forecasts,
)
from quantcrew.ml_server.services.risk.garch import MIN_GARCH_ROWS

__all__ = ["BacktestOutcome", "LevelBacktest", "backtest_var"]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

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
        methods: VaR methods (see :mod:`quantcrew.ml_server.services.risk.forecasts`).
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
    moments = RollingMoments(x, window)
    if any(m in ("parametric_normal", "parametric_t") for m in methods):
        moments.check_not_constant()
    forecasters: dict[VarMethod, Callable[[], Forecasts]] = {
        "historical": lambda: historical_forecasts(x, window, levels),
        "parametric_normal": lambda: normal_forecasts(moments, levels),
        "parametric_t": lambda: student_t_forecasts(x, window, refit_every, levels, moments),
        "monte_carlo": lambda: monte_carlo_forecasts(returns, w, window, refit_every, levels, n_paths=n_paths,
                                                     seed=seed, covariance_method=covariance_method, device=device),
        "filtered_historical": lambda: filtered_historical_forecasts(x, window, refit_every, levels, garch_model),
    }
    losses = -x[window:]
    results: list[LevelBacktest] = []
    details: dict[str, Details] = {}
    for method in methods:
        forecasts, details[method] = forecasters[method]()
        if not np.all(np.isfinite(forecasts)):
            raise InvalidInputError(
                f"data: {method} gave a non-finite VaR on some window; the returns are too extreme for it",
                details=[{"loc": ["data", "values"], "msg": "non-finite forecast", "method": method}])
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


# ---------------------------------------------------------------------------------------------
# checks


def _check_inputs(pnl: FloatArray, levels: Sequence[float], methods: Sequence[VarMethod], *, window: int,
                  refit_every: int, significance: float) -> FloatArray:
    x = np.asarray(pnl, dtype=np.float64)
    if x.ndim != 1 or not np.all(np.isfinite(x)):
        raise InvalidInputError("data: the portfolio return series must be one-dimensional and finite",
                                details=[{"loc": ["data", "values"], "msg": "not a finite series"}])
    n = x.shape[0]
    if window < 3:
        raise InvalidInputError(f"window = {window}: at least 3 rows are needed per forecast",
                                details=[{"loc": ["window"], "msg": "must be >= 3"}])
    if n <= window + MIN_FORECAST_DAYS:
        raise InvalidInputError(
            f"window = {window} leaves {max(n - window, 0)} backtest days in {n} rows; a backtest needs more than "
            f"window + {MIN_FORECAST_DAYS} rows (at least {window + MIN_FORECAST_DAYS + 1}): shorten the window "
            "or send more rows",
            details=[{"loc": ["window"], "msg": f"need more than window + {MIN_FORECAST_DAYS} rows",
                      "rows": n, "window": window}])
    if "filtered_historical" in methods and window < MIN_GARCH_ROWS:
        raise InvalidInputError(
            f"window = {window}: filtered_historical fits a GARCH model on each window and needs window >= "
            f"{MIN_GARCH_ROWS}; raise the window or drop filtered_historical from methods",
            details=[{"loc": ["window"], "msg": f"filtered_historical needs window >= {MIN_GARCH_ROWS}"}])
    if refit_every < 1:
        raise InvalidInputError(f"refit_every = {refit_every}: must be at least 1",
                                details=[{"loc": ["refit_every"], "msg": "must be >= 1"}])
    if not 0.0 < significance < 1.0:
        raise InvalidInputError(f"significance = {significance}: must be strictly between 0 and 1",
                                details=[{"loc": ["significance"], "msg": "must be in (0, 1)"}])
    if len(levels) == 0:
        raise InvalidInputError("levels: give at least one confidence level",
                                details=[{"loc": ["levels"], "msg": "empty"}])
    for i, level in enumerate(levels):
        if not (math.isfinite(level) and 0.0 < level < 1.0):
            raise InvalidInputError(f"levels[{i}] = {level}: each level must be strictly between 0 and 1, e.g. 0.95",
                                    details=[{"loc": ["levels", i], "msg": "must be strictly between 0 and 1"}])
    unknown = [m for m in methods if m not in VAR_METHODS]
    if not methods or unknown or len(set(methods)) != len(methods):
        raise InvalidInputError(
            f"methods: give one or more distinct methods among {', '.join(VAR_METHODS)}"
            + (f"; unknown: {', '.join(map(str, unknown))}" if unknown else ""),
            details=[{"loc": ["methods"], "msg": "empty, repeated or unknown methods"}])
    return x


def _assets(x: FloatArray, asset_returns: FloatArray | None,
            weights: FloatArray | None) -> tuple[FloatArray, FloatArray]:
    if asset_returns is None:
        return x[:, None], np.ones(1)
    r = np.asarray(asset_returns, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != x.shape[0]:
        raise InvalidInputError(f"data: asset returns of shape {r.shape} do not match {x.shape[0]} portfolio returns",
                                details=[{"loc": ["data", "values"], "msg": "shape mismatch"}])
    w = np.full(r.shape[1], 1.0 / r.shape[1]) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (r.shape[1],):
        raise InvalidInputError(f"weights: {w.shape[0]} weights for {r.shape[1]} assets",
                                details=[{"loc": ["weights"], "msg": "length mismatch"}])
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
