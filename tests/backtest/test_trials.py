"""What a data span is: the key the trials ledger counts trials on."""

from __future__ import annotations

from quantcrew.backtest.trials import span_key
from quantcrew.data import generate_regime_market
from quantcrew.data.ohlcv import OHLCV


def test_span_key_names_symbols_and_dates_and_changes_with_the_data() -> None:
    a = generate_regime_market(300, seed=1, symbol="AAA").bars
    b = generate_regime_market(300, seed=2, symbol="BBB").bars
    key = span_key([b, a])
    assert key.startswith("AAA,BBB 2000-01-03..") and key == span_key([a, b])
    edited = OHLCV(symbol="AAA", timestamps=a.timestamps, open=a.open, high=a.high, low=a.low,
                   close=a.close * 1.0001, volume=a.volume)
    assert span_key([edited, b]) != key  # the same dates, other bars: another span
    assert span_key([a.iloc(slice(0, 299)), b.iloc(slice(0, 299))]) != key
