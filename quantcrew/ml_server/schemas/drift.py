"""Wire contract of drift (inputs and output against a model's training reference) and bar quality.

Pydantic only: the agent-side client imports this module.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from quantcrew.ml_server.schemas.common import FiniteFloat, OHLCVPayload, WireModel

__all__ = ["BarQualityCheck", "BarQualityInfo", "DriftRequest", "DriftReport", "SeriesDriftInfo"]


class DriftRequest(WireModel):
    """Drift of a stored model on new bars: their features (the family's own code) and, where cheap, the
    model's outputs on them, against its training reference; with the bars' data-quality score."""

    model_id: str = Field(min_length=1, max_length=64, description="Registry id of the model version.")
    data: OHLCVPayload
    window: int | None = Field(default=None, ge=1, le=100_000,
                               description="Compare the last `window` feature rows only (default: every row the "
                                           "bars give).")
    include_outputs: bool = Field(default=True,
                                  description="Also run the model on the bars and compare its outputs (regime, "
                                              "anomaly, ensemble); false compares the inputs only.")


class SeriesDriftInfo(WireModel):
    """Drift of one input feature, or of the model's output (``name`` = ``output``)."""

    name: str
    n: int = Field(description="New values compared.")
    psi: FiniteFloat | None = Field(description="Population stability index on the reference's quantile bins.")
    ks_statistic: FiniteFloat | None = Field(description="Two-sample Kolmogorov-Smirnov statistic.")
    ks_pvalue: FiniteFloat | None = Field(description="Its p-value (scipy.stats.ks_2samp).")
    n_effective: FiniteFloat | None = Field(
        default=None, description="The values' effective count given their lag-1 autocorrelation (n when none).")
    ks_pvalue_adjusted: FiniteFloat | None = Field(
        default=None, description="The KS p-value at the effective count (never below ks_pvalue): the one judged.")
    drifted: bool = Field(description="PSI above the threshold AND the adjusted KS p-value below the corrected "
                                      "level.")
    judged: bool = Field(description="At least min_samples values (below that, drifted is always false).")


class BarQualityCheck(WireModel):
    """One data-quality check: bars (or days) found and the first few timestamps."""

    count: int
    first: list[str] = Field(default_factory=list)


class BarQualityInfo(WireModel):
    """Data quality of the bars sent: a score in [0, 1] (share of clean bars) and each check."""

    score: FiniteFloat = Field(ge=0.0, le=1.0)
    n_bars: int
    clean_bars: int
    gaps: BarQualityCheck = Field(description="Bars more than max_gap_days calendar days after the previous one.")
    missing_business_days: BarQualityCheck = Field(
        description="Business days without a bar (daily bars only); lone ones (holidays) are not charged.")
    charged_missing_days: int = Field(description="Missing business days in runs of two or more (charged).")
    stale: BarQualityCheck = Field(description="Bars whose close repeats the previous close for the third time or "
                                               "more in a row.")
    zero_range: BarQualityCheck = Field(description="Bars with high == low while the price moved.")
    outliers: BarQualityCheck = Field(description="Bars whose log return has a robust z-score (median / MAD) above "
                                                  "outlier_z.")
    inconsistent: BarQualityCheck = Field(description="High below open/close, low above them, or a bad price.")
    max_gap_days: int
    outlier_z: FiniteFloat


class DriftReport(WireModel):
    """A model's drift against its training reference, over recent traffic or bars sent."""

    model_id: str
    model_version: int
    family: str
    source: Literal["traffic", "bars"]
    n: int = Field(description="Most values compared for one series.")
    drifted: bool = Field(description="At least one series is drifted.")
    judged: bool = Field(description="At least one series had min_samples values.")
    psi_max: FiniteFloat | None
    ks_pvalue_min: FiniteFloat | None
    drifted_features: list[str] = Field(description="Drifted series (``output`` for the output).")
    missing_features: list[str] = Field(description="Reference features absent from the window.")
    features: list[SeriesDriftInfo]
    output: SeriesDriftInfo | None
    rule: str = Field(description="The decision rule applied, with its thresholds.")
    min_samples: int
    quality: BarQualityInfo | None = Field(default=None, description="Data quality of the bars (bars source only).")
