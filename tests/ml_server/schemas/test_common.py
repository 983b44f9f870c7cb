"""The shared wire contract's numeric bounds: prices, volumes and table values that no computation can overflow
are accepted; anything beyond is a validation error naming the column and the row."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from quantcrew.data.loaders import to_payload_dict
from quantcrew.data.synthetic import generate_regime_market
from quantcrew.ml_server.schemas.common import MAX_PRICE, MAX_VOLUME, MIN_PRICE, OHLCVPayload


@pytest.fixture(scope="module")
def bars() -> dict[str, Any]:
    return to_payload_dict(generate_regime_market(10, seed=0).bars)


def _with_last(bars: dict[str, Any], column: str, value: float) -> dict[str, Any]:
    out = {k: list(v) for k, v in bars.items()}
    out[column][-1] = value
    if column in ("open", "close"):  # keep the bar's high and low around it, so only the bound can fail
        out["high"][-1] = max(out["high"][-1], value)
        out["low"][-1] = min(out["low"][-1], value)
    return out


def _error(payload: dict[str, Any], column: str) -> dict[str, Any]:
    """The error at ``column`` (a low price set below the bound also moves the bar's low below it)."""
    with pytest.raises(ValidationError) as info:
        OHLCVPayload.model_validate(payload)
    found = next(e for e in info.value.errors() if e["loc"] == (column,))
    return dict(found)


@pytest.mark.parametrize("column", ["open", "high", "low", "close"])
@pytest.mark.parametrize("value", [5e-324, 1e-300, MIN_PRICE / 2, MAX_PRICE * 2, 1e300])
def test_price_outside_the_bounds_is_refused_naming_column_and_row(bars: dict[str, Any], column: str,
                                                                   value: float) -> None:
    err = _error(_with_last(bars, column, value), column)
    assert f"row {len(bars['close']) - 1}" in err["msg"] and "prices must lie between" in err["msg"]


@pytest.mark.parametrize("value", [0.0, -1.0])
def test_price_at_or_below_zero_is_refused_as_not_positive(bars: dict[str, Any], value: float) -> None:
    assert "prices must be positive" in _error(_with_last(bars, "close", value), "close")["msg"]


@pytest.mark.parametrize("value", [MIN_PRICE, MAX_PRICE])
def test_prices_at_the_bounds_are_accepted(bars: dict[str, Any], value: float) -> None:
    n = len(bars["close"])
    flat = {**bars, "open": [value] * n, "high": [value] * n, "low": [value] * n, "close": [value] * n}
    assert OHLCVPayload.model_validate(flat).close[-1] == value


@pytest.mark.parametrize("value", [-5e-324, -1.0, -1e300, MAX_VOLUME * 2, 1e300])
def test_volume_below_zero_or_above_the_bound_is_refused_naming_the_row(bars: dict[str, Any], value: float) -> None:
    err = _error(_with_last(bars, "volume", value), "volume")
    assert f"row {len(bars['close']) - 1}" in err["msg"] and "volumes must lie between 0" in err["msg"]


@pytest.mark.parametrize("value", [0.0, MAX_VOLUME])
def test_volume_of_zero_and_at_the_bound_is_accepted(bars: dict[str, Any], value: float) -> None:
    assert OHLCVPayload.model_validate(_with_last(bars, "volume", value)).volume is not None
