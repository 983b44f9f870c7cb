"""The risk family's verbs: covariance, VaR and VaR backtest, each from a request to its reply.

The family is stateless: a covariance of a few hundred rows of a few hundred assets takes
milliseconds to recompute, less than a registry round trip would, so nothing is stored and
every reply has ``model_id = null``. The numeric methods live next door:
:mod:`~quantcrew.ml_server.services.risk.covariance`, :mod:`~quantcrew.ml_server.services.risk.var`
and :mod:`~quantcrew.ml_server.services.risk.backtest`; this module turns a request's table of
asset returns into the portfolio they measure, runs them, and builds the reply (estimates,
diagnostics and warnings).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.risk import (
    CovarianceRequest,
    CovarianceResponse,
    VarEstimate,
    VarMethod,
    VarRequest,
    VarResponse,
)
from quantcrew.ml_server.schemas.risk_backtest import VarBacktestRequest, VarBacktestResponse, VarBacktestResult
from quantcrew.ml_server.services.matrix import matrix_from_payload
from quantcrew.ml_server.services.risk.backtest import backtest_var
from quantcrew.ml_server.services.risk.covariance import (
    MAX_SAMPLE_CONDITION,
    CovarianceEstimate,
    check_return_magnitude,
    estimate_covariance,
)
from quantcrew.ml_server.services.risk.garch import GarchParams, garch_filter
from quantcrew.ml_server.services.risk.var import (
    MIN_OVERLAPPING_WINDOWS,
    T_DF_BOUNDS,
    VarCvar,
    factor_from_covariance,
    filtered_historical_var,
    historical_horizon_rule,
    historical_var,
    monte_carlo_var,
    parametric_normal_var,
    parametric_t_var,
)

__all__ = ["backtest", "covariance", "portfolio_weights", "var"]

FloatArray = npt.NDArray[np.float64]

_TAIL_WARN = 10
"""Warn when an empirical tail holds fewer losses than this."""


def covariance(request: CovarianceRequest, *, min_rows: int = 2) -> CovarianceResponse:
    """Estimate the covariance of the request's returns and build the wire reply.

    Args:
        request: The validated request.
        min_rows: Fewest rows accepted (the server's ``min_rows``; at least 2).

    Raises:
        InvalidInputError: see :func:`~quantcrew.ml_server.services.risk.covariance.estimate_covariance`;
            fewer than ``min_rows`` rows.
    """
    matrix = matrix_from_payload(request.data, min_rows=max(2, min_rows))
    est = estimate_covariance(matrix.values, request.method, columns=matrix.columns)
    warnings: list[str] = []
    n, k = matrix.values.shape
    if n <= k:
        warnings.append(f"{n} observations for {k} assets: the sample covariance would be singular; "
                        f"{request.method} keeps the estimate invertible through shrinkage")
    cond: float | None = est.condition_number
    if not np.isfinite(est.condition_number):
        cond = None
        warnings.append("the estimate is singular (condition number infinite)")
    elif est.condition_number > MAX_SAMPLE_CONDITION:
        warnings.append(f"the estimate is ill-conditioned (condition number {est.condition_number:.3g})")
    return CovarianceResponse(
        model_id=None, model_version=None, method_used=f"covariance:{request.method}", fallback=False,
        data_hash=matrix.data_hash, seed=None, as_of=matrix.as_of,
        columns=matrix.columns, method=request.method,
        covariance=est.covariance.tolist(), correlation=est.correlation.tolist(),
        volatilities=est.volatilities.tolist(), mean=est.mean.tolist(), shrinkage=est.shrinkage,
        condition_number=cond, min_eigenvalue=est.min_eigenvalue, n_observations=n, warnings=warnings,
    )


def var(request: VarRequest, *, device: str, min_rows: int = 2) -> VarResponse:
    """Run every requested VaR method on the weighted portfolio and build the wire reply.

    The portfolio return per period is ``returns @ weights`` (weights held constant, i.e.
    rebalanced every period). The covariance (``request.covariance_method``) is estimated only
    when parametric_normal or monte_carlo is requested.

    Args:
        request: The validated request (weights, levels and horizon already checked by the schema).
        device: ``"cpu"`` or ``"cuda[:N]"``; Monte Carlo draws on it.
        min_rows: Fewest rows accepted (the server's ``min_rows``; filtered_historical needs 250).

    Raises:
        InvalidInputError: constant columns, a constant portfolio, a singular sample covariance,
            too few rows for a GARCH fit, or any estimate that is not finite.
    """
    matrix = matrix_from_payload(request.data, min_rows=max(2, min_rows))
    x = matrix.values
    n, k = x.shape
    check_return_magnitude(x)
    flat = matrix.constant_columns()
    if flat:
        raise InvalidInputError(
            f"data: constant column(s) {', '.join(repr(c) for c in flat)}: a column that never varies has no "
            "risk to estimate; drop it",
            details=[{"loc": ["data", "columns"], "msg": "constant column", "columns": flat}])
    weights, normalized = portfolio_weights(request.weights, k, normalize=request.normalize_weights)
    pnl = x @ weights
    pnl_vol = float(np.std(pnl, ddof=1))
    if pnl_vol == 0.0:
        raise InvalidInputError(
            "weights: the portfolio return is constant (the positions hedge each other exactly); no risk to estimate",
            details=[{"loc": ["weights"], "msg": "constant portfolio return"}])
    levels, horizon = list(request.levels), request.horizon_days
    needs_cov = any(m in ("parametric_normal", "monte_carlo") for m in request.methods)
    est = estimate_covariance(x, request.covariance_method, columns=matrix.columns) if needs_cov else None
    warnings: list[str] = []
    details: dict[str, dict[str, float | str | bool]] = {}
    estimates: list[VarEstimate] = []
    garch: GarchParams | None = None
    for method in request.methods:
        if method == "historical":
            results = historical_var(pnl, levels, horizon)
            rule = historical_horizon_rule(n, horizon)
            n_losses = n - horizon + 1 if rule == "overlapping" else n
            details["historical"] = {"horizon_rule": rule, "n_losses": float(n_losses)}
            if rule == "sqrt_time":
                warnings.append(f"historical: only {n - horizon + 1} overlapping {horizon}-period windows "
                                f"(< {MIN_OVERLAPPING_WINDOWS}); one-period VaR scaled by sqrt({horizon})")
            warnings.extend(_thin_tail_warnings("historical", n_losses, levels))
        elif method == "parametric_normal":
            assert est is not None
            mu_p, sigma_p = _portfolio_moments(weights, est)
            results = parametric_normal_var(mu_p, sigma_p, levels, horizon)
            details["parametric_normal"] = {"mean": mu_p, "volatility": sigma_p, "horizon_rule": "sqrt_time",
                                            "covariance_method": est.method}
        elif method == "parametric_t":
            results, df = parametric_t_var(pnl, levels, horizon)
            details["parametric_t"] = {"df": df, "horizon_rule": "sqrt_time"}
            if df <= T_DF_BOUNDS[0] + 1e-9 or df >= T_DF_BOUNDS[1] - 1e-9:
                warnings.append(f"parametric_t: fitted degrees of freedom hit the bound {df:g}")
        elif method == "monte_carlo":
            assert est is not None
            _, clipped = factor_from_covariance(est.covariance)
            results = monte_carlo_var(weights, est.mean, est.covariance, levels, horizon=horizon,
                                      n_paths=request.n_paths, seed=request.seed, device=device)
            details["monte_carlo"] = {"n_paths": float(request.n_paths), "device": device,
                                      "covariance_method": est.method,
                                      "factor": "eigen_clipped" if clipped else "cholesky"}
            if clipped:
                warnings.append("monte_carlo: the covariance is not positive definite; negative eigenvalues clipped")
            warnings.extend(_thin_tail_warnings("monte_carlo", request.n_paths, levels))
        else:  # filtered_historical
            results, garch = filtered_historical_var(pnl, levels, horizon=horizon, n_paths=request.n_paths,
                                                     seed=request.seed, garch_model=request.garch_model)
            sigma, _ = garch_filter(pnl, garch)
            info = garch.details()
            info.update(sigma_forecast=float(sigma[-1]), sigma_unconditional=_unconditional_vol(garch),
                        horizon_rule="exact" if horizon == 1 else "bootstrap")
            if horizon > 1:
                info["n_paths"] = float(request.n_paths)
            details["filtered_historical"] = info
            warnings.extend(f"filtered_historical: GARCH fit warning: {w}" for w in garch.warnings)
            if garch.fallback:
                warnings.append(f"filtered_historical: {garch.fallback_reason}")
            if horizon == 1:
                warnings.extend(_thin_tail_warnings("filtered_historical", n, levels))
        estimates.extend(_wire_estimates(method, results, horizon, request.portfolio_value))
    cond: float | None = None
    if est is not None and np.isfinite(est.condition_number):
        cond = est.condition_number
    return VarResponse(
        model_id=None, model_version=None, method_used="var:" + ",".join(request.methods),
        fallback=bool(garch is not None and garch.fallback),
        fallback_reason=garch.fallback_reason if garch is not None and garch.fallback else None,
        data_hash=matrix.data_hash, seed=request.seed, as_of=matrix.as_of,
        columns=matrix.columns, weights=weights.tolist(), weights_normalized=normalized,
        portfolio_value=request.portfolio_value, n_observations=n, portfolio_mean=float(np.mean(pnl)),
        portfolio_volatility=pnl_vol, covariance_method=request.covariance_method,
        shrinkage=est.shrinkage if est is not None else None, condition_number=cond,
        estimates=estimates, method_details=details, warnings=warnings,
    )


def backtest(request: VarBacktestRequest, *, device: str = "cpu") -> VarBacktestResponse:
    """Run the backtest a request asks for and build the wire reply.

    The portfolio return per row is ``returns @ weights`` (weights held constant).

    Args:
        request: The validated request.
        device: Where Monte Carlo draws (``"cpu"`` or ``"cuda[:N]"``).

    Raises:
        InvalidInputError: constant columns or portfolio, too few rows for the window, and the
            cases of :func:`~quantcrew.ml_server.services.risk.backtest.backtest_var`.
    """
    matrix = matrix_from_payload(request.data, min_rows=2)
    flat = matrix.constant_columns()
    if flat:
        raise InvalidInputError(
            f"data: constant column(s) {', '.join(repr(c) for c in flat)}: a column that never varies has no "
            "risk to backtest; drop it",
            details=[{"loc": ["data", "columns"], "msg": "constant column", "columns": flat}])
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


def portfolio_weights(given: Sequence[float] | None, k: int, *, normalize: bool) -> tuple[FloatArray, bool]:
    """Weights as used: equal when ``given`` is None, else as given, rescaled to sum to 1 when ``normalize``.

    Args:
        given: The request's weights, one per column, or None.
        k: Columns of the data.
        normalize: Rescale weights that do not sum to 1.

    Returns:
        ``(weights, rescaled)``; ``rescaled`` is True when the given weights were changed.

    Raises:
        InvalidInputError: wrong length, or a zero sum to rescale (field ``weights``).
    """
    if given is None:
        return np.full(k, 1.0 / k), False
    w = np.asarray(given, dtype=np.float64)
    if w.shape != (k,):
        raise InvalidInputError(f"weights has {w.shape[0]} entries but data has {k} columns: give one per column",
                                details=[{"loc": ["weights"], "msg": "length mismatch"}])
    total = math.fsum(given)
    if not normalize or total == 1.0:
        return w, False
    if abs(total) < 1e-12:
        raise InvalidInputError(f"weights sum to {total:.6g}: they cannot be rescaled to sum to 1",
                                details=[{"loc": ["weights"], "msg": "sum is zero"}])
    return w / total, True


def _portfolio_moments(weights: FloatArray, est: CovarianceEstimate) -> tuple[float, float]:
    variance = float(weights @ est.covariance @ weights)
    return float(weights @ est.mean), math.sqrt(max(variance, 0.0))


def _unconditional_vol(params: GarchParams) -> float | str:
    persistence = params.alpha + params.beta
    if persistence >= 1.0 or params.omega <= 0.0:
        return "undefined"
    return math.sqrt(params.omega / (1.0 - persistence))


def _thin_tail_warnings(method: VarMethod, n_losses: int, levels: Sequence[float]) -> list[str]:
    out = []
    for level in levels:
        beyond = n_losses * (1.0 - level)
        if beyond < _TAIL_WARN:
            out.append(f"{method}: about {beyond:.1f} losses lie beyond the {level:g} VaR; the tail estimate is noisy")
    return out


def _wire_estimates(method: VarMethod, results: list[VarCvar], horizon: int, value: float) -> list[VarEstimate]:
    out = []
    for r in results:
        if not (math.isfinite(r.var) and math.isfinite(r.cvar)):
            raise InvalidInputError(
                f"data: {method} gave a non-finite VaR at level {r.level:g}; the returns are too extreme for it",
                details=[{"loc": ["data", "values"], "msg": "non-finite estimate", "method": method}])
        out.append(VarEstimate(method=method, level=r.level, horizon_days=horizon, var=r.var, cvar=r.cvar,
                               var_amount=r.var * value, cvar_amount=r.cvar * value))
    return out
