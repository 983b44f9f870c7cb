"""The walk-forward backtest against a real ML server: no look-ahead, accounting, inputs."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from quantcrew.backtest.stats import compute_stats
from quantcrew.backtest.walk_forward import (
    BacktestInputError,
    WalkForwardResult,
    check_options,
    prepare_data,
    walk_forward,
)
from quantcrew.crew.decision import RiskLimits
from quantcrew.data.errors import DataError, UnknownSymbolError
from quantcrew.data.ohlcv import OHLCV
from quantcrew.tools.client import MLClient

# Small and quick: 300 bars of history, a refit every 63 bars, the bandit chooses every 5 bars.
FAST: dict[str, Any] = {"min_train": 300, "refit_every": 63, "select_every": 5, "seed": 7}


def _run(client: MLClient, bars: OHLCV | list[OHLCV], start: str, end: str, **options: Any) -> WalkForwardResult:
    series = bars if isinstance(bars, list) else [bars]
    return walk_forward(series, start, end, client=client, **{**FAST, **options})


def _record(r: Any) -> dict[str, Any]:
    """A decision record without its bandit decision id (an id the server draws at random)."""
    return {k: v for k, v in dataclasses.asdict(r).items() if k != "decision_id"}


def _assert_same_prefix(short: WalkForwardResult, long: WalkForwardResult) -> None:
    n = len(short.dates)
    assert long.dates[:n] == short.dates
    assert np.array_equal(long.positions[:n], short.positions)
    assert np.array_equal(long.equity[:n], short.equity)
    assert np.array_equal(long.turnover[:n], short.turnover)
    for symbol in short.symbols:
        assert long.regimes[symbol][:n] == short.regimes[symbol]
        assert long.agents[symbol][:n] == short.agents[symbol]
    k = len(short.decisions)
    assert [_record(r) for r in long.decisions[:k]] == [_record(r) for r in short.decisions]
    assert [(f.fit_date, f.n_train, f.n_states) for f in short.regime_fits] == \
        [(f.fit_date, f.n_train, f.n_states) for f in long.regime_fits[:len(short.regime_fits)]]


@pytest.fixture(scope="module")
def long_run(wf_client: MLClient, synth_bars: OHLCV) -> tuple[WalkForwardResult, list[tuple[int, int, str]]]:
    """The whole synthetic market (260 bars after 300 of history), with the progress it reported."""
    dates = synth_bars.iso_timestamps()
    seen: list[tuple[int, int, str]] = []
    result = _run(wf_client, synth_bars, dates[300], dates[-1], on_progress=lambda d, t, m: seen.append((d, t, m)))
    return result, seen


def test_walk_forward_shorter_data_gives_identical_decisions_up_to_its_end(
        wf_client: MLClient, synth_bars: OHLCV, long_run: tuple[WalkForwardResult, Any]) -> None:
    long, _ = long_run
    dates = synth_bars.iso_timestamps()
    start, t1 = dates[300], dates[400]  # T1 falls inside the second regime block (bars 363..425)
    short = _run(wf_client, synth_bars.iloc(slice(0, 401)), start, t1)
    assert short.dates[-1] == t1 and len(short.dates) == 101 and long.dates[-1] == dates[-1]
    _assert_same_prefix(short, long)
    assert len(set(long.regimes[synth_bars.symbol][:101])) > 1  # the regimes do change: the check has teeth
    assert np.any(short.positions != 0.0) and len(set(short.agents[synth_bars.symbol])) > 1


def test_walk_forward_perturbed_future_changes_nothing_before_it(
        wf_client: MLClient, synth_bars: OHLCV, long_run: tuple[WalkForwardResult, Any]) -> None:
    base, _ = long_run
    dates = synth_bars.iso_timestamps()
    cut = 400
    rng = np.random.default_rng(0)
    shock = np.ones(len(synth_bars))
    shock[cut + 1:] = np.exp(np.cumsum(rng.normal(-0.01, 0.04, len(synth_bars) - cut - 1)))  # a crash after T1
    future = OHLCV(symbol=synth_bars.symbol, timestamps=synth_bars.timestamps, open=synth_bars.open * shock,
                   high=synth_bars.high * shock, low=synth_bars.low * shock, close=synth_bars.close * shock,
                   volume=synth_bars.volume)
    moved = _run(wf_client, future, dates[300], dates[-1])
    n = cut - 300 + 1
    cut_moved = dataclasses.replace(
        moved, dates=moved.dates[:n], positions=moved.positions[:n], equity=moved.equity[:n],
        turnover=moved.turnover[:n], regimes={k: v[:n] for k, v in moved.regimes.items()},
        agents={k: v[:n] for k, v in moved.agents.items()}, decisions=moved.decisions[:n],
        regime_fits=[f for f in moved.regime_fits if f.fit_date < dates[cut]])
    _assert_same_prefix(cut_moved, base)
    assert not np.array_equal(base.equity, moved.equity)  # the future did change
    assert base.regimes != moved.regimes  # and so did the later regimes


def test_walk_forward_positions_are_the_decision_pipelines_targets(wf_client: MLClient, synth_bars: OHLCV,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import quantcrew.crew.decision as decision

    calls: list[Any] = []
    real = decision.decide

    def spy(inputs: Any, limits: Any = None) -> Any:
        out = real(inputs, limits)
        calls.append((inputs, out))
        return out

    monkeypatch.setattr(decision, "decide", spy)
    dates = synth_bars.iso_timestamps()
    result = _run(wf_client, synth_bars.iloc(slice(0, 361)), dates[300], dates[360])
    assert len(calls) == 5 * len(result.dates)  # the strategy and the four single-agent alternatives, every bar
    strategy = [(inputs, out) for inputs, out in calls if inputs.symbols[0].decision_id is not None]
    assert len(strategy) == len(result.dates)
    assert np.array_equal(result.positions[:, 0], [out.decisions[0].target_position for _, out in strategy])
    for (inputs, _), date in zip(strategy, result.dates, strict=True):
        assert inputs.as_of == date
        assert inputs.portfolio_var is not None and inputs.portfolio_var > 0
        assert set(inputs.symbols[0].agent_targets) == {"conservative", "aggressive", "balanced", "contrarian"}
        assert inputs.symbols[0].chosen_agent in inputs.symbols[0].agent_targets


def test_walk_forward_fill_close_gross_return_is_yesterdays_positions_times_returns(
        wf_client: MLClient, synth_pair: tuple[OHLCV, OHLCV]) -> None:
    a, b = synth_pair
    dates = a.iso_timestamps()
    result = _run(wf_client, [a, b], dates[300], dates[-1], limits=RiskLimits(max_gross=2.0, max_var=0.05),
                  fill="close")
    assert result.positions.shape == (len(result.dates), 2)
    closes = np.column_stack([a.close, b.close])[300:]
    rets = closes[1:] / closes[:-1] - 1.0
    expected = np.einsum("ij,ij->i", result.positions[:-1], rets)
    np.testing.assert_allclose(result.gross_returns[1:], expected, rtol=1e-12, atol=1e-15)
    net = (1.0 + result.gross_returns) * (1.0 - result.costs) - 1.0
    np.testing.assert_allclose(result.returns, net, rtol=1e-12, atol=1e-15)
    assert len(result.regime_fits) == 2 * math.ceil(len(result.dates) / 63)
    assert set(result.regimes) == {"AAA", "BBB"} and np.any(result.positions[:, 1] != 0.0)
    assert any("optimistic" in n for n in result.notes)


def test_walk_forward_next_open_fill_holds_old_weights_until_the_open(wf_client: MLClient,
                                                                      synth_pair: tuple[OHLCV, OHLCV]) -> None:
    a, b = synth_pair
    dates = a.iso_timestamps()
    result = _run(wf_client, [a, b], dates[300], dates[-1], limits=RiskLimits(max_gross=2.0, max_var=0.05))
    assert result.config["fill"] == "next_open" and not any("optimistic" in n for n in result.notes)
    opens, closes = np.column_stack([a.open, b.open])[300:], np.column_stack([a.close, b.close])[300:]
    gap = np.vstack([np.zeros(2), opens[1:] / closes[:-1] - 1.0])
    intraday = closes / opens - 1.0
    p = result.positions
    for j in range(2, len(result.dates)):
        # the targets decided at close j-2 were filled at open j-1 and drifted to close j-1 ...
        w = p[j - 2] * (1.0 + intraday[j - 1]) / (1.0 + p[j - 2] @ intraday[j - 1])
        # ... held over the gap to open j, where the targets decided at close j-1 were filled
        expected = (1.0 + w @ gap[j]) * (1.0 + p[j - 1] @ intraday[j]) - 1.0
        assert result.gross_returns[j] == pytest.approx(expected, rel=1e-9, abs=1e-14), j
    assert result.turnover[0] == 0.0  # nothing fills at the close of the first decision
    assert result.fills and result.fills[0].bar == 1 and result.fills[0].price == opens[1, result.fills[0].asset]


NO_STOP = RiskLimits(drawdown_stop=1.0)  # the stop never binds: runs that differ by costs hold the same positions


@pytest.fixture(scope="module")
def free_run(wf_client: MLClient, synth_bars: OHLCV) -> WalkForwardResult:
    """120 bars filled at the close, without costs or a drawdown stop."""
    dates = synth_bars.iso_timestamps()
    return _run(wf_client, synth_bars.iloc(slice(0, 421)), dates[300], dates[420], cost_bps=0.0, limits=NO_STOP,
                fill="close")


def test_walk_forward_costs_reduce_each_return_by_turnover_times_cost(wf_client: MLClient, synth_bars: OHLCV,
                                                                     free_run: WalkForwardResult) -> None:
    dates = synth_bars.iso_timestamps()
    free = free_run
    paid = _run(wf_client, synth_bars.iloc(slice(0, 421)), dates[300], dates[420], cost_bps=10.0, limits=NO_STOP,
                fill="close")
    assert np.array_equal(free.positions, paid.positions)
    assert free.turnover.sum() > 1.0 and np.array_equal(free.turnover, paid.turnover)
    np.testing.assert_allclose(paid.costs, 10e-4 * paid.turnover, rtol=0, atol=1e-18)
    # every bar: (1 + net) = (1 + gross) * (1 - cost * turnover), gross being the cost-free return
    np.testing.assert_allclose(1.0 + paid.returns, (1.0 + free.returns) * (1.0 - 10e-4 * paid.turnover), rtol=1e-12)
    assert paid.stats.total_return < free.stats.total_return
    assert paid.periods_per_year == 261  # the synthetic calendar: every business day, no holidays
    np.testing.assert_allclose(paid.stats.turnover, paid.turnover.sum() * 261 / len(paid.dates))


def _held(result: WalkForwardResult, closes: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The weight held at each decision: the previous one drifted by the bar's return (one symbol, no costs)."""
    prev = np.concatenate(([0.0], result.positions[:-1, 0]))
    r = closes[1:] / closes[:-1] - 1.0
    return prev * (1.0 + r) / (1.0 + prev * r)


def test_walk_forward_turnover_rules_trade_part_of_the_gap_or_nothing_inside_the_band(
        wf_client: MLClient, synth_bars: OHLCV, free_run: WalkForwardResult) -> None:
    dates = synth_bars.iso_timestamps()
    bars = synth_bars.iloc(slice(0, 421))
    closes = bars.close[299:]  # the close before the span, then the span's
    runs = {"full": free_run, **{k: _run(wf_client, bars, dates[300], dates[420], cost_bps=0.0, limits=NO_STOP,
                                         fill="close", **kw)
                                 for k, kw in {"half": {"adjust_rate": 0.5}, "band": {"trade_band": 0.2}}.items()}}
    full, half, band = runs["full"], runs["half"], runs["band"]
    aims = {k: np.array([r.target for r in v.decisions]) for k, v in runs.items()}
    np.testing.assert_allclose(full.positions[:, 0], aims["full"], atol=1e-12)  # every change traded in full
    held = _held(half, closes)
    np.testing.assert_allclose(half.positions[:, 0], held + 0.5 * (aims["half"] - held), atol=1e-9)
    assert half.turnover.sum() < full.turnover.sum()
    held = _held(band, closes)
    kept = np.isclose(band.positions[:, 0], held, atol=1e-9) & ~np.isclose(aims["band"], held, atol=1e-9)
    assert kept.any()
    assert np.all(np.abs(aims["band"] - held)[kept] < 0.2)
    assert np.all(np.sign(aims["band"][kept]) == np.sign(held[kept]))
    np.testing.assert_allclose(band.positions[~kept, 0], aims["band"][~kept], atol=1e-9)
    assert band.turnover.sum() < full.turnover.sum()


def test_walk_forward_buy_and_hold_is_bought_at_the_next_open_and_held(
        synth_bars: OHLCV, long_run: tuple[WalkForwardResult, Any]) -> None:
    result, _ = long_run
    path = np.concatenate(([1.0], (1.0 - 5e-4) * synth_bars.close[301:] / synth_bars.open[301]))
    expected = compute_stats(path, initial_cash=1.0, periods_per_year=261)
    np.testing.assert_allclose(result.benchmark_equity, path, rtol=1e-12)
    for name in ("total_return", "annual_return", "annual_volatility", "sharpe", "sortino", "max_drawdown"):
        assert getattr(result.benchmark_stats, name) == pytest.approx(getattr(expected, name), rel=1e-12), name
    assert result.benchmark_stats.n_trades == 1
    assert result.benchmark_stats.turnover == pytest.approx(261 / 260)


def test_walk_forward_compares_the_strategy_with_every_baseline(long_run: tuple[WalkForwardResult, Any]) -> None:
    result, _ = long_run
    assert [c.baseline for c in result.comparisons] == ["buy_and_hold", "trend", "vol_target"]
    for c in result.comparisons:
        base = result.baselines[c.baseline].stats
        assert c.difference == pytest.approx(result.stats.sharpe - base.sharpe)
        assert c.low <= c.difference <= c.high
        assert (c.verdict == "beat") == (c.low > 0) and (c.verdict == "worse") == (c.high < 0)
        assert c.label in c.sentence and f"{result.stats.sharpe:.2f}" in c.sentence
    summary = result.summary()
    assert set(summary["beat"]) == {"buy_and_hold", "trend", "vol_target"}
    assert summary["periods_per_year"] == 261 and {r["year"] for r in summary["yearly"]} == {2001, 2002}


def test_walk_forward_records_every_model_and_reports_progress(long_run: tuple[WalkForwardResult, Any]) -> None:
    result, seen = long_run
    assert len(result.regime_fits) == 5  # 260 bars, a refit every 63
    assert [f.n_train for f in result.regime_fits] == [300, 363, 426, 489, 552]
    assert all(f.fit_date < f.block_start <= f.block_end for f in result.regime_fits)
    assert len(result.regime_jobs) == 1 and {f.job_id for f in result.regime_fits} == set(result.regime_jobs)
    assert result.model_ids == [result.bandit_id] and result.bandit_id.startswith("bandit-")
    bars = [(d, t) for d, t, m in seen if not m.startswith("regimes of")]
    assert bars == [(d, 260) for d in range(1, 261)]  # one call per bar, after the regime job's
    assert seen[0][2].startswith("regimes of")
    assert math.isfinite(result.dsr) and 0.0 <= result.dsr <= 1.0 and result.n_trials == 5
    assert not result.trials.ledger and any("no trials ledger" in n for n in result.notes)
    assert set(result.trial_sharpes) == {"strategy", "follow conservative", "follow aggressive", "follow balanced",
                                         "follow contrarian"}
    summary = result.summary()
    assert summary["regime_fits"] == 5 and summary["bandit_id"] == result.bandit_id
    assert summary["agents"].startswith("rules") and summary["agent_windows"] == []



def test_prepare_data_start_after_end_names_start() -> None:
    with pytest.raises(BacktestInputError, match="^start: 2010-01-01 is after end 2009-01-01") as info:
        prepare_data("SP500", "2010-01-01", "2009-01-01")
    assert info.value.field == "start"


@pytest.mark.parametrize(("start", "end", "field", "words"), [
    ("2005-01-01", "2030-12-31", "end", "after the data: SP500 run from 1999-01-04 to 2018-12-31"),
    ("1990-01-01", "2005-12-31", "start", "before the data"),
    ("1999-06-01", "2005-12-31", "start", "needs min_train=500"),
    ("2005-13-01", "2006-01-01", "start", "not a date"),
])
def test_prepare_data_span_outside_the_data_names_the_field(start: str, end: str, field: str, words: str) -> None:
    with pytest.raises(BacktestInputError, match=words) as info:
        prepare_data(["SP500"], start, end)
    assert info.value.field == field and str(info.value).startswith(f"{field}: ")


def test_prepare_data_unknown_symbol_lists_the_known_ones() -> None:
    with pytest.raises(UnknownSymbolError, match="SP500") as info:
        prepare_data(["SP500", "NOPE"], "2005-01-01", "2006-01-01")
    assert isinstance(info.value, DataError) and isinstance(info.value, ValueError)
    assert "NOPE" in str(info.value)


def test_prepare_data_several_symbols_aligns_on_common_dates(synth_pair: tuple[OHLCV, OHLCV]) -> None:
    a, b = synth_pair
    keep = np.ones(len(b), dtype=bool)
    keep[[350, 400]] = False
    gappy = OHLCV(symbol="BBB", timestamps=b.timestamps[keep], open=b.open[keep], high=b.high[keep],
                  low=b.low[keep], close=b.close[keep], volume=b.volume[keep])
    dates = a.iso_timestamps()
    data = prepare_data([a, gappy], dates[310], dates[450], min_train=300)
    assert data.symbols == ["AAA", "BBB"]
    assert all(np.array_equal(x.timestamps, data.bars[0].timestamps) for x in data.bars)
    assert dates[350] not in data.dates and len(data.dates) == 450 - 310 + 1 - 2
    with pytest.raises(BacktestInputError, match="each symbol once"):
        prepare_data([a, a], dates[310], dates[450], min_train=300)


@pytest.mark.parametrize(("option", "value"), [
    ("refit_every", 0), ("min_train", 50), ("cost_bps", -1.0), ("cooldown", 0), ("select_every", 0),
    ("rebalance_every", 0), ("fill", "open"), ("trade_band", -0.1), ("trade_band", 1.0), ("adjust_rate", 0.0),
    ("adjust_rate", 1.5), ("policy", "greedy"),
])
def test_check_options_bad_value_names_the_option(option: str, value: Any) -> None:
    with pytest.raises(BacktestInputError, match=f"^{option}: ") as info:
        check_options(**{option: value})
    assert info.value.field == option
