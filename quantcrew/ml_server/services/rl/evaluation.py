"""Out-of-sample evaluation of policies: positions backtested after costs beside buy-and-hold and flat.

Each agent is judged on its specialty (:data:`SPECIALTY`): the conservative agent on its
drawdown, the aggressive one on total return, the balanced one on the Sharpe ratio, the
contrarian one on what it earns in sideways regimes. Whether a policy may trade for the crew is
the quality gate's verdict (:func:`gate_positions`, through
:func:`quantcrew.ml_server.services.gate.rl_policy_gate`): its Sharpe after costs above
buy-and-hold's and flat's, a position held on enough bars, and its specialty better than
buy-and-hold's. ``beats_buy_and_hold`` (the specialty alone) is kept for old clients only: a
policy that never trades has a small drawdown and "beats" buy-and-hold on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.schemas.gate import GateVerdict
from quantcrew.ml_server.schemas.rl import BacktestReport, RegimeSlice, RLEvaluation
from quantcrew.ml_server.services.gate import rl_policy_gate
from quantcrew.ml_server.services.rl.backtest import (
    PERIODS_PER_YEAR,
    BacktestMetrics,
    backtest,
    benchmarks,
    regime_returns,
)
from quantcrew.ml_server.services.rl.market import Market, observation

if TYPE_CHECKING:
    from quantcrew.ml_server.services.rl.policy import PolicyModel

__all__ = [
    "GATE_SEED",
    "SPECIALTY",
    "STAND_IN_RULE",
    "backtest_report",
    "benchmark_reports",
    "evaluate_positions",
    "gate_positions",
    "run_policy",
]

FloatArray = npt.NDArray[np.float64]

# What each agent is built to win on, and how "better" reads for it.
SPECIALTY: dict[str, str] = {
    "conservative": "max_drawdown",
    "aggressive": "total_return",
    "balanced": "sharpe",
    "contrarian": "sideways_return",
}

# The specialty in words, and whether a higher value is better.
_SPECIALTY_TERMS: dict[str, tuple[str, bool]] = {
    "max_drawdown": ("max drawdown", False),
    "total_return": ("total return", True),
    "sharpe": ("Sharpe after costs", True),
    "sideways_return": ("return in sideways regimes", True),
}

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


def run_policy(policy: PolicyModel, market: Market, start: int, end: int,
               initial_position: float = 0.0) -> FloatArray:
    """Positions the policy chooses at bars ``start..end-1``, each seeing the one it holds."""
    positions = np.empty(end - start)
    position = initial_position
    for i, t in enumerate(range(start, end)):
        position = policy.answer(observation(market, t, position)).target_position
        positions[i] = position
    return positions


def backtest_report(m: BacktestMetrics) -> BacktestReport:
    """The wire form of backtest metrics."""
    return BacktestReport.model_validate(m.as_dict())


def _beats(agent: str, mine: BacktestMetrics, mine_regimes: dict[str, RegimeSlice], bench: BacktestMetrics,
           bench_regimes: dict[str, RegimeSlice]) -> bool:
    spec = SPECIALTY[agent]
    if spec == "max_drawdown":
        return mine.max_drawdown < bench.max_drawdown
    if spec == "sideways_return":
        none = RegimeSlice(total_return=0.0, n_bars=0)
        return mine_regimes.get("sideways", none).total_return > bench_regimes.get("sideways", none).total_return
    return bool(getattr(mine, spec) > getattr(bench, spec))


def evaluate_positions(agent: str, model_id: str, algorithm: str, positions: FloatArray, market: Market,
                       start: int, end: int, *, cost_bps: float, slippage_bps: float,
                       bench: dict[str, BacktestMetrics],
                       bench_regimes: dict[str, dict[str, RegimeSlice]]) -> RLEvaluation:
    """Backtest one policy's positions on bars ``start..end-1`` beside buy-and-hold."""
    metrics, net = backtest(positions, market.forward_returns[start:end], cost_bps=cost_bps,
                            slippage_bps=slippage_bps)
    by_regime = _slices(net, market.labels[start:end])
    return RLEvaluation(
        agent=agent, model_id=model_id, algorithm=algorithm,  # type: ignore[arg-type]
        metrics=backtest_report(metrics), regime_returns=by_regime,
        specialty_metric=SPECIALTY[agent],
        beats_buy_and_hold=_beats(agent, metrics, by_regime, bench["buy_and_hold"], bench_regimes["buy_and_hold"]),
    )


def gate_positions(agent: str, positions: FloatArray, market: Market, start: int, end: int, *, cost_bps: float,
                   slippage_bps: float, evaluation: RLEvaluation, bench: dict[str, BacktestMetrics],
                   bench_regimes: dict[str, dict[str, RegimeSlice]]) -> GateVerdict:
    """The quality gate's verdict on one policy's positions over bars ``start..end-1``.

    Same bars, costs and net returns as :func:`evaluate_positions` (whose ``evaluation`` gives
    the specialty measure); buy-and-hold pays the same costs. The span judged is that of the
    returns earned: bars ``start + 1 .. end``.
    """
    fwd = market.forward_returns[start:end]
    _, net = backtest(positions, fwd, cost_bps=cost_bps, slippage_bps=slippage_bps)
    _, bh_net = backtest(np.ones(end - start), fwd, cost_bps=cost_bps, slippage_bps=slippage_bps)
    spec = SPECIALTY[agent]
    words, higher = _SPECIALTY_TERMS[spec]
    mine: float | None
    theirs: float | None
    if spec == "sideways_return":
        mine_slice = evaluation.regime_returns.get("sideways")
        bh_slice = bench_regimes["buy_and_hold"].get("sideways")
        mine = mine_slice.total_return if mine_slice is not None and mine_slice.n_bars > 0 else None
        theirs = bh_slice.total_return if bh_slice is not None and bh_slice.n_bars > 0 else None
    else:
        mine = float(getattr(evaluation.metrics, spec))
        theirs = float(getattr(bench["buy_and_hold"], spec))
    iso = market.bars.iso()
    return rl_policy_gate(
        strategy_returns=net, positions=positions, buy_hold_returns=bh_net, specialty=words, specialty_value=mine,
        buy_hold_specialty_value=theirs, higher_is_better=higher, span_start=iso[start + 1], span_end=iso[end],
        periods_per_year=PERIODS_PER_YEAR, seed=GATE_SEED, rule=STAND_IN_RULE[agent],
    )


def _slices(net: FloatArray, labels: Sequence[str]) -> dict[str, RegimeSlice]:
    return {k: RegimeSlice(total_return=v.total_return, n_bars=v.n_bars)
            for k, v in regime_returns(net, labels).items()}


def benchmark_reports(market: Market, start: int, end: int, *, cost_bps: float, slippage_bps: float
                      ) -> tuple[dict[str, BacktestMetrics], dict[str, dict[str, RegimeSlice]]]:
    """Buy-and-hold and flat on bars ``start..end-1``, with their returns per regime."""
    fwd = market.forward_returns[start:end]
    bench = benchmarks(fwd, cost_bps=cost_bps, slippage_bps=slippage_bps)
    per_regime: dict[str, dict[str, RegimeSlice]] = {}
    for name in bench:
        positions = np.ones(end - start) if name == "buy_and_hold" else np.zeros(end - start)
        _, net = backtest(positions, fwd, cost_bps=cost_bps, slippage_bps=slippage_bps)
        per_regime[name] = _slices(net, market.labels[start:end])
    return bench, per_regime
