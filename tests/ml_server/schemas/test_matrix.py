"""The table payload's numeric bound: values within +-MAX_ABS_VALUE, anything larger refused at its row and
column."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from quantcrew.ml_server.schemas.common import MAX_ABS_VALUE
from quantcrew.ml_server.schemas.matrix import MatrixPayload


@pytest.mark.parametrize("value", [1e300, -1e300, 1e154, -1e154, MAX_ABS_VALUE * 1.001, -MAX_ABS_VALUE * 1.001])
def test_value_beyond_the_bound_is_refused_at_its_row_and_column(value: float) -> None:
    values = [[0.01, 0.02], [0.03, -0.01], [0.0, 0.01]]
    values[2][1] = value
    with pytest.raises(ValidationError) as info:
        MatrixPayload.model_validate({"columns": ["a", "b"], "values": values})
    err = info.value.errors()[0]
    assert err["loc"] == ("values", 2, 1)
    assert err["type"] in ("less_than_equal", "greater_than_equal")


@pytest.mark.parametrize("value", [MAX_ABS_VALUE, -MAX_ABS_VALUE, 5e-324, -5e-324, 0.0])
def test_values_up_to_the_bound_and_tiny_ones_are_accepted(value: float) -> None:
    payload = MatrixPayload.model_validate({"columns": ["a"], "values": [[value], [1.0]]})
    assert payload.values[0][0] == value
