"""Out-of-sample evaluation of policies: positions backtested after costs beside buy-and-hold and flat.

Each agent is judged on its specialty IN ITS OWN REGIME (:data:`SPECIALISM`): the conservative
agent on its max drawdown over the bars labelled bear or volatile, the aggressive one on its
total return over the bull bars, the contrarian one on its total return over the sideways bars,
the balanced one (the generalist) on its Sharpe ratio over every bar. The labels are the
filtered regime labels the policy observes (known when each position was chosen). Whether a
policy may trade for the crew is the quality gate's verdict (:func:`gate_positions`, through
:func:`quantcrew.ml_server.services.gate.rl_policy_gate`): its Sharpe after costs above
buy-and-hold's and flat's over every bar, a position held on enough bars, and its specialty in
its regime better than buy-and-hold's on the same bars. ``beats_buy_and_hold`` (that specialty
check alone) is kept for old clients only: a policy that never trades has a small drawdown and
"beats" buy-and-hold on it.

Every annualised figure uses the bars per year of the data's own calendar
(:attr:`Market.periods_per_year`), reported with the metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.gate import GateVerdict
from quantcrew.ml_server.schemas.rl import BacktestReport, RegimeSlice, RLEvaluation
from quantcrew.ml_server.services.gate import SpecialtyMeasure, regime_measure, rl_policy_gate
from quantcrew.ml_server.services.rl.backtest import BacktestMetrics, backtest, benchmarks, regime_returns
from quantcrew.ml_server.services.rl.env import ACTION_POSITIONS
from quantcrew.ml_server.services.rl.market import Market, observation

if TYPE_CHECKING:
    from quantcrew.ml_server.services.rl.policy import PolicyModel

__all__ = [
    "GATE_SEED",
    "SPECIALISM",
    "SPECIALTY",
    "STAND_IN_RULE",
    "Specialism",
    "annualisation",
    "backtest_report",
    "benchmark_reports",
    "evaluate_positions",
    "gate_positions",
    "run_policy",
    "specialty_values",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Specialism:
    """What an agent is built to win on, and where.

    Attributes:
        measure: The measure compared with buy-and-hold's (lower is better for a drawdown).
        regimes: The regime labels whose bars it is measured over; None: every bar.
        words: The measure in words; the gate's check reads ``"<words> in <regimes> regimes"``.
        metric: The wire name of the specialty (``RLEvaluation.specialty_metric``).
    """

    measure: SpecialtyMeasure
    regimes: tuple[str, ...] | None
    words: str
    metric: str


SPECIALISM: dict[str, Specialism] = {
    "conservative": Specialism("max_drawdown", ("bear", "volatile"), "max drawdown", "max_drawdown"),
    "aggressive": Specialism("total_return", ("bull",), "total return", "total_return"),
    "balanced": Specialism("sharpe", None, "Sharpe after costs", "sharpe"),
    "contrarian": Specialism("total_return", ("sideways",), "return", "sideways_return"),
}

SPECIALTY: dict[str, str] = {agent: s.metric for agent, s in SPECIALISM.items()}
"""The wire name of each agent's specialty."""

# The agent-side rule that answers for an agent whose policy failed its gate (named, not imported:
# the rules live with the crew's tools).
STAND_IN_RULE: dict[str, str] = {
    "aggressive": "momentum rule for aggressive",
    "balanced": "volatility-scaled momentum rule for balanced",
    "conservative": "volatility-filtered momentum rule for conservative",
    "contrarian": "mean-reversion rule for contrarian",
}

GATE_SEED = 0
"""Seed of the gate's bootstrap interval: one seed, so a span judged twice gives one interval."""


def annualisation(market: Market) -> int:
    """The bars per year every annualised figure on this market uses (counted from its calendar).

    Raises:
        InvalidInputError: the bars' spacing has no meaning per year (irregular, or too short).
    """
    if market.periods_per_year is None:
        raise InvalidInputError(
            "cannot infer bars per year from these timestamps (irregular spacing over less than a year): "
            "send bars of one spacing (daily, hourly, weekly, monthly)",
            details=[{"loc": ["data", "timestamps"], "msg": "spacing has no meaning per year"}])
    return market.periods_per_year


def run_policy(policy: PolicyModel, market: Market, start: int, end: int,
               initial_position: float = 0.0) -> FloatArray:
    """Positions the policy chooses at bars ``start..end-1``, each seeing the one it holds.

    A discrete policy is asked once for every bar and every position it may hold (short, flat,
    long: one batched forward pass), then the path is walked through that table: the same
    positions as asking bar by bar, in a fraction of the time. A continuous policy is asked bar
    by bar.
    """
    n = end - start
    positions = np.empty(n)
    if n <= 0:
        return positions
    position = float(initial_position)
    if policy.action_mode == "discrete":
        rows = market.scaled[start:end]
        obs = np.concatenate([np.column_stack([rows, np.full(n, p, dtype=np.float32)]) for p in ACTION_POSITIONS])
        table = policy.target_positions(obs.astype(np.float32)).reshape(len(ACTION_POSITIONS), n)
        column = {p: j for j, p in enumerate(ACTION_POSITIONS)}
        for i in range(n):
            j = column.get(position)
            position = (float(table[j, i]) if j is not None
                        else policy.answer(observation(market, start + i, position)).target_position)
            positions[i] = position
        return positions
    for i, t in enumerate(range(start, end)):
        position = policy.answer(observation(market, t, position)).target_position
        positions[i] = position
    return positions


def backtest_report(m: BacktestMetrics) -> BacktestReport:
    """The wire form of backtest metrics."""
    return BacktestReport.model_validate(m.as_dict())


def specialty_values(agent: str, net: FloatArray, bh_net: FloatArray, labels: Sequence[str],
                     periods_per_year: int) -> tuple[float | None, float | None, bool]:
    """The agent's specialty in its regime, buy-and-hold's on the same bars, and whether the agent's is better.

    None where the regime has too few bars to measure (then it is not better).
    """
    spec = SPECIALISM[agent]
    mine, _ = regime_measure(net, labels, spec.regimes, spec.measure, periods_per_year)
    theirs, _ = regime_measure(bh_net, labels, spec.regimes, spec.measure, periods_per_year)
    if mine is None or theirs is None:
        return mine, theirs, False
    better = mine < theirs if spec.measure == "max_drawdown" else mine > theirs
    return mine, theirs, better


def evaluate_positions(agent: str, model_id: str, algorithm: str, positions: FloatArray, market: Market,
                       start: int, end: int, *, cost_bps: float, slippage_bps: float) -> RLEvaluation:
    """Backtest one policy's positions on bars ``start..end-1`` beside buy-and-hold."""
    ppy = annualisation(market)
    fwd = market.forward_returns[start:end]
    metrics, net = backtest(positions, fwd, cost_bps=cost_bps, slippage_bps=slippage_bps, periods_per_year=ppy)
    _, bh_net = backtest(np.ones(end - start), fwd, cost_bps=cost_bps, slippage_bps=slippage_bps,
                         periods_per_year=ppy)
    labels = market.labels[start:end]
    mine, _, better = specialty_values(agent, net, bh_net, labels, ppy)
    spec = SPECIALISM[agent]
    return RLEvaluation(
        agent=agent, model_id=model_id, algorithm=algorithm,  # type: ignore[arg-type]
        metrics=backtest_report(metrics), regime_returns=_slices(net, labels), specialty_metric=spec.metric,
        specialty_regimes=None if spec.regimes is None else list(spec.regimes), specialty_value=mine,
        beats_buy_and_hold=better,
    )


def gate_positions(agent: str, positions: FloatArray, market: Market, start: int, end: int, *, cost_bps: float,
                   slippage_bps: float, periods_per_year: int | None = None) -> GateVerdict:
    """The quality gate's verdict on one policy's positions over bars ``start..end-1``.

    Same bars, costs and net returns as :func:`evaluate_positions`; buy-and-hold pays the same
    costs; the specialty is measured over the agent's own regime (:data:`SPECIALISM`). The span
    judged is that of the returns earned: bars ``start + 1 .. end``. ``periods_per_year``
    overrides the market's count (validation counts it on the training bars only).
    """
    ppy = annualisation(market) if periods_per_year is None else periods_per_year
    fwd = market.forward_returns[start:end]
    _, net = backtest(positions, fwd, cost_bps=cost_bps, slippage_bps=slippage_bps, periods_per_year=ppy)
    _, bh_net = backtest(np.ones(end - start), fwd, cost_bps=cost_bps, slippage_bps=slippage_bps,
                         periods_per_year=ppy)
    spec = SPECIALISM[agent]
    iso = market.bars.iso()
    return rl_policy_gate(
        strategy_returns=net, positions=positions, buy_hold_returns=bh_net, specialty=spec.words,
        specialty_measure=spec.measure, regime_labels=market.labels[start:end], specialty_regimes=spec.regimes,
        span_start=iso[start + 1], span_end=iso[end], periods_per_year=ppy, seed=GATE_SEED,
        rule=STAND_IN_RULE[agent],
    )


def _slices(net: FloatArray, labels: Sequence[str]) -> dict[str, RegimeSlice]:
    return {k: RegimeSlice(total_return=v.total_return, n_bars=v.n_bars)
            for k, v in regime_returns(net, labels).items()}


def benchmark_reports(market: Market, start: int, end: int, *, cost_bps: float, slippage_bps: float
                      ) -> tuple[dict[str, BacktestMetrics], dict[str, dict[str, RegimeSlice]]]:
    """Buy-and-hold and flat on bars ``start..end-1``, with their returns per regime."""
    ppy = annualisation(market)
    fwd = market.forward_returns[start:end]
    bench = benchmarks(fwd, cost_bps=cost_bps, slippage_bps=slippage_bps, periods_per_year=ppy)
    per_regime: dict[str, dict[str, RegimeSlice]] = {}
    for name in bench:
        positions = np.ones(end - start) if name == "buy_and_hold" else np.zeros(end - start)
        _, net = backtest(positions, fwd, cost_bps=cost_bps, slippage_bps=slippage_bps, periods_per_year=ppy)
        per_regime[name] = _slices(net, market.labels[start:end])
    return bench, per_regime
