"""The execution wire contract's market conditions: finite, within +-1e15, the spreads and volatilities >= 0."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from quantcrew.ml_server.schemas.common import MAX_ABS_VALUE
from quantcrew.ml_server.schemas.execution import MarketConditions

_MARKET = {"ret_1": 0.01, "ret_5": 0.02, "vol_10": 0.01, "vol_ratio": 1.0, "range": 0.02, "volume_z": 0.0}


@pytest.mark.parametrize("field", sorted(_MARKET))
@pytest.mark.parametrize("value", [1e154, -1e300, MAX_ABS_VALUE * 2])
def test_a_market_condition_beyond_the_bound_is_refused_naming_it(field: str, value: float) -> None:
    with pytest.raises(ValidationError) as info:
        MarketConditions.model_validate({**_MARKET, field: value})
    assert info.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize("field", ["vol_10", "vol_ratio", "range"])
def test_a_negative_volatility_or_range_is_refused(field: str) -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        MarketConditions.model_validate({**_MARKET, field: -0.01})


@pytest.mark.parametrize("field", sorted(_MARKET))
def test_market_conditions_up_to_the_bound_are_accepted(field: str) -> None:
    assert getattr(MarketConditions.model_validate({**_MARKET, field: MAX_ABS_VALUE}), field) == MAX_ABS_VALUE
