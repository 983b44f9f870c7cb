"""Regime wire contract: the causal job's request defaults and checks, and the trend reading's switch."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from quantcrew.data.loaders import to_payload_dict
from quantcrew.data.synthetic import generate_regime_market
from quantcrew.ml_server.schemas.regime import RegimeCausalRequest, RegimeFitRequest, RegimeLabelRequest


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    return to_payload_dict(generate_regime_market(30, seed=0).bars)


def test_causal_request_defaults_are_the_walk_forward_defaults(data: dict[str, Any]) -> None:
    req = RegimeCausalRequest.model_validate({"data": data})
    assert (req.min_train, req.refit_every) == (500, 63)
    assert req.include_probabilities is False and req.trend_reading is True
    assert (req.n_states, req.min_states, req.max_states, req.features, req.seed, req.n_restarts) == (
        None, 2, 4, ["range"], 0, 4)


@pytest.mark.parametrize("model", [RegimeCausalRequest, RegimeLabelRequest, RegimeFitRequest])
def test_every_regime_request_checks_the_detector_fields_alike(model: type, data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="must not exceed max_states"):
        model.model_validate({"data": data, "min_states": 4, "max_states": 3})
    with pytest.raises(ValidationError, match="must not repeat"):
        model.model_validate({"data": data, "features": ["range", "range"]})
    with pytest.raises(ValidationError, match="trend_reading"):
        model.model_validate({"data": data, "trend_reading": "sometimes"})
    assert model.model_validate({"data": data, "trend_reading": False}).trend_reading is False


@pytest.mark.parametrize(("field", "value"), [("min_train", 9), ("refit_every", 0), ("symbol", "x" * 65),
                                              ("unknown", 1)])
def test_causal_request_rejects_out_of_range_fields(field: str, value: Any, data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        RegimeCausalRequest.model_validate({"data": data, field: value})
    assert info.value.errors()[0]["loc"] == (field,)
