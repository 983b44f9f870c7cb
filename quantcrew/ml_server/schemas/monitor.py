"""Wire contract of the monitor's prediction log, outcomes and live quality per model version.

Pydantic only: the agent-side client imports this module.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from quantcrew.ml_server.schemas.common import FiniteFloat, WireModel

__all__ = [
    "ModelQuality",
    "Outcome",
    "OutcomeBatch",
    "OutcomeInfo",
    "OutcomeList",
    "OutcomesAccepted",
    "PredictionInfo",
    "PredictionList",
    "QualityMetric",
    "QualityWindow",
]


class Outcome(WireModel):
    """What happened after a decision: the realised return of the bar after ``as_of``."""

    outcome_id: str = Field(min_length=1, max_length=200,
                            description="Idempotency key (e.g. the crew's decision id and the symbol): the same id "
                                        "with the same values is accepted again as known, with other values a 409.")
    subject: str = Field(min_length=1, max_length=64, description="What was predicted: the symbol (or request key).")
    as_of: datetime = Field(description="The bar the decision was made on (the prediction's provenance as_of).")
    realised_return: FiniteFloat = Field(ge=-1.0, le=100.0,
                                         description="Simple return over the next horizon_bars bars (0.01 = +1%).")
    horizon_bars: int = Field(default=1, ge=1, le=1000)
    regime: str | None = Field(default=None, max_length=32,
                               description="The true regime label, when known (synthetic traffic).")
    position: FiniteFloat | None = Field(default=None, ge=-10.0, le=10.0,
                                         description="The decision's final target position.")


class OutcomeBatch(WireModel):
    """Outcomes posted together (each id written once; a conflicting one refuses the batch)."""

    outcomes: list[Outcome] = Field(min_length=1, max_length=10_000)


class OutcomesAccepted(WireModel):
    """How many outcomes were new and how many were already known with the same values."""

    inserted: int
    known: int


class OutcomeInfo(WireModel):
    """A stored outcome; ``as_of`` in the form the server joins on."""

    outcome_id: str
    subject: str
    as_of: str = Field(description="The decision's bar: its date (a bar at midnight), else its UTC time to the "
                                   "second, ISO: the key predictions are joined on.")
    realised_return: float
    horizon_bars: int
    regime: str | None
    position: float | None
    received_at: datetime


class OutcomeList(WireModel):
    """Recent outcomes, newest first."""

    outcomes: list[OutcomeInfo]


class PredictionInfo(WireModel):
    """One logged prediction."""

    id: int
    at: datetime
    model_id: str
    name: str
    version: int
    family: str
    route: str
    request_hash: str
    subject: str | None
    as_of: str | None
    features: dict[str, float]
    output: float | None
    label: str | None
    confidence: float | None
    shadow: bool


class PredictionList(WireModel):
    """A model's logged predictions, newest first."""

    predictions: list[PredictionInfo]


class QualityMetric(WireModel):
    """One live-quality figure over one window."""

    metric: str = Field(description="hit_rate, log_loss, brier, ece, sharpe, mean_return, label_stability or "
                                    "accuracy.")
    value: float | None = Field(description="None when no sample has what the metric needs.")
    n: int = Field(description="Samples behind the value.")
    judged: bool = Field(description="n >= the server's monitor.min_samples: a figure thresholds may judge.")


class QualityWindow(WireModel):
    """The figures over the last ``size`` settled predictions."""

    size: int = Field(description="Most settled predictions the window holds.")
    n: int = Field(description="Settled predictions in it.")
    metrics: list[QualityMetric]


class ModelQuality(WireModel):
    """Live quality of one model version: its predictions joined to their outcomes on (subject, as_of)."""

    model_id: str
    name: str
    version: int
    family: str
    predictions: int = Field(description="Logged predictions of the version (shadow ones included).")
    settled: int = Field(description="Those with an outcome.")
    min_samples: int
    windows: list[QualityWindow]
