"""Wire contract of the ensemble family: next-move classification with a confidence that means something.

Two architectures (an LSTM and a Transformer encoder) read windows of 16 engineered features
(``docs/features.md``) and classify the move over the next ``horizon`` bars as down, flat or
up (thresholds configurable). Each architecture has several members (different seeds and
minibatch orders) evaluated in one vectorised forward pass; their temperature-scaled
probabilities are averaged, and the architectures are mixed with weights fitted on
validation data.

Training is a walk-forward job (``POST /v1/ensemble/train`` answers with a
:class:`~quantcrew.ml_server.schemas.jobs.JobInfo`; its ``result``, once succeeded, is an
:class:`EnsembleTrainResult`). The uncertainty metrics of a prediction, each in [0, 1]:

- ``agreement_score``: weighted share of members whose own top class is the ensemble's;
- ``consensus_strength``: weighted mean of the probability members give the ensemble's class;
- ``divergence_metric``: mutual information between the prediction and the member (the
  generalised Jensen-Shannon divergence of the members' distributions), over log 3:
  0 when every member says the same thing, 1 when confident members contradict each other;
- ``predictive_entropy``: entropy of the ensemble's distribution over log 3.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from quantcrew.ml_server.schemas.common import (
    BarTime,
    FiniteFloat,
    ModelInfo,
    OHLCVPayload,
    Provenance,
    TriggerField,
    WireModel,
)
from quantcrew.ml_server.schemas.gate import GateVerdict
from quantcrew.ml_server.schemas.matrix import MatrixPayload

__all__ = [
    "ARCHITECTURES",
    "CLASS_LABELS",
    "Architecture",
    "CalibrationReport",
    "DeploymentInfo",
    "DeploymentList",
    "DeploymentRequest",
    "Direction",
    "EnsembleMethod",
    "EnsemblePredictRequest",
    "EnsemblePredictResponse",
    "EnsembleTrainRequest",
    "EnsembleTrainResult",
    "FoldReport",
    "ReliabilityBin",
    "ServedBy",
    "ShadowEntry",
    "ShadowLog",
    "SignalPoint",
    "SourceWeight",
    "Stage",
]

Direction = Literal["down", "flat", "up"]
CLASS_LABELS: tuple[Direction, ...] = ("down", "flat", "up")
Architecture = Literal["lstm", "transformer"]
ARCHITECTURES: tuple[Architecture, ...] = ("lstm", "transformer")
EnsembleMethod = Literal["ensemble", "mc_dropout"]
Stage = Literal["shadow", "canary", "gradual", "full"]

_SEED_MAX = 2**32 - 1
_NAME = r"^[A-Za-z0-9_.-]+$"


def _both() -> list[Architecture]:
    return list(ARCHITECTURES)


class _Deploy(WireModel):
    stage: Stage = Field(
        default="full",
        description="How the new version is deployed: 'full' answers every request (the previous full version is "
                    "retired), 'canary' a fixed share, 'gradual' a share growing to all over ramp_seconds, "
                    "'shadow' runs and is logged but never answers.",
    )
    share: float | None = Field(
        default=None, ge=0.0, lt=1.0,
        description="canary: the share of request keys it answers (0 < share < 1); gradual: the starting share "
                    "(default 0.1). Not used by other stages.",
    )
    ramp_seconds: float | None = Field(
        default=None, gt=0.0, le=365 * 86400.0,
        description="gradual only: seconds over which its share grows linearly to 1, when it becomes full.",
    )

    @model_validator(mode="after")
    def _stage_fields(self) -> _Deploy:
        if self.stage == "canary" and not (self.share is not None and 0.0 < self.share < 1.0):
            raise ValueError("share: a canary needs 0 < share < 1 (the share of request keys it answers)")
        if self.stage == "gradual" and self.ramp_seconds is None:
            raise ValueError("ramp_seconds: a gradual rollout needs ramp_seconds > 0")
        if self.stage in ("full", "shadow") and (self.share is not None or self.ramp_seconds is not None):
            raise ValueError(f"share / ramp_seconds: a {self.stage} version takes neither")
        if self.stage == "canary" and self.ramp_seconds is not None:
            raise ValueError("ramp_seconds: only a gradual rollout ramps; a canary keeps its share")
        return self


class EnsembleTrainRequest(_Deploy):
    """Walk-forward training of the LSTM and Transformer ensembles (and the execution network)."""

    data: OHLCVPayload = Field(description="Daily bars of one instrument, oldest first.")
    symbol: str | None = Field(default=None, max_length=64, description="Instrument name, recorded with the model.")
    name: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=_NAME,
        description="Model name; each training stores a new version of it. Default 'ensemble-<symbol>' "
                    "(or 'ensemble' without a symbol).",
    )
    architectures: list[Architecture] = Field(
        default_factory=_both, min_length=1, max_length=2, description="'lstm', 'transformer' or both.")
    members: int = Field(default=4, ge=1, le=16, description="Members per architecture (different seeds).")
    window: int = Field(default=32, ge=4, le=256, description="Bars of features each prediction reads.")
    horizon: int = Field(default=5, ge=1, le=60, description="Bars ahead whose move is classified.")
    up_threshold: float = Field(default=0.005, gt=0.0, le=0.5,
                                description="Return over the horizon above which the move is 'up'.")
    down_threshold: float = Field(default=0.005, gt=0.0, le=0.5,
                                  description="Return over the horizon below minus this is 'down'; between is 'flat'.")
    hidden: int = Field(default=32, ge=4, le=512, description="LSTM hidden size / Transformer model width.")
    layers: int = Field(default=1, ge=1, le=4, description="LSTM layers / Transformer encoder blocks.")
    heads: int = Field(default=4, ge=1, le=16, description="Transformer attention heads; must divide `hidden`.")
    dropout: float = Field(default=0.1, ge=0.0, lt=0.9, description="Dropout rate (also drives MC dropout).")
    epochs: int = Field(default=30, ge=1, le=500, description="Most epochs per fit (early stopping on validation).")
    batch_size: int = Field(default=256, ge=8, le=8192)
    learning_rate: float = Field(default=1e-3, gt=0.0, lt=1.0)
    patience: int = Field(default=5, ge=1, le=100, description="Epochs without validation gain before stopping.")
    scheme: Literal["expanding", "rolling"] = Field(
        default="expanding", description="Walk-forward training windows: from the first bar, or the last train_size.")
    folds: int = Field(default=4, ge=1, le=50, description="Walk-forward test folds.")
    test_start: datetime | None = Field(
        default=None,
        description="First bar of the walk-forward test span (default: the last 30% of the labelled bars). "
                    "Every test fold is predicted by models trained only on bars before it.",
    )
    train_size: int | None = Field(
        default=None, ge=50, description="rolling: labelled bars per training window (default: all before test_start).")
    purge: int = Field(
        default=0, ge=0, le=500,
        description="Extra bars dropped between training and test beyond the horizon (labels of the last "
                    "`horizon` training bars overlap the test span and are always dropped).")
    validation_fraction: float = Field(
        default=0.15, gt=0.0, lt=0.5,
        description="Tail of each training window held out (after a purge gap) for early stopping, temperature "
                    "scaling and the architecture weights.")
    mc_samples: int = Field(default=30, ge=2, le=1000,
                            description="MC-dropout samples in the out-of-sample comparison with the ensemble.")
    execution: bool = Field(
        default=True,
        description="Also train the MC-dropout execution network on the ensemble's out-of-sample signals.")
    seed: int = Field(default=0, ge=0, le=_SEED_MAX, description="Seeds the members, minibatch orders and dropout.")
    trigger: TriggerField = "manual"
    deploy: bool = Field(
        default=True,
        description="False: store both models (and their gate verdicts) without deploying either, whatever the "
                    "gates say: a backtest's per-window models, which must never answer the crew's requests.")

    @model_validator(mode="after")
    def _check(self) -> EnsembleTrainRequest:
        if len(set(self.architectures)) != len(self.architectures):
            raise ValueError(f"architectures must not repeat, got {self.architectures}")
        if "transformer" in self.architectures and self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        return self


class ReliabilityBin(WireModel):
    """One confidence bin of a reliability diagram."""

    lower: float
    upper: float
    count: int
    confidence: float = Field(description="Mean top-class probability of the rows in the bin.")
    accuracy: float = Field(description="Share of those rows whose top class was right.")


class CalibrationReport(WireModel):
    """Out-of-sample quality of one way of getting probabilities."""

    method: str = Field(description="e.g. 'ensemble', 'mc_dropout', 'ensemble:lstm', 'mc_dropout:transformer'.")
    n: int = Field(description="Test rows scored.")
    accuracy: float
    ece: float = Field(description="Expected calibration error: 15 equal-width confidence bins, top class.")
    brier: float = Field(description="Multiclass Brier score (sum over classes, mean over rows).")
    nll: float = Field(description="Mean negative log-likelihood of the true class.")
    reliability: list[ReliabilityBin] = Field(default_factory=list)


class FoldReport(WireModel):
    """One walk-forward fold."""

    fold: int
    train_start: str
    train_end: str
    test_start: str
    test_end: str
    n_train: int
    n_validation: int
    n_test: int
    temperatures: dict[str, float] = Field(description="Fitted temperature per architecture (ensemble).")
    weights: dict[str, float] = Field(description="Architecture weights fitted on the validation tail.")
    ensemble: CalibrationReport
    mc_dropout: CalibrationReport


class EnsembleTrainResult(WireModel):
    """A succeeded training job's ``result``.

    Each model the job stores is judged by its quality gate on bars it was not trained on
    (``gate``, ``execution_gate``). One that passes is deployed (``deployment``,
    ``execution_deployment``); one that fails stays in the registry, is not deployed, and its
    deployment field is null: requests for the symbol then answer 409 ``model_gated``.
    """

    model: ModelInfo = Field(description="The ensemble stored in the registry (final fit on every labelled bar).")
    execution_model: ModelInfo | None = Field(description="The execution network, when one was trained.")
    deployment: DeploymentInfo | None = Field(
        description="The ensemble's deployment at the stage asked for; null when it failed its gate (not deployed).")
    gate: GateVerdict | None = Field(
        default=None,
        description="The ensemble's gate: out-of-sample log loss of the deployed method against the training "
                    "labels' class-frequency forecast, with a Diebold-Mariano test on the per-row differences.")
    execution_gate: GateVerdict | None = Field(
        default=None,
        description="The execution network's gate: Sharpe of the returns it sizes against the rule sizing's on the "
                    "same out-of-sample signals; null when no network was trained.")
    execution_deployment: DeploymentInfo | None = Field(
        default=None, description="The execution network's deployment ('full'); null when it failed its gate or "
                                  "none was trained.")
    folds: list[FoldReport]
    out_of_sample: list[CalibrationReport] = Field(
        description="Every fold's test rows together: ensemble vs MC dropout, combined and per architecture.")
    class_balance: dict[str, float] = Field(description="Share of down / flat / up labels among labelled bars.")
    features: list[str]
    training_seconds: float
    data_hash: str
    seed: int


class SignalPoint(WireModel):
    """The ensemble's view at one bar."""

    timestamp: BarTime | None = Field(description="Time of the bar as the bars (or features) gave it; null when they "
                                                "had none.")
    signal: Direction
    position: int = Field(description="-1 down, 0 flat, +1 up.")
    probabilities: dict[str, float] = Field(description="Calibrated probability of down, flat and up.")
    confidence: float = Field(description="Probability of the signalled class.")
    agreement_score: float
    consensus_strength: float
    divergence_metric: float
    predictive_entropy: float


class SourceWeight(WireModel):
    """One source of the ensemble and its weight."""

    source: str = Field(description="'lstm', 'transformer', or 'rl:<agent>-<algorithm>' for an RL policy.")
    members: int
    weight: float
    temperature: float


class ServedBy(WireModel):
    """Which version answered and why."""

    model_id: str
    name: str
    version: int
    stage: str = Field(description="Deployment stage of the answering version.")
    variant: str = Field(description="'full', 'canary', 'gradual', or 'pinned' when the request named a model_id.")
    bucket: float | None = Field(description="The request key's sticky bucket in [0, 1); null when pinned.")


class EnsemblePredictRequest(WireModel):
    """Signal, confidence and uncertainty at the last bar (or each of the last `last` bars)."""

    data: OHLCVPayload | None = Field(
        default=None, description="Recent bars, oldest first; the server computes the features. Give this or "
                                  "`features`.")
    features: MatrixPayload | None = Field(
        default=None,
        description="Already engineered features, oldest first, columns named as in docs/features.md.",
    )
    symbol: str | None = Field(default=None, max_length=64, description="Instrument; selects 'ensemble-<symbol>'.")
    name: str | None = Field(default=None, min_length=1, max_length=64, pattern=_NAME,
                             description="Model name; its deployed versions answer (canary / gradual / full).")
    model_id: str | None = Field(default=None, min_length=1, max_length=64,
                                 description="Pin one version, bypassing the deployment stages.")
    method: EnsembleMethod = Field(
        default="ensemble", description="'ensemble' (all members, one pass) or 'mc_dropout' (one member, "
                                        "`samples` dropout passes in one batch).")
    samples: int | None = Field(default=None, gt=0, description="MC-dropout samples (default the server's setting).")
    last: int = Field(default=1, ge=1, description="Predict each of the last `last` bars (a batch).")
    request_key: str | None = Field(
        default=None, max_length=200,
        description="Sticky A/B key: the same key always reaches the same version. Default the symbol or name.")
    include_rl: bool = Field(
        default=True,
        description="Let the newest discrete RL policy trained on this symbol join the ensemble when one exists.")
    rl_weight: float = Field(default=0.1, ge=0.0, le=0.5, description="Weight of the RL policy when it joins.")
    seed: int | None = Field(default=None, ge=0, le=_SEED_MAX, description="MC-dropout seed; default random.")

    @model_validator(mode="after")
    def _one_input(self) -> EnsemblePredictRequest:
        if (self.data is None) == (self.features is None):
            raise ValueError("give exactly one of `data` (bars) or `features` (engineered features)")
        if self.model_id is None and self.name is None and self.symbol is None:
            raise ValueError("name the model: give model_id, name or symbol")
        return self


class EnsemblePredictResponse(Provenance):
    """The signal at the last bar with its confidence and uncertainty, and every requested bar in `points`."""

    signal: Direction
    position: int
    probabilities: dict[str, float]
    confidence: float
    agreement_score: float
    consensus_strength: float
    divergence_metric: float
    predictive_entropy: float
    points: list[SignalPoint] = Field(description="One per requested bar, oldest first (the last is the above).")
    sources: list[SourceWeight]
    served_by: ServedBy
    samples: int | None = Field(description="MC-dropout samples used; null for the ensemble method.")
    shadows_run: int = Field(description="Shadow versions that also ran on this request (logged, not returned).")
    window: int
    horizon: int


class DeploymentRequest(_Deploy):
    """Change the deployment stage of a stored ensemble version."""

    model_id: str = Field(min_length=1, max_length=64)


class DeploymentInfo(WireModel):
    """A version's deployment."""

    model_id: str
    name: str
    version: int
    stage: str
    share: float = Field(description="canary: fixed share; gradual: starting share; full 1; shadow/retired 0.")
    current_share: float = Field(description="Share of request keys it answers now.")
    ramp_seconds: float
    started_at: datetime
    updated_at: datetime


class DeploymentList(WireModel):
    deployments: list[DeploymentInfo]


class ShadowEntry(WireModel):
    """A shadow version's answer to one request, beside the answer that was returned."""

    at: datetime
    request_key: str
    primary_model_id: str
    output: dict[str, FiniteFloat | str | int | None]


class ShadowLog(WireModel):
    model_id: str
    entries: list[ShadowEntry]


EnsembleTrainResult.model_rebuild()
