"""``quantcrew.backtest`` re-exports the shared statistics and PSR / DSR it no longer defines."""

from __future__ import annotations

import quantcrew.backtest as backtest
from quantcrew.quant import performance, sharpe


def test_package_reexports_the_quant_statistics_unchanged() -> None:
    for name in ("max_drawdown", "period_returns", "sharpe_ratio", "sortino_ratio"):
        assert getattr(backtest, name) is getattr(performance, name)
    for name in ("SharpeMoments", "deflated_sharpe_ratio", "expected_max_sharpe", "probabilistic_sharpe_ratio",
                 "sharpe_moments"):
        assert getattr(backtest, name) is getattr(sharpe, name)
    assert set(backtest.__all__) <= set(dir(backtest))
