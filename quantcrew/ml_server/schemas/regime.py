"""Wire contract of the regime family (Gaussian HMM on OHLCV features)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from quantcrew.ml_server.schemas.common import ModelInfo, OHLCVPayload, Provenance, WireModel

__all__ = [
    "REGIME_FEATURES",
    "REGIME_LABELS",
    "RegimeFeature",
    "RegimeFitRequest",
    "RegimeFitResponse",
    "RegimeLabel",
    "RegimeLabelRequest",
    "RegimeLabelResponse",
    "RegimePredictRequest",
    "RegimeStateInfo",
]

RegimeLabel = Literal["bull", "bear", "sideways", "volatile"]
REGIME_LABELS: tuple[RegimeLabel, ...] = ("bull", "bear", "sideways", "volatile")

RegimeFeature = Literal["log_return", "realized_vol", "range"]
REGIME_FEATURES: tuple[RegimeFeature, ...] = ("log_return", "realized_vol", "range")


def _default_features() -> list[RegimeFeature]:
    return ["range"]


class RegimeLabelRequest(WireModel):
    """Fit an HMM on these bars and label every bar (stateless: nothing is kept)."""

    data: OHLCVPayload
    n_states: int | None = Field(
        default=None, ge=2, le=6,
        description="Number of hidden states; null chooses it by BIC over min_states..max_states.",
    )
    min_states: int = Field(default=2, ge=2, le=6)
    max_states: int = Field(default=4, ge=2, le=6)
    features: list[RegimeFeature] = Field(
        default_factory=_default_features, min_length=1,
        description="Per-bar features the HMM sees (default: the intraday range, which identifies volatility "
                    "regimes best; returns still name the states). See the README's regime section.",
    )
    seed: int = Field(default=0, ge=0, description="Seed of the first restart; restart k uses seed + k.")
    n_restarts: int = Field(default=4, ge=1, le=32,
                            description="Random restarts per state count; the best likelihood wins.")
    include_probabilities: bool = Field(
        default=True, description="Return the per-bar filtered probabilities (most of the reply's size).",
    )

    @model_validator(mode="after")
    def _state_range(self) -> RegimeLabelRequest:
        if self.min_states > self.max_states:
            raise ValueError(f"min_states ({self.min_states}) must not exceed max_states ({self.max_states})")
        if len(set(self.features)) != len(self.features):
            raise ValueError("features must not repeat")
        return self


class RegimeFitRequest(RegimeLabelRequest):
    """Fit an HMM and keep it in the registry under ``name`` (a new version each fit)."""

    name: str = Field(
        default="regime", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
        description="Registry name; each fit adds a version.",
    )


class RegimePredictRequest(WireModel):
    """Label new bars with a stored model (no refit)."""

    model_id: str = Field(min_length=1, max_length=64, description="Id returned by /v1/regime/fit.")
    data: OHLCVPayload
    include_probabilities: bool = Field(
        default=True, description="Return the per-bar filtered probabilities (most of the reply's size).",
    )


class RegimeStateInfo(WireModel):
    """What one hidden state looks like, in the units of daily returns."""

    state: int
    label: RegimeLabel
    mean_return: float = Field(description="Mean daily log return of the state.")
    volatility: float = Field(description="Standard deviation of daily log returns in the state.")
    expected_duration: float = Field(description="1 / (1 - p_ii): expected bars spent in the state per visit.")
    occupancy: float = Field(description="Share of bars whose filtered MAP state is this one.")


class RegimeLabelResponse(Provenance):
    """Per-bar regimes from FILTERED probabilities: bar t uses bars <= t only."""

    n_states: int
    timestamps: list[str] = Field(
        description="Time of each labelled bar (the first bar has no return and is not labelled).")
    labels: list[RegimeLabel] = Field(
        description="Semantic label of each bar: the label with the highest filtered probability.")
    states: list[int] = Field(description="Filtered MAP hidden state of each bar.")
    label_probabilities: dict[RegimeLabel, list[float]] | None = Field(
        description="Filtered probability of each semantic label per bar (states sharing a label are summed); "
                    "null when include_probabilities was false.",
    )
    state_probabilities: list[list[float]] | None = Field(
        description="Filtered probability of each hidden state per bar; null when include_probabilities was false.",
    )
    state_info: list[RegimeStateInfo]
    transition_matrix: list[list[float]]
    current_label: RegimeLabel
    current_probability: float
    converged: bool
    log_likelihood: float
    bic: dict[int, float] = Field(default_factory=dict, description="BIC per state count tried (lower is better).")


class RegimeFitResponse(RegimeLabelResponse):
    """A stored fit: the same answer as a label call plus the registry entry."""

    model: ModelInfo
