"""Wire contract of the regime family (Gaussian HMM on OHLCV features)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from quantcrew.ml_server.schemas.common import ModelInfo, OHLCVPayload, Provenance, TriggerField, WireModel
from quantcrew.ml_server.schemas.serving import ServedReply, ServedRequest

__all__ = [
    "REGIME_FEATURES",
    "REGIME_LABELS",
    "RegimeFeature",
    "RegimeFitRequest",
    "RegimeFitResponse",
    "RegimeCausalFit",
    "RegimeCausalRequest",
    "RegimeCausalResult",
    "RegimeDetectorParams",
    "RegimeLabel",
    "RegimeLabelRequest",
    "RegimeLabelResponse",
    "RegimePredictRequest",
    "RegimeStateInfo",
    "RegimeTrendInfo",
]

RegimeLabel = Literal["bull", "bear", "sideways", "volatile"]
REGIME_LABELS: tuple[RegimeLabel, ...] = ("bull", "bear", "sideways", "volatile")

RegimeFeature = Literal["log_return", "realized_vol", "range"]
REGIME_FEATURES: tuple[RegimeFeature, ...] = ("log_return", "realized_vol", "range")


def _default_features() -> list[RegimeFeature]:
    return ["range"]


class RegimeDetectorParams(WireModel):
    """How the HMM is fitted and how its states and bars are named (shared by the regime requests)."""

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
    trend_reading: bool = Field(
        default=True,
        description="Weigh the trend in each bar's label: when the days the filter calls calm have lost 20% or "
                    "more from their high of the last year and are down over the last quarter, the calm labels "
                    "(bull, sideways) read bear. False gives the filter's labels alone.",
    )

    @model_validator(mode="after")
    def _state_range(self) -> Self:
        if self.min_states > self.max_states:
            raise ValueError(f"min_states ({self.min_states}) must not exceed max_states ({self.max_states})")
        if len(set(self.features)) != len(self.features):
            raise ValueError("features must not repeat")
        return self


class RegimeLabelRequest(RegimeDetectorParams):
    """Fit an HMM on these bars and label every bar (stateless: nothing is kept).

    One fit on the whole window: only the LAST bar's label is what was knowable at its close
    (earlier bars are labelled by a model, scaling and state names fitted on later bars too).
    For labels a model fitted on earlier bars only gives each bar, use ``/v1/regime/causal``.
    """

    data: OHLCVPayload
    include_probabilities: bool = Field(
        default=True, description="Return the per-bar filtered probabilities (most of the reply's size).",
    )


class RegimeFitRequest(RegimeLabelRequest):
    """Fit an HMM and keep it in the registry under ``name`` (a new version each fit)."""

    name: str = Field(
        default="regime", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
        description="Registry name; each fit adds a version.",
    )
    trigger: TriggerField = "manual"


class RegimePredictRequest(ServedRequest):
    """Label new bars with a stored model (no refit): a pinned `model_id` (from /v1/regime/fit) or the deployed
    version of `name`."""

    data: OHLCVPayload
    include_probabilities: bool = Field(
        default=True, description="Return the per-bar filtered probabilities (most of the reply's size).",
    )
    symbol: str | None = Field(default=None, max_length=64,
                               description="What the bars are: the prediction log's subject, so outcomes carrying "
                                           "a true regime can be joined to this answer.")


class RegimeStateInfo(WireModel):
    """What one hidden state looks like, in the units of daily returns."""

    state: int
    label: RegimeLabel
    mean_return: float = Field(description="Mean daily log return of the state.")
    volatility: float = Field(description="Standard deviation of daily log returns in the state.")
    expected_duration: float = Field(description="1 / (1 - p_ii): expected bars spent in the state per visit.")
    occupancy: float = Field(description="Share of bars whose filtered MAP state is this one.")


class RegimeTrendInfo(WireModel):
    """The trend reading of the last bar: what turns a calm label into bear when the calm days are falling.

    The calm-day index adds up each bar's log return weighted by its filtered probability of
    being calm (bull or sideways): the market's path on the days the filter calls calm.
    """

    applied: bool = Field(description="Whether the labels weigh the trend (the request's trend_reading).")
    calm_drawdown: float = Field(
        description="How far the calm-day index sits below its highest value of the last high_days days.")
    calm_trailing_return: float | None = Field(
        description="Log change of the calm-day index over the last drift_days days; null when the bars sent do "
                    "not reach that far back.")
    price_drawdown: float = Field(description="1 - close / highest close of the last high_days days (context).")
    bear_trend: bool = Field(description="The last bar is in a bear trend: calm_drawdown >= bear_drawdown and a "
                                         "negative calm_trailing_return.")
    bear_trend_bars: int = Field(description="Labelled bars in a bear trend.")
    high_days: int = Field(description="Calendar days over which the high is taken.")
    drift_days: int = Field(description="Calendar days of the trailing return.")
    bear_drawdown: float = Field(description="Calm-day drawdown at which a falling market reads as a bear market.")


class RegimeLabelResponse(Provenance, ServedReply):
    """Per-bar regimes from FILTERED probabilities of ONE fit on the bars sent.

    Each bar's filter and trend reading use bars <= t, but the model, its feature scaling and
    its state names are fitted on every bar sent: only the last bar's label is what was
    knowable at its close. ``/v1/regime/causal`` labels every bar from earlier fits only.
    """

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
    trend: RegimeTrendInfo | None = Field(default=None, description="The trend reading of the last bar.")


class RegimeFitResponse(RegimeLabelResponse):
    """A stored fit: the same answer as a label call plus the registry entry."""

    model: ModelInfo


class RegimeCausalRequest(RegimeDetectorParams):
    """Label every bar as it was knowable at its close: walk-forward refits on an expanding window (a job).

    Fit ``k`` uses bars ``0 .. min_train + k * refit_every - 1`` and labels the next
    ``refit_every`` bars by its FILTERED pass (forward only) over the bars up to each one; the
    first ``min_train`` bars get no label. Appending bars never changes an earlier bar's label.
    """

    data: OHLCVPayload
    symbol: str | None = Field(default=None, max_length=64, description="What the bars are, for the job's params.")
    min_train: int = Field(default=500, ge=10, le=1_000_000,
                           description="Bars of the first fit; earlier bars get no label. data needs at least "
                                       "min_train + 1 bars.")
    refit_every: int = Field(default=63, ge=1, le=1_000_000,
                             description="Bars between refits (63: a quarter of daily bars).")
    include_probabilities: bool = Field(
        default=False, description="Also return every label's probability per bar (the label's own is always there).",
    )


class RegimeCausalFit(WireModel):
    """One refit of a causal labelling job."""

    first_bar: int = Field(description="Index of the first bar this fit labels (= bars it was fitted on).")
    date: str = Field(description="ISO time of the first bar this fit labels.")
    train_end: str = Field(description="ISO time of the last bar it was fitted on (strictly before date).")
    bars_used: int = Field(description="Bars it was fitted on (bars 0 .. first_bar - 1).")
    bars_labelled: int = Field(description="Bars it labelled.")
    n_states: int
    state_labels: list[RegimeLabel] = Field(description="Name of each of its states.")
    converged: bool
    method_used: str = Field(description="'gaussian_hmm', or 'threshold_rules' when no HMM could be fitted.")
    fallback: bool
    fallback_reason: str | None = None
    seconds: float = Field(description="Wall time of the fit and its filtering.")


class RegimeCausalResult(WireModel):
    """What a causal labelling job returns (``JobInfo.result``): one entry per bar sent, in order."""

    symbol: str | None
    data_hash: str
    seed: int
    min_train: int
    refit_every: int
    timestamps: list[str] = Field(description="ISO time of every bar sent.")
    labels: list[RegimeLabel | None] = Field(
        description="Each bar's label from the filtered pass of the latest fit on earlier bars; null for the "
                    "first min_train bars.")
    probabilities: list[float | None] = Field(description="Probability of each bar's label; null where unlabelled.")
    label_probabilities: dict[RegimeLabel, list[float | None]] | None = Field(
        default=None, description="Every label's probability per bar; null unless include_probabilities.")
    filter_labels: list[RegimeLabel | None] = Field(
        description="Each bar's label from the filter alone, before the trend reading (equal to labels when "
                    "trend_reading is false); null where unlabelled.")
    bear_trend: list[bool | None] = Field(
        description="Whether each labelled bar was in a bear trend (see RegimeTrendInfo); null where unlabelled.")
    fit_of_bar: list[int | None] = Field(description="Index into fits of the fit that labelled each bar.")
    fits: list[RegimeCausalFit]
    counts: dict[RegimeLabel, int] = Field(description="Labelled bars per label.")
