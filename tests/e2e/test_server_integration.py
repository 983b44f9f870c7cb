"""Client and tool against a real uvicorn server in a child process."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import httpx
import pytest

from quantcrew.config.settings import Settings
from quantcrew.crew.server_process import LocalServer
from quantcrew.data import load_sample, to_payload_dict
from quantcrew.ml_server.schemas.regime import RegimeFitRequest, RegimeLabelRequest, RegimePredictRequest
from quantcrew.tools import RegimeDetectionTool
from quantcrew.tools.client import make_async_client, make_client
from quantcrew.tools.errors import InvalidModelInput, ModelNotFound

pytestmark = pytest.mark.integration


def _bars(payload: dict[str, Any]) -> Any:
    return RegimeLabelRequest.model_validate({"data": payload}).data


@pytest.fixture(scope="module")
def payload() -> dict[str, Any]:
    return to_payload_dict(load_sample("SP500").tail(400))


def test_fit_then_predict_over_http(live_server: LocalServer, settings: Settings, payload: dict[str, Any]) -> None:
    with make_client(settings.client, base_url=live_server.url) as client:
        assert client.ready().ready
        fitted = client.regime_fit(RegimeFitRequest.model_validate({"data": payload, "name": "spx-int"}))
        predicted = client.regime_predict(RegimePredictRequest(model_id=fitted.model_id or "", data=_bars(payload)))
        assert predicted.model_id == fitted.model_id
        assert predicted.labels == fitted.labels
        assert client.get_model(fitted.model_id or "").sha256 == fitted.model.sha256


def test_unknown_model_maps_to_model_not_found(live_server: LocalServer, settings: Settings,
                                               payload: dict[str, Any]) -> None:
    with make_client(settings.client, base_url=live_server.url) as client, pytest.raises(ModelNotFound):
        client.regime_predict(RegimePredictRequest(model_id="regime-nothere", data=_bars(payload)))


def test_nan_body_maps_to_invalid_input_without_500(live_server: LocalServer, payload: dict[str, Any]) -> None:
    import json

    bad = copy.deepcopy(payload)
    bad["close"][3] = float("nan")
    resp = httpx.post(f"{live_server.url}/v1/regime/label", content=json.dumps({"data": bad}),
                      headers={"content-type": "application/json"})
    assert resp.status_code == 422
    assert "close" in resp.json()["error"]["message"] or "close" in str(resp.json()["error"]["details"])


def test_invalid_request_from_client_raises_invalid_model_input(live_server: LocalServer, settings: Settings,
                                                                payload: dict[str, Any]) -> None:
    short = {k: v[:5] for k, v in payload.items()}
    with make_client(settings.client, base_url=live_server.url) as client, pytest.raises(InvalidModelInput):
        client.regime_label(RegimeLabelRequest.model_validate({"data": short}))


def test_async_client_concurrent_labels(live_server: LocalServer, settings: Settings, payload: dict[str, Any]) -> None:
    async def go() -> list[str]:
        async with make_async_client(settings.client, base_url=live_server.url) as client:
            req = RegimeLabelRequest.model_validate({"data": payload, "n_states": 3})
            replies = await asyncio.gather(*(client.regime_label(req) for _ in range(4)))
            return [r.data_hash for r in replies]

    hashes = asyncio.run(go())
    assert len(set(hashes)) == 1


def test_tool_against_live_server(live_server: LocalServer, settings: Settings) -> None:
    settings.client.url = live_server.url
    tool = RegimeDetectionTool(settings=settings)
    text = tool.run(symbol="SP500", lookback=500, end_date="2009-03-09")
    assert "as of 2009-03-09" in text and "degraded: false" in text
    assert tool.last_result is not None
    assert tool.last_result.data["current_label"] in {"bear", "volatile"}


def test_metrics_count_requests(live_server: LocalServer) -> None:
    httpx.get(f"{live_server.url}/health")
    text = httpx.get(f"{live_server.url}/metrics").text
    assert 'quantcrew_http_requests_total{method="GET",route="/health",status="200"}' in text
