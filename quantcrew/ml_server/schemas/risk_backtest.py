"""Wire contract of the rolling VaR backtest (``POST /v1/risk/backtest``).

Each day ``t`` after the first ``window`` rows, every method forecasts the one-day VaR of the
portfolio from rows ``t - window .. t - 1`` only, and day ``t``'s realised loss is compared with
it. The breach counts are judged by Kupiec's unconditional-coverage test and Christoffersen's
independence and conditional-coverage tests. Conventions are those of :mod:`.risk`: simple
returns in, VaR as a POSITIVE loss fraction of portfolio value.

The level, method and weight rules are the VaR request's own validators, called from here
(not copied), so both endpoints refuse the same inputs with the same messages.
"""

from __future__ import annotations

from pydantic import Field

from quantcrew.ml_server.schemas.common import Provenance, WireModel
from quantcrew.ml_server.schemas.matrix import MatrixPayload
from quantcrew.ml_server.schemas.risk import VAR_METHODS, PortfolioRiskRequest, VarMethod

__all__ = [
    "MIN_FORECAST_DAYS",
    "VarBacktestRequest",
    "VarBacktestResponse",
    "VarBacktestResult",
]

MIN_FORECAST_DAYS = 20
"""A backtest needs more than ``window + MIN_FORECAST_DAYS`` rows."""


class VarBacktestRequest(PortfolioRiskRequest):
    """Rolling one-day VaR backtest of a portfolio, every method on the same days (stateless)."""

    data: MatrixPayload = Field(
        description="Per-asset periodic SIMPLE returns (0.01 = 1 %), one column per asset (one column = a single "
                    "series), oldest row first. Needs more than window + 20 rows.")
    methods: list[VarMethod] = Field(
        default_factory=lambda: list(VAR_METHODS), min_length=1,
        description="VaR methods to backtest. filtered_historical (GJR-GARCH(1,1)-t refitted every refit_every "
                    "days, volatility refiltered daily) needs window >= 250.",
    )
    window: int = Field(default=500, ge=50, le=5000,
                        description="Rows each forecast is estimated from: day t uses rows t - window .. t - 1.")
    refit_every: int = Field(
        default=20, ge=1, le=5000,
        description="Days between refits of the slow parts: t degrees of freedom, Monte Carlo covariance, GARCH "
                    "parameters. Historical and normal VaR, the t scale and the GARCH volatility move every day.",
    )
    n_paths: int = Field(default=10_000, ge=1_000, le=1_000_000,
                         description="Simulated paths per monte_carlo refit.")
    significance: float = Field(default=0.05, gt=0.0, lt=1.0, allow_inf_nan=False,
                                description="Test size: a method passes a test when its p-value is at least this.")
    include_series: bool = Field(default=False,
                                 description="Also return each method's daily VaR series and its breach dates.")

class VarBacktestResult(WireModel):
    """One method at one level over the backtest days."""

    method: VarMethod = Field(description="VaR method.")
    level: float = Field(description="Confidence level, e.g. 0.99.")
    n_observations: int = Field(description="Forecast days compared with a realised loss.")
    n_breaches: int = Field(description="Days whose realised loss exceeded the forecast VaR.")
    breach_rate: float = Field(description="n_breaches / n_observations.")
    expected_rate: float = Field(description="1 - level: the breach rate of a correct VaR.")
    kupiec_lr: float = Field(description="Kupiec proportion-of-failures likelihood ratio (chi2 with 1 dof).")
    kupiec_p_value: float = Field(description="p-value of the Kupiec test (H0: breach probability = 1 - level).")
    christoffersen_lr: float = Field(
        description="Christoffersen independence likelihood ratio (chi2 with 1 dof), from day-to-day transitions.")
    christoffersen_p_value: float = Field(
        description="p-value of the independence test (H0: a breach does not make the next one likelier).")
    conditional_coverage_p_value: float = Field(
        description="p-value of Christoffersen's conditional coverage test (Kupiec + independence, chi2 with 2 dof).")
    passes_kupiec: bool = Field(description="kupiec_p_value >= significance.")
    passes_christoffersen: bool = Field(description="christoffersen_p_value >= significance.")
    passes_conditional_coverage: bool = Field(description="conditional_coverage_p_value >= significance.")
    mean_var: float = Field(description="Average forecast VaR over the backtest days (positive loss fraction).")
    var_series: list[float] | None = Field(
        default=None,
        description="Forecast VaR of each backtest day, first_forecast onwards; null unless include_series.")
    breach_dates: list[str] | None = Field(
        default=None, description="Date (or row index when undated) of each breach; null unless include_series.")


class VarBacktestResponse(Provenance):
    """Coverage of each method's rolling one-day VaR, with the tests' verdicts."""

    columns: list[str] = Field(description="Asset names.")
    weights: list[float] = Field(description="Weights as used (after any normalisation).")
    weights_normalized: bool = Field(description="True when the given weights were rescaled to sum to 1.")
    window: int = Field(description="Estimation window in rows.")
    refit_every: int = Field(description="Days between refits.")
    significance: float = Field(description="Test size used for the passes_* flags.")
    n_forecasts: int = Field(description="Backtest days (rows after the first window).")
    first_forecast_row: int = Field(description="Row index of the first backtest day (= window).")
    first_forecast: str = Field(description="Date of the first backtest day (its row index when undated).")
    last_forecast: str = Field(description="Date of the last backtest day (its row index when undated).")
    results: list[VarBacktestResult] = Field(description="One entry per method and level, methods in request order.")
    method_details: dict[str, dict[str, float | str | bool]] = Field(
        default_factory=dict,
        description="What each method refitted: counts of refits, t degrees of freedom, GARCH parameters "
                    "(medians over refits) and EWMA fallbacks, Monte Carlo paths and shrinkage.",
    )
    warnings: list[str] = Field(default_factory=list, description="Anything worth knowing about the backtest.")
