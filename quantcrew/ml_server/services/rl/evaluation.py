"""Out-of-sample evaluation of policies: positions backtested after costs beside buy-and-hold and flat.

Each agent is judged on its specialty (:data:`SPECIALTY`): the conservative agent on its
drawdown, the aggressive one on total return, the balanced one on the Sharpe ratio, the
contrarian one on what it earns in sideways regimes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.schemas.rl import BacktestReport, RegimeSlice, RLEvaluation
from quantcrew.ml_server.services.rl.backtest import BacktestMetrics, backtest, benchmarks, regime_returns
from quantcrew.ml_server.services.rl.market import Market, observation

if TYPE_CHECKING:
    from quantcrew.ml_server.services.rl.policy import PolicyModel

__all__ = ["SPECIALTY", "backtest_report", "benchmark_reports", "evaluate_positions", "run_policy"]

FloatArray = npt.NDArray[np.float64]

# What each agent is built to win on, and how "better" reads for it.
SPECIALTY: dict[str, str] = {
    "conservative": "max_drawdown",
    "aggressive": "total_return",
    "balanced": "sharpe",
    "contrarian": "sideways_return",
}


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
