"""Wire contract of the risk family: shrunk covariance estimates and portfolio VaR / CVaR.

Conventions: returns are periodic SIMPLE returns (fractions, e.g. 0.01 = 1 %), oldest row
first; losses, VaR and CVaR are POSITIVE numbers expressed as fractions of portfolio value
(``var_amount`` / ``cvar_amount`` multiply them by ``portfolio_value``). CVaR is the expected
shortfall: the mean loss beyond the VaR. A simple return is above -1 (no holding loses more than
all of it), so a portfolio request refuses returns at or below -1 (and above ``MAX_SIMPLE_RETURN``).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from quantcrew.ml_server.schemas.common import MAX_ABS_VALUE, MAX_SIMPLE_RETURN, FiniteFloat, Provenance, WireModel
from quantcrew.ml_server.schemas.matrix import MatrixPayload

__all__ = [
    "COVARIANCE_METHODS",
    "VAR_METHODS",
    "CovarianceMethod",
    "CovarianceRequest",
    "CovarianceResponse",
    "GarchModel",
    "PortfolioRiskRequest",
    "VarEstimate",
    "VarMethod",
    "VarRequest",
    "VarResponse",
]

CovarianceMethod = Literal["sample", "ledoit_wolf", "oas", "constant_correlation"]
GarchModel = Literal["gjr", "symmetric"]
"""Volatility model of filtered historical simulation: asymmetric GJR-GARCH(1,1) or GARCH(1,1)."""

COVARIANCE_METHODS: tuple[CovarianceMethod, ...] = ("sample", "ledoit_wolf", "oas", "constant_correlation")

VarMethod = Literal["historical", "parametric_normal", "parametric_t", "monte_carlo", "filtered_historical"]
VAR_METHODS: tuple[VarMethod, ...] = (
    "historical", "parametric_normal", "parametric_t", "monte_carlo", "filtered_historical",
)

WEIGHT_SUM_TOLERANCE = 1e-6
"""How far from 1 the weights may sum when ``normalize_weights`` is false."""


def _default_levels() -> list[float]:
    return [0.95, 0.99]


def _default_methods() -> list[VarMethod]:
    return list(VAR_METHODS)


class CovarianceRequest(WireModel):
    """Estimate the covariance of asset returns (stateless: nothing is kept)."""

    data: MatrixPayload = Field(description="Per-asset periodic returns: one column per asset, one row per period.")
    method: CovarianceMethod = Field(
        default="ledoit_wolf",
        description="sample (unbiased, refused when singular or near-singular), ledoit_wolf or oas (shrink toward "
                    "a scaled identity, scikit-learn), constant_correlation (Ledoit & Wolf 2004 target).",
    )


class CovarianceResponse(Provenance):
    """A covariance estimate with its conditioning diagnostics."""

    columns: list[str] = Field(description="Asset names, in the order of the matrix rows and columns.")
    method: CovarianceMethod = Field(description="Estimator used.")
    covariance: list[list[float]] = Field(description="Covariance matrix (per period, in return units squared).")
    correlation: list[list[float]] = Field(description="Correlation matrix implied by the covariance.")
    volatilities: list[float] = Field(description="Per-asset standard deviation per period (sqrt of the diagonal).")
    mean: list[float] = Field(description="Per-asset sample mean return per period.")
    shrinkage: float | None = Field(description="Shrinkage intensity in [0, 1]; null for the sample estimator.")
    condition_number: float | None = Field(
        description="Largest over smallest eigenvalue; null when the matrix is singular (infinite).")
    min_eigenvalue: float = Field(description="Smallest eigenvalue of the estimate.")
    n_observations: int = Field(description="Rows used.")
    warnings: list[str] = Field(default_factory=list, description="Anything worth knowing about the estimate.")


class PortfolioRiskRequest(WireModel):
    """What every portfolio VaR request shares: returns, weights, levels, methods, estimators, seed."""

    data: MatrixPayload = Field(
        description="Per-asset periodic SIMPLE returns (0.01 = 1 %), one column per asset, oldest row first.")
    normalize_weights: bool = Field(
        default=False, description="Rescale the given weights to sum to 1 instead of refusing them.")
    weights: list[FiniteFloat] | None = Field(
        default=None,
        description="Portfolio weight per column (null = equal weights). Must sum to 1 within 1e-6 unless "
                    "normalize_weights is true; negative weights (shorts) are allowed; all zeros are refused.",
    )
    levels: list[float] = Field(
        default_factory=_default_levels, min_length=1, max_length=16,
        description="Confidence levels, each strictly between 0 and 1 and unique, e.g. [0.95, 0.99].",
    )
    methods: list[VarMethod] = Field(
        default_factory=_default_methods, min_length=1,
        description="VaR methods to run. filtered_historical (GJR-GARCH(1,1)-t, Barone-Adesi) needs >= 250 rows.",
    )
    covariance_method: CovarianceMethod = Field(
        default="constant_correlation",
        description="Covariance estimator for parametric_normal and monte_carlo. "
                    "The default shrinks correlations toward their mean and keeps each asset's own variance; "
                    "'ledoit_wolf' and 'oas' shrink toward a scaled identity, which inflates the variance of "
                    "low-volatility assets held beside a volatile one.")
    garch_model: GarchModel = Field(
        default="gjr",
        description="Volatility model of filtered_historical: 'gjr' (GJR-GARCH(1,1): falls raise volatility more than "
                    "rises) or 'symmetric' (GARCH(1,1)).")
    seed: int = Field(default=0, ge=0, description="Seed of every random draw: same seed, same answer.")

    @field_validator("data")
    @classmethod
    def _simple_returns(cls, data: MatrixPayload) -> MatrixPayload:
        values = np.asarray(data.values, dtype=np.float64)
        bad = ~((values > -1.0) & (values <= MAX_SIMPLE_RETURN))
        if bad.any():
            i, j = (int(k) for k in np.argwhere(bad)[0])
            raise ValueError(
                f"values[{i}][{j}] (column '{data.columns[j]}') is {values[i, j]:g}: a simple return must lie above -1 "
                f"(a loss of all the holding) and at most {MAX_SIMPLE_RETURN:g}")
        return data

    @field_validator("levels")
    @classmethod
    def _levels_inside_unit_interval(cls, levels: list[float]) -> list[float]:
        for i, level in enumerate(levels):
            if not math.isfinite(level) or not 0.0 < level < 1.0:
                raise ValueError(f"levels[{i}] = {level}: each level must be strictly between 0 and 1, e.g. 0.95")
        if len(set(levels)) != len(levels):
            raise ValueError("levels must be unique")
        return levels

    @field_validator("methods")
    @classmethod
    def _methods_unique(cls, methods: list[VarMethod]) -> list[VarMethod]:
        if len(set(methods)) != len(methods):
            raise ValueError("methods must not repeat")
        return methods

    @field_validator("weights")
    @classmethod
    def _weights_fit_columns(cls, weights: list[float] | None, info: ValidationInfo) -> list[float] | None:
        # data and normalize_weights are declared before weights, so they are validated already
        if weights is None:
            return None
        data = info.data.get("data")
        if isinstance(data, MatrixPayload) and len(weights) != len(data.columns):
            raise ValueError(
                f"weights has {len(weights)} entries but data has {len(data.columns)} columns: give one per column")
        if all(w == 0.0 for w in weights):
            raise ValueError("weights are all zero: there is no portfolio")
        total = math.fsum(weights)
        if info.data.get("normalize_weights", False):
            if abs(total) < 1e-12:
                raise ValueError(f"weights sum to {total:.6g}: they cannot be rescaled to sum to 1")
        elif abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
            raise ValueError(
                f"weights sum to {total:.10g}, not 1 (tolerance 1e-6); "
                "set normalize_weights=true to rescale them to sum to 1")
        return weights


class VarRequest(PortfolioRiskRequest):
    """Portfolio Value-at-Risk and CVaR (expected shortfall) by several methods (stateless)."""

    horizon_days: int = Field(default=1, ge=1, le=250, description="Horizon in periods (rows), 1 to 250.")
    n_paths: int = Field(default=100_000, ge=1_000, le=5_000_000,
                         description="Simulated paths for monte_carlo (and filtered_historical when horizon > 1).")
    portfolio_value: float = Field(default=1.0, gt=0, le=MAX_ABS_VALUE, allow_inf_nan=False,
                                   description="Portfolio value used for var_amount and cvar_amount.")

class VarEstimate(WireModel):
    """One method at one level."""

    method: VarMethod = Field(description="Method that produced this estimate.")
    level: float = Field(description="Confidence level, e.g. 0.99.")
    horizon_days: int = Field(description="Horizon in periods.")
    var: float = Field(description="Value-at-Risk as a positive loss fraction of portfolio value.")
    cvar: float = Field(description="Expected shortfall (mean loss beyond the VaR), positive fraction.")
    var_amount: float = Field(description="var * portfolio_value.")
    cvar_amount: float = Field(description="cvar * portfolio_value.")


class VarResponse(Provenance):
    """Portfolio VaR / CVaR per method and level, with what each method fitted."""

    columns: list[str] = Field(description="Asset names.")
    weights: list[float] = Field(description="Weights as used (after any normalisation).")
    weights_normalized: bool = Field(description="True when the given weights were rescaled to sum to 1.")
    portfolio_value: float = Field(description="Portfolio value used for the amounts.")
    n_observations: int = Field(description="Rows used.")
    portfolio_mean: float = Field(description="Sample mean of the portfolio return per period.")
    portfolio_volatility: float = Field(description="Sample standard deviation of the portfolio return per period.")
    covariance_method: CovarianceMethod = Field(description="Covariance estimator used by the covariance methods.")
    shrinkage: float | None = Field(
        description="Shrinkage intensity of that estimator; null for sample or when no method needed a covariance.")
    condition_number: float | None = Field(
        description="Condition number of the covariance; null when no method needed one.")
    estimates: list[VarEstimate] = Field(description="One entry per method and level, methods in request order.")
    method_details: dict[str, dict[str, float | str | bool]] = Field(
        default_factory=dict,
        description="What each method fitted or chose: t degrees of freedom, GARCH parameters and forecast, "
                    "the historical horizon rule, Monte Carlo paths.",
    )
    warnings: list[str] = Field(default_factory=list, description="Anything worth knowing about the estimates.")
