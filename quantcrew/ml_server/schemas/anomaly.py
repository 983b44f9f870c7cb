"""Wire contract of the anomaly family (IsolationForest on causal OHLCV features).

Scores follow one convention everywhere: higher means more anomalous (the negated
``score_samples`` of scikit-learn's IsolationForest). A bar is flagged when its score is
above the threshold learned at fit (the ``1 - contamination`` quantile of the training scores).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from quantcrew.ml_server.schemas.common import ModelInfo, OHLCVPayload, Provenance, TriggerField, WireModel
from quantcrew.ml_server.schemas.serving import ServedReply, ServedRequest

__all__ = [
    "ANOMALY_FEATURES",
    "AnomalyFeature",
    "AnomalyFitRequest",
    "AnomalyFitResponse",
    "AnomalyPoint",
    "AnomalyRequest",
    "AnomalyResponse",
    "AnomalyScoreRequest",
]

AnomalyFeature = Literal["log_return", "abs_return", "range", "volume_z", "gap"]
ANOMALY_FEATURES: tuple[AnomalyFeature, ...] = ("log_return", "abs_return", "range", "volume_z", "gap")

_SEED_MAX = 2**32 - 1


class AnomalyRequest(WireModel):
    """Fit an IsolationForest on per-bar features and score every bar (stateless: nothing is kept)."""

    data: OHLCVPayload
    features: list[AnomalyFeature] | None = Field(
        default=None, min_length=1,
        description="Per-bar features, each from the bar and earlier bars only: 'log_return' (close-to-close "
                    "log return), 'abs_return' (its absolute value), 'range' (log(high / low)), 'volume_z' "
                    "(volume z-score against the previous zscore_window bars, the bar itself excluded), 'gap' "
                    "(log(open / previous close)). Null uses every available one ('volume_z' only when "
                    "data.volume was sent; naming 'volume_z' without data.volume is refused).",
    )
    contamination: float = Field(
        default=0.01, gt=0.0, le=0.5,
        description="Expected share of anomalous bars; sets the flag threshold (the 1 - contamination quantile "
                    "of the training scores).",
    )
    n_estimators: int = Field(default=200, ge=10, le=2000, description="Number of isolation trees.")
    zscore_window: int = Field(
        default=20, ge=5, le=1000,
        description="Trailing window, in bars, of the volume z-score; the first zscore_window bars have no "
                    "'volume_z' and are not scored when it is used.",
    )
    top_k: int = Field(default=10, ge=1, le=100, description="How many of the highest-scoring bars to list.")
    seed: int = Field(default=0, ge=0, le=_SEED_MAX, description="Seed of the forest (same seed, same scores).")

    @model_validator(mode="after")
    def _distinct_features(self) -> AnomalyRequest:
        if self.features is not None and len(set(self.features)) != len(self.features):
            raise ValueError("features must not repeat")
        return self


class AnomalyFitRequest(AnomalyRequest):
    """Fit an IsolationForest and keep it in the registry under ``name`` (a new version each fit)."""

    name: str = Field(
        default="anomaly", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
        description="Registry name; each fit adds a version.",
    )
    trigger: TriggerField = "manual"


class AnomalyScoreRequest(ServedRequest):
    """Score new bars with a stored model (no refit; the threshold is the one learned at fit): a pinned `model_id`
    (from /v1/anomaly/fit) or the deployed version of `name`."""

    data: OHLCVPayload
    top_k: int = Field(default=10, ge=1, le=100, description="How many of the highest-scoring bars to list.")


class AnomalyPoint(WireModel):
    """One of the highest-scoring bars."""

    timestamp: str = Field(description="Time of the bar (a date for daily bars).")
    score: float = Field(description="Anomaly score (higher = more anomalous).")
    rank: int = Field(description="1 for the highest score.")
    features: dict[str, float] = Field(description="The bar's feature values, unscaled.")
    flagged: bool = Field(description="Score above the threshold.")


class AnomalyResponse(Provenance, ServedReply):
    """Per-bar anomaly scores and flags, most anomalous bars first in ``top``."""

    timestamps: list[str] = Field(
        description="Time of each scored bar. The warm-up bars at the start, which lack a feature value "
                    "(no previous close, or fewer than zscore_window earlier volumes), are not scored; "
                    "warnings says how many.",
    )
    scores: list[float] = Field(description="Anomaly score of each scored bar (higher = more anomalous).")
    flags: list[bool] = Field(description="Whether each scored bar's score is above the threshold.")
    threshold: float = Field(description="Score above which a bar is flagged (learned at fit).")
    n_flagged: int = Field(description="Number of flagged bars.")
    top: list[AnomalyPoint] = Field(description="The top_k highest-scoring bars, highest first.")
    features_used: list[AnomalyFeature] = Field(description="Features the forest saw, in column order.")
    current_score: float = Field(description="Score of the last bar.")
    current_flagged: bool = Field(description="Whether the last bar is flagged.")
    current_percentile: float = Field(
        description="Share of the training bars' scores below the last bar's score (0..1).")
    warnings: list[str] = Field(default_factory=list, description="Things the caller should know.")


class AnomalyFitResponse(AnomalyResponse):
    """A stored fit: the same answer as a detect call plus the registry entry."""

    model: ModelInfo
