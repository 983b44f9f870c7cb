"""Wire contract of the quality gates: the verdict a trained model gets before the crew may use it.

A model is deployed for the crew only when it beats its baseline out of sample, on bars it was
not trained on, measured the same way every time (the server's ``services.gate`` module). The
verdict is recorded with the model (registry metadata key ``"gate"``) and travels in training
results and in the answers that name a model which failed (a gated model: a named rule stands
in for it by design).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from quantcrew.ml_server.schemas.common import FiniteFloat, WireModel

__all__ = ["GATES", "GateCheck", "GateKind", "GateVerdict"]

GateKind = Literal["rl_policy", "ensemble", "execution", "challenger"]
GATES: tuple[GateKind, ...] = ("rl_policy", "ensemble", "execution", "challenger")


class GateCheck(WireModel):
    """One comparison of a gate: the model's measure against its baseline's."""

    name: str = Field(description="Stable identifier of the check, e.g. 'sharpe_above_buy_and_hold'.")
    measure: str = Field(description="What was measured, in words, e.g. 'Sharpe after costs'.")
    value: FiniteFloat | None = Field(description="The model's measure; null when it could not be measured.")
    baseline: str = Field(description="What it was compared with, e.g. 'buy-and-hold' or 'required share'.")
    baseline_value: FiniteFloat | None = Field(description="The baseline's measure (or the threshold).")
    passed: bool = Field(description="Whether the model's measure is better than the baseline's, as the check "
                                     "reads 'better'. A check whose name ends in '_reported' does not decide.")


class GateVerdict(WireModel):
    """A gate's verdict on one model, with every comparison it made."""

    gate: GateKind = Field(description="Which gate judged: 'rl_policy', 'ensemble', 'execution' or 'challenger' "
                                       "(a challenger version against the champion it would replace).")
    passed: bool = Field(description="True when every deciding check passed: the model may be deployed.")
    checks: list[GateCheck] = Field(description="Every comparison made, deciding ones first.")
    interval: tuple[FiniteFloat, FiniteFloat] | None = Field(
        description="90% paired block-bootstrap interval of the Sharpe difference model - baseline (annualised); "
                    "reported beside the verdict, it does not decide. Null where no Sharpe is compared.")
    p_value: FiniteFloat | None = Field(
        description="p-value of the gate's paired test (ensemble: one-sided Diebold-Mariano on per-row log-loss "
                    "differences); null where the gate runs no test.")
    span_start: str | None = Field(description="First bar judged (ISO date), out of sample.")
    span_end: str | None = Field(description="Last bar judged (ISO date).")
    n: int = Field(ge=0, description="Bars (or rows) judged.")
    summary: str = Field(description="One plain sentence: the verdict and what was compared.")
    rule: str | None = Field(default=None,
                             description="The rule that stands in for the model when it failed, in words.")
