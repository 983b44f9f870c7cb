"""Wire contract of the execution family: order size and timing with Monte Carlo dropout uncertainty.

A small network reads the strategic signal (direction, confidence and the ensemble's
uncertainty metrics) and the market conditions at the last bar, and proposes an order size
(a fraction of the maximum position, in [0, 1]) and a timing (enter now, or wait for a
better fill). Dropout stays active at inference: ``samples`` passes of one decision run as
one batched forward pass, and the reply gives each output's mean, standard deviation and an
equal-tailed interval. Samples default per decision type (entry, exit, rebalance: the
server's ``inference.execution_samples``). The dropout masks are seeded (by ``seed``, else by
the inputs), so the same inputs always get the same plan.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from quantcrew.ml_server.schemas.common import (
    BoundedFloat,
    NonNegativeBoundedFloat,
    OHLCVPayload,
    Provenance,
    WireModel,
)

__all__ = [
    "DECISION_TYPES",
    "MARKET_INPUTS",
    "DecisionType",
    "ExecutionPlan",
    "ExecutionRequest",
    "ExecutionResponse",
    "Interval",
    "MarketConditions",
    "StrategicSignal",
]

DecisionType = Literal["entry", "exit", "rebalance"]
DECISION_TYPES: tuple[DecisionType, ...] = ("entry", "exit", "rebalance")
MARKET_INPUTS: tuple[str, ...] = ("ret_1", "ret_5", "vol_10", "vol_ratio", "range", "volume_z")

_Unit = Field(ge=0.0, le=1.0)


class StrategicSignal(WireModel):
    """What the strategic layer (the ensemble) said."""

    signal: Literal["down", "flat", "up"]
    confidence: float = Field(ge=0.0, le=1.0, description="Probability of the signalled class.")
    predictive_entropy: float = Field(default=0.5, ge=0.0, le=1.0)
    divergence_metric: float = Field(default=0.0, ge=0.0, le=1.0)
    agreement_score: float = Field(default=1.0, ge=0.0, le=1.0)


class MarketConditions(WireModel):
    """Market state at the decision bar (what `data` would give; see docs/features.md)."""

    ret_1: BoundedFloat = Field(description="Log return over the last bar.")
    ret_5: BoundedFloat = Field(description="Log return over the last 5 bars.")
    vol_10: NonNegativeBoundedFloat = Field(description="Std of 1-bar log returns over 10 bars.")
    vol_ratio: NonNegativeBoundedFloat = Field(description="vol_10 / vol_60.")
    range: NonNegativeBoundedFloat = Field(description="(high - low) / close of the last bar.")
    volume_z: BoundedFloat = Field(default=0.0, description="z-score of log volume over 20 bars (0 when unknown).")


class ExecutionRequest(WireModel):
    """Size and timing for one or more decisions."""

    signals: list[StrategicSignal] = Field(min_length=1, description="One strategic signal per decision.")
    data: OHLCVPayload | None = Field(
        default=None,
        description="Recent bars (at least 61), oldest first: market conditions are computed at the last "
                    "len(signals) bars. Give this or `market`.")
    market: list[MarketConditions] | None = Field(
        default=None, description="Market conditions per decision, same length as `signals`.")
    decision_type: DecisionType = Field(default="entry", description="'entry', 'exit' or 'rebalance'.")
    samples: int | None = Field(
        default=None, gt=0, description="Dropout samples per decision; default the server's for the decision type.")
    level: float = Field(default=0.9, gt=0.0, lt=1.0, description="Coverage of the reported intervals.")
    model_id: str | None = Field(
        default=None, min_length=1, max_length=64,
        description="Execution network by id; default the deployed one of `symbol` (one that passed its quality "
                    "gate): 409 model_gated when the symbol's networks were all rejected, 404 when none was trained.")
    symbol: str | None = Field(default=None, max_length=64)
    seed: int | None = Field(
        default=None, ge=0, le=2**32 - 1,
        description="Dropout seed; default a hash of the network, the inputs and the sample count, so the same "
                    "inputs get the same plan (the seed used is in the reply).")

    @model_validator(mode="after")
    def _one_market(self) -> ExecutionRequest:
        if (self.data is None) == (self.market is None):
            raise ValueError("give exactly one of `data` (bars) or `market` (market conditions)")
        if self.market is not None and len(self.market) != len(self.signals):
            raise ValueError(f"market has {len(self.market)} entries but signals has {len(self.signals)}: "
                             "give one per decision")
        return self


class Interval(WireModel):
    """A Monte Carlo estimate: mean, standard deviation and an equal-tailed interval."""

    mean: float
    std: float
    lower: float
    upper: float


class ExecutionPlan(WireModel):
    """One decision's proposal."""

    size: Interval = Field(description="Order size as a fraction of the maximum position, in [0, 1].")
    wait_probability: Interval = Field(description="Probability that waiting for the next bar fills better.")
    timing: Literal["now", "wait"] = Field(description="'wait' when the mean wait probability is above 0.5.")
    direction: int = Field(description="-1 sell, 0 none, +1 buy: the strategic signal's side.")
    target_fraction: float = Field(description="direction * mean size: the signed fraction of the maximum position.")


class ExecutionResponse(Provenance):
    """One plan per decision."""

    plans: list[ExecutionPlan]
    decision_type: DecisionType
    samples: int
    level: float
