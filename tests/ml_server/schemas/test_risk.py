"""The risk wire contract's returns: a simple return lies above -1 (no holding loses more than all of it)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from quantcrew.ml_server.schemas.common import MAX_ABS_VALUE, MAX_SIMPLE_RETURN
from quantcrew.ml_server.schemas.risk import VarRequest
from quantcrew.ml_server.schemas.risk_backtest import VarBacktestRequest

_ROWS = [[0.01, -0.02], [0.005, 0.01], [-0.03, 0.02]]


@pytest.mark.parametrize("model", [VarRequest, VarBacktestRequest])
@pytest.mark.parametrize("value", [-1.0, -1.5, -4.1, -1e9, MAX_SIMPLE_RETURN * 2])
def test_return_at_or_below_minus_one_or_above_the_bound_is_refused_naming_the_cell(
        model: type[VarRequest | VarBacktestRequest], value: float) -> None:
    rows = [list(r) for r in _ROWS]
    rows[1][1] = value
    with pytest.raises(ValidationError) as info:
        model.model_validate({"data": {"columns": ["A", "B"], "values": rows}})
    err = info.value.errors()[0]
    assert err["loc"][0] == "data"
    assert "values[1][1] (column 'B')" in err["msg"] and "simple return must lie above -1" in err["msg"]


@pytest.mark.parametrize("value", [-0.999999, MAX_SIMPLE_RETURN])
def test_returns_just_above_minus_one_and_at_the_bound_are_accepted(value: float) -> None:
    rows = [list(r) for r in _ROWS]
    rows[1][1] = value
    assert VarRequest.model_validate({"data": {"columns": ["A", "B"], "values": rows}}).data.values[1][1] == value


def test_portfolio_value_above_the_table_bound_is_refused() -> None:
    with pytest.raises(ValidationError, match="portfolio_value"):
        VarRequest.model_validate({"data": {"columns": ["A", "B"], "values": _ROWS},
                                   "portfolio_value": MAX_ABS_VALUE * 10})
