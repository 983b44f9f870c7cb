"""Choosing one run per agent among seeds and configurations, on validation bars only.

A training job trains every agent once per seed and per configuration of its search grid
(:meth:`~quantcrew.ml_server.schemas.rl.RLTrainRequest.configurations`). Each run's positions
on the validation bars (the end of the training span, never trained on) are judged by the
agent's own quality gate, and scored (:func:`validation_score`): the checks of the gate passed
there, then the Sharpe margin over buy-and-hold. The run with the highest score is kept
(:func:`choose`; the first one listed on a tie), so the choice sees no bar after the training
span. The kept run is not refitted on the validation bars: a refit would replace the network
validation chose by another draw of the same seed's lottery, which is exactly what the choice
is there to avoid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from quantcrew.ml_server.schemas.gate import GateVerdict
from quantcrew.ml_server.schemas.rl import RLTrainRequest

__all__ = ["RunSpec", "choose", "plan_runs", "validation_score"]


@dataclass(frozen=True)
class RunSpec:
    """One run of an agent: its seed and configuration."""

    seed: int
    learning_rate: float | None
    ent_coef: float | None
    reward_scale: float


def plan_runs(request: RLTrainRequest) -> list[RunSpec]:
    """Every run of one agent, seed by seed, each seed through the grid's configurations in order."""
    configs = request.configurations()
    return [RunSpec(request.seed + k, lr, ent, scale) for k in range(request.seeds) for lr, ent, scale in configs]


def _softsign(x: float) -> float:
    return x / (1.0 + abs(x))


def validation_score(verdict: GateVerdict) -> float:
    """How well a run did on the validation bars: deciding checks passed, plus a fraction from its Sharpe margin.

    ``score = passed + (1 + m / (1 + |m|)) / 2`` with ``m`` the Sharpe after costs minus
    buy-and-hold's: the fraction lies strictly inside (0, 1), so a run that passes more checks
    always scores higher, and among runs passing as many the wider margin wins.
    """
    deciding = [c for c in verdict.checks if not c.name.endswith("_reported")]
    passed = sum(1 for c in deciding if c.passed)
    sharpe = next((c for c in deciding if c.name == "sharpe_above_buy_and_hold"), None)
    margin = 0.0
    if sharpe is not None and sharpe.value is not None and sharpe.baseline_value is not None:
        margin = sharpe.value - sharpe.baseline_value
    return passed + (1.0 + _softsign(margin)) / 2.0


def choose(scores: Sequence[float]) -> int:
    """Index of the best score, the first one on a tie.

    Raises:
        ValueError: no score.
    """
    if not scores:
        raise ValueError("no run to choose from")
    best = 0
    for i, score in enumerate(scores):
        if score > scores[best]:
            best = i
    return best
