"""Regime verbs: label (stateless), fit (stored), predict (a stored model on new bars)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from quantcrew.data.loaders import to_payload_dict
from quantcrew.data.synthetic import generate_regime_market
from quantcrew.ml_server.errors import InvalidInputError, ModelNotFoundError
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.regime import RegimeFitRequest, RegimeLabelRequest, RegimePredictRequest
from quantcrew.ml_server.services.regime import features, service

FAST = {"n_states": 2, "n_restarts": 1}  # a cheap fit: these tests are about the verbs, not the HMM


@pytest.fixture(scope="module")
def payload() -> dict[str, Any]:
    return to_payload_dict(generate_regime_market(300, seed=1).bars)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ModelRegistry]:
    reg = ModelRegistry(tmp_path / "r.db", tmp_path / "artifacts")
    yield reg
    reg.close()


def test_label_uses_request_settings(payload: dict[str, Any]) -> None:
    reply = service.label(RegimeLabelRequest.model_validate(
        {"data": payload, "n_states": 2, "features": ["range"], "seed": 5}), min_rows=10)
    assert reply.n_states == 2 and reply.seed == 5 and set(reply.bic) == {2}
    assert len(reply.labels) == len(payload["timestamps"]) - 1 and reply.model_id is None


def test_label_too_few_rows_raises_invalid_input(payload: dict[str, Any]) -> None:
    short = {k: v[:20] for k, v in payload.items()}
    with pytest.raises(InvalidInputError, match=r"data has 20 bars.*at least 50"):
        service.label(RegimeLabelRequest.model_validate({"data": short}), min_rows=50)


def test_label_builds_the_features_of_the_bars_once(payload: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[tuple[str, ...]] = []
    original = features.FeatureSource.__init__

    def counting(self: features.FeatureSource, *args: Any, **kwargs: Any) -> None:
        built.append(tuple(args[1]))
        original(self, *args, **kwargs)

    monkeypatch.setattr(features.FeatureSource, "__init__", counting)
    service.label(RegimeLabelRequest.model_validate({"data": payload, "features": ["range", "realized_vol"], **FAST}),
                  min_rows=10)
    assert built == [("range", "realized_vol")]


def test_fit_stores_the_detector_and_returns_the_label_reply(payload: dict[str, Any],
                                                            registry: ModelRegistry) -> None:
    request = RegimeFitRequest.model_validate({"data": payload, "name": "spx", **FAST})
    fitted = service.fit(request, registry, min_rows=10)
    labelled = service.label(request, min_rows=10)
    assert fitted.model.model_id == fitted.model_id and fitted.model_version == 1
    assert fitted.model.metadata["n_bars"] == 300 and fitted.model.metadata["data_hash"] == labelled.data_hash
    assert fitted.labels == labelled.labels and fitted.bic == labelled.bic


def test_predict_rebuilds_the_stored_detector(payload: dict[str, Any], registry: ModelRegistry) -> None:
    fitted = service.fit(RegimeFitRequest.model_validate({"data": payload, **FAST}), registry, min_rows=10)
    predicted = service.predict(RegimePredictRequest.model_validate({"model_id": fitted.model_id, "data": payload}),
                                registry)
    assert predicted.labels == fitted.labels and predicted.model_id == fitted.model_id
    assert registry.is_cached(fitted.model_id)


def test_predict_unknown_model_raises_not_found(payload: dict[str, Any], registry: ModelRegistry) -> None:
    with pytest.raises(ModelNotFoundError):
        service.predict(RegimePredictRequest.model_validate({"model_id": "regime-nope", "data": payload}), registry)


def test_label_at_the_2002_nasdaq_bottom_is_bear_and_no_falling_state_is_bull() -> None:
    # the regime tool's default window (750 bars and the one seeding the first return) ending at the bottom;
    # three states, as BIC chooses there (fixed here to fit once)
    from quantcrew.data.samples import load_sample
    from quantcrew.ml_server.services.bars import bars_from_payload
    from quantcrew.ml_server.services.regime.model import RegimeDetector

    request = RegimeLabelRequest.model_validate({
        "data": to_payload_dict(load_sample("NASDAQ").between(None, "2002-10-09").tail(751)), "n_states": 3})
    bars = bars_from_payload(request.data)
    detector = RegimeDetector(n_states=3)
    filtering = detector.fit_filter(bars)
    reply = detector.to_response(bars, filtering=filtering, include_probabilities=False)
    assert reply.current_label == "bear"
    assert all(s.label != "bull" or s.mean_return > 0 for s in reply.state_info)
    assert any(s.mean_return < 0 and s.volatility < 0.025 for s in reply.state_info)  # a calm state that fell
    trend = reply.trend
    assert trend is not None and trend.applied and trend.bear_trend and trend.price_drawdown > 0.4
    assert trend.calm_drawdown >= trend.bear_drawdown
    assert trend.calm_trailing_return is not None and trend.calm_trailing_return < 0
    assert filtering.filter_labels[-1] != "bull"  # without the trend reading: calm, but no longer bull
