"""Wire contract of a model's life after training: stages, promotion, rollback, lineage, retention, comparison.

Every stateful family's versions move through the same deployment stages (``shadow``, ``canary``,
``gradual``, ``full``, ``retired``) under ``/v1/models``; every move is a recorded
:class:`DeploymentEvent`. A challenger is compared with its champion on the same rows
(``POST /v1/models/compare``) before it is promoted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from quantcrew.ml_server.schemas.common import FiniteFloat, ModelInfo, OHLCVPayload, WireModel
from quantcrew.ml_server.schemas.ensemble import DeploymentInfo
from quantcrew.ml_server.schemas.execution import StrategicSignal
from quantcrew.ml_server.schemas.gate import GateVerdict
from quantcrew.ml_server.schemas.matrix import MatrixPayload

__all__ = [
    "CleanupEntry",
    "CleanupRequest",
    "CleanupResponse",
    "CompareRequest",
    "CompareResponse",
    "DeploymentEvent",
    "LineageNode",
    "LineageResponse",
    "PromoteRequest",
    "RollbackRequest",
    "RollbackResponse",
    "StageChange",
    "StageRequest",
]

Stage = Literal["shadow", "canary", "gradual", "full", "retired"]
_REASON = Field(default=None, max_length=500, description="Why, in words; recorded with the event.")
_ACTOR = Field(default=None, max_length=100, description="Who asks (a person, 'scheduler'...); recorded.")


class DeploymentEvent(WireModel):
    """One recorded change of a version's deployment stage."""

    id: int
    at: datetime = Field(description="When it happened (UTC).")
    model_id: str
    name: str
    version: int
    from_stage: str | None = Field(description="Stage before; null when the version was not deployed.")
    to_stage: str
    action: str = Field(description="'stage' (set by hand), 'promote', 'rollback', 'replaced' (retired because "
                                    "another version took its stage), 'auto' (a finished gradual ramp), "
                                    "'train' (deployed by its training job).")
    reason: str | None
    actor: str | None
    gate: dict[str, Any] | None = Field(description="The gate verdict that allowed the step, when there was one.")


class StageRequest(WireModel):
    """Put one stored version of any stateful family at a deployment stage."""

    stage: Stage
    share: float | None = Field(default=None, description="canary: 0 < share < 1 (required); gradual: the "
                                                           "starting share (default 0.1).")
    ramp_seconds: float | None = Field(default=None, description="gradual: seconds to reach 100% (required).")
    reason: str | None = _REASON
    actor: str | None = _ACTOR


class PromoteRequest(WireModel):
    """Promote a name's candidate one step (shadow -> canary -> full; gradual -> full) or to a named stage."""

    model_id: str | None = Field(default=None, max_length=64,
                                 description="Which candidate, when the name has several shadows; default the newest.")
    to_stage: Literal["canary", "gradual", "full"] | None = Field(
        default=None, description="The stage to reach; default the next one.")
    share: float | None = Field(default=None, description="canary share (default 0.1) or gradual starting share.")
    ramp_seconds: float | None = Field(default=None, description="gradual: seconds to reach 100%.")
    gate: GateVerdict | None = Field(default=None, description="The champion-vs-challenger verdict behind this "
                                     "step (from /v1/models/compare); a failed one is refused (409) unless force.")
    force: bool = Field(default=False, description="Promote although the gate given failed (a hand override).")
    reason: str | None = _REASON
    actor: str | None = _ACTOR


class RollbackRequest(WireModel):
    """Put the name's previous champion back at full and retire the current one."""

    reason: str | None = _REASON
    actor: str | None = _ACTOR


class StageChange(WireModel):
    """A stage change and every event it recorded."""

    deployment: DeploymentInfo
    events: list[DeploymentEvent]


class RollbackResponse(WireModel):
    """What a rollback did."""

    model_id: str = Field(description="The model id now at full: the previous champion.")
    restored: DeploymentInfo = Field(description="The previous champion, at full again.")
    retired: DeploymentInfo | None = Field(description="The champion rolled back from, now retired (null when the "
                                                       "name had no full version).")
    events: list[DeploymentEvent]


class LineageNode(WireModel):
    """One version in a lineage chain."""

    model_id: str
    missing: bool = Field(default=False, description="True when this parent was deleted (retention).")
    model: ModelInfo | None = Field(default=None, description="Its registry entry (null when missing).")
    deployment: DeploymentInfo | None = Field(default=None, description="Its deployment now; null if never deployed.")
    events: list[DeploymentEvent] = Field(default_factory=list, description="Its deployment history, oldest first.")


class LineageResponse(WireModel):
    """A version and its ancestors: the model first, then its parent, its parent's parent..."""

    model_id: str
    chain: list[LineageNode]


class CleanupRequest(WireModel):
    """Apply the retention policy now."""

    name: str | None = Field(default=None, max_length=64, description="Only this model name; default every name.")
    dry_run: bool = Field(default=False, description="Report what would be deleted; delete nothing.")


class CleanupEntry(WireModel):
    """A version the retention policy deleted (or would) or kept although it is old."""

    model_id: str
    name: str
    version: int
    reason: str


class CleanupResponse(WireModel):
    """What the retention policy did."""

    dry_run: bool
    keep_versions: int = Field(description="Newest versions kept per name (monitor.keep_versions).")
    deleted: list[CleanupEntry] = Field(description="Deleted (or, in a dry run, to be deleted).")
    kept: list[CleanupEntry] = Field(description="Older than the newest keep_versions, kept: deployed, the "
                                                 "rollback target, or used by a kept version.")


class CompareRequest(WireModel):
    """Champion against challenger on the same rows: a paired test of their per-row losses."""

    champion_id: str = Field(min_length=1, max_length=64)
    challenger_id: str = Field(min_length=1, max_length=64)
    data: OHLCVPayload | None = Field(default=None, description="Recent bars (ensemble, regime, rl, execution).")
    features: MatrixPayload | None = Field(default=None, description="Rows to score (supervised).")
    target: list[FiniteFloat] | list[str] | None = Field(default=None,
                                                       description="The true value of each row (supervised).")
    min_samples: int = Field(default=30, ge=2, le=1_000_000,
                             description="Fewer paired losses than this: verdict 'insufficient', never promoted.")
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5, description="Significance level of the one-sided test.")
    lag: int | None = Field(default=None, ge=0, le=500,
                            description="Newey-West lags of the test (default the series' n^(1/3) rule).")
    score_from: datetime | None = Field(
        default=None, description="Bars data: only bars at or after this time are scored (a holdout); the earlier "
                                  "ones are the models' warm-up context. Default: every bar a model can predict.")
    signals: list[StrategicSignal] | None = Field(
        default=None, min_length=1,
        description="Execution: the strategic signal at each of the last len(signals) bars of `data` (the "
                    "network sizes a signal, it does not make one); both versions size the same signals.")
    cost_bps: float = Field(default=1.0, ge=0.0, le=500.0,
                            description="RL: commission per unit of turnover, in basis points.")
    slippage_bps: float = Field(default=1.0, ge=0.0, le=500.0,
                                description="RL: slippage per unit of turnover, in basis points; added to cost_bps.")

    @model_validator(mode="after")
    def _inputs(self) -> CompareRequest:
        if self.data is None and self.features is None:
            raise ValueError("give `data` (bars) or `features` with `target` (supervised rows)")
        if (self.features is None) != (self.target is None):
            raise ValueError("`features` and `target` go together")
        if self.features is not None and self.target is not None and len(self.target) != len(self.features.values):
            raise ValueError(f"target has {len(self.target)} values but features has {len(self.features.values)} "
                             "rows")
        if self.signals is not None and (self.data is None or len(self.signals) > len(self.data.timestamps)):
            raise ValueError("`signals` go with `data`, one for each of its last len(signals) bars at most")
        return self


class CompareResponse(WireModel):
    """The champion-vs-challenger verdict."""

    family: str
    champion_id: str
    challenger_id: str
    loss: str = Field(description="The per-row loss compared, in words.")
    n: int = Field(description="Paired losses compared.")
    champion_mean_loss: FiniteFloat | None
    challenger_mean_loss: FiniteFloat | None
    passed: bool = Field(description="True when the challenger may replace the champion (decision 'promote').")
    reason: str = Field(description="The verdict in one sentence (the verdict's summary).")
    decision: Literal["promote", "reject", "insufficient"] = Field(
        description="'promote': the challenger's losses are significantly lower; 'reject': they are not; "
                    "'insufficient': fewer than min_samples rows, nothing decided.")
    verdict: GateVerdict
