"""Rolling forecasts: bounded window blocks, per-window moments, agreement with the one-window VaR."""

from __future__ import annotations

import numpy as np
import pytest

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.services.risk import forecasts
from quantcrew.ml_server.services.risk.var import historical_var

LEVELS = [0.95, 0.99]


def test_window_blocks_cover_every_day_in_bounded_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forecasts, "BLOCK_ELEMENTS", 50)  # 5 windows of 10 per block
    x = np.arange(38, dtype=np.float64)
    blocks = forecasts.window_blocks(x, 10)
    assert [lo for lo, _ in blocks] == [0, 5, 10, 15, 20, 25]
    days = np.concatenate([block for _, block in blocks])
    assert days.shape == (28, 10)  # one window per backtest day, rows 10..37
    for day, past in enumerate(days):
        np.testing.assert_array_equal(past, x[day:day + 10])  # the rows before day + 10, never that row


def test_rolling_moments_match_each_window() -> None:
    x = np.random.default_rng(0).normal(0.0, 0.01, 80)
    moments = forecasts.RollingMoments(x, 20)
    for day in range(60):
        assert moments.mean[day] == pytest.approx(np.mean(x[day:day + 20]), abs=1e-15)
        assert moments.std[day] == pytest.approx(np.std(x[day:day + 20], ddof=1), rel=1e-12)


def test_rolling_moments_constant_window_refused_naming_its_row() -> None:
    x = np.concatenate([np.zeros(25), np.random.default_rng(1).normal(0.0, 0.01, 30)])
    with pytest.raises(InvalidInputError, match="before row 20") as info:
        forecasts.RollingMoments(x, 20).check_not_constant()
    assert info.value.details[0]["row"] == 20


def test_historical_forecasts_match_historical_var_per_window() -> None:
    x = np.random.default_rng(2).standard_t(4, 120) * 0.01
    out, details = forecasts.historical_forecasts(x, 50, LEVELS)
    assert out.shape == (70, 2) and details["losses_per_window"] == 50.0
    for day in (0, 33, 69):
        want = [r.var for r in historical_var(x[day:day + 50], LEVELS)]
        np.testing.assert_allclose(out[day], want, rtol=1e-12)
