"""The MCP tools over a real server and the real mcp client: the REST route's input, reply and refusals."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import numpy as np
import pytest
from mcp import ClientSession
from mcp.types import CallToolResult, TextContent

from quantcrew.ml_server.mcp_server.catalog import CATALOG
from quantcrew.ml_server.schemas.risk import VarRequest
from tests.ml_server.mcp_server.conftest import LiveApp

pytestmark = pytest.mark.integration

Session = Callable[..., AbstractAsyncContextManager[ClientSession]]


def _var_request(seed: int = 7, rows: int = 250) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    returns = rng.standard_t(4, size=(rows, 2)) * 0.01
    return {"data": {"columns": ["SPX", "NDX"], "values": returns.tolist()}, "weights": [0.6, 0.4],
            "levels": [0.95, 0.99], "methods": ["historical", "parametric_normal"]}


def _text(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


def _reply(result: CallToolResult) -> dict[str, Any]:
    assert not result.isError, _text(result)
    assert result.structuredContent is not None
    return result.structuredContent


def _error(result: CallToolResult) -> dict[str, Any]:
    assert result.isError, _text(result)
    assert result.structuredContent is not None
    return result.structuredContent


async def test_list_tools_gives_every_catalog_tool_with_the_rest_schemas(mcp_session: Session) -> None:
    async with mcp_session() as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert list(listed) == [entry.name for entry in CATALOG]
    var = listed["risk_var"]
    assert var.inputSchema == VarRequest.model_json_schema()
    assert var.outputSchema is None  # declared, it would cost the SDK's client a full schema check per call
    assert "POST /v1/risk/var" in (var.description or "") and "VarResponse" in (var.description or "")
    assert var.annotations is not None and var.annotations.readOnlyHint is True
    assert listed["jobs_cancel"].annotations is not None and listed["jobs_cancel"].annotations.destructiveHint


async def test_risk_var_over_mcp_is_the_rest_reply(mcp_session: Session, rest: httpx.Client) -> None:
    request = _var_request()
    async with mcp_session() as client:
        result = await client.call_tool("risk_var", request)
    over_rest = rest.post("/v1/risk/var", json=request)
    assert over_rest.status_code == 200
    assert _reply(result) == over_rest.json()
    assert _text(result) == over_rest.text  # the same bytes as text
    assert _reply(result)["data_hash"].startswith("sha256:")  # provenance travels with it


async def test_regime_fit_then_predict_over_mcp_matches_rest(mcp_session: Session, rest: httpx.Client,
                                                              sp500_payload: dict[str, Any]) -> None:
    train = {key: values[:250] for key, values in sp500_payload.items()}
    recent = {key: values[250:] for key, values in sp500_payload.items()}
    async with mcp_session() as client:
        fitted = _reply(await client.call_tool("regime_fit", {"name": "mcp-regime", "data": train, "n_states": 2}))
        predict = {"model_id": fitted["model_id"], "data": recent, "symbol": "SP500"}
        predicted = _reply(await client.call_tool("regime_predict", predict))
    stored = rest.get(f"/v1/models/{fitted['model_id']}")
    assert stored.status_code == 200 and stored.json()["name"] == "mcp-regime"  # the fit went to the registry
    assert fitted["model_version"] == stored.json()["version"]
    over_rest = rest.post("/v1/regime/predict", json=predict)
    assert over_rest.status_code == 200
    assert predicted == over_rest.json()
    assert predicted["model_id"] == fitted["model_id"] and predicted["data_hash"].startswith("sha256:")


async def test_bandit_select_and_reward_over_mcp_match_rest_and_count_exactly(
        mcp_session: Session, rest: httpx.Client) -> None:
    created = rest.post("/v1/bandit", json={"name": "mcp-desk", "arms": ["trend", "revert"], "regimes": ["calm"]})
    assert created.status_code == 201
    select = {"bandit": "mcp-desk", "regime": "calm", "mode": "exploit"}  # no draw: the same arm for the same state
    async with mcp_session() as client:
        chosen = _reply(await client.call_tool("bandit_select", select))
        over_rest = rest.post("/v1/bandit/select", json=select).json()
        assert {k: v for k, v in chosen.items() if k != "decision_id"} == \
            {k: v for k, v in over_rest.items() if k != "decision_id"}
        rewarded = _reply(await client.call_tool("bandit_reward", {"decision_id": chosen["decision_id"], "reward": 1}))
        assert rest.post("/v1/bandit/reward", json={"decision_id": over_rest["decision_id"], "reward": 0}).is_success
        state = _reply(await client.call_tool("bandit_state", {"bandit": "mcp-desk"}))
    assert rewarded["bandit_id"] == created.json()["bandit_id"]
    assert state == rest.get("/v1/bandit/mcp-desk").json()
    assert state["pulls"] == 2


@pytest.mark.parametrize("change", [
    {"levels": [1.5]},  # a constraint of a field
    {"data": {"columns": ["SPX"], "values": [[0.01, 0.02]]}},  # the payload's own validator
    {"methods": ["astrology"]},  # an enum
])
async def test_bad_input_is_a_tool_error_with_the_rest_422_body(mcp_session: Session, rest: httpx.Client,
                                                                 change: dict[str, Any]) -> None:
    request = {**_var_request(), **change}
    async with mcp_session() as client:
        result = await client.call_tool("risk_var", request)
    over_rest = rest.post("/v1/risk/var", json=request)
    assert over_rest.status_code == 422
    assert _error(result) == over_rest.json()
    assert _error(result)["error"]["details"][0]["loc"][0] == "body"


async def test_missing_field_and_unknown_field_are_named_like_rest(mcp_session: Session,
                                                                   rest: httpx.Client) -> None:
    async with mcp_session() as client:
        missing = await client.call_tool("risk_var", {"weights": [1.0]})
        unknown = await client.call_tool("risk_var", {**_var_request(), "leverage": 3})
    assert _error(missing) == rest.post("/v1/risk/var", json={"weights": [1.0]}).json()
    assert "data" in _error(missing)["error"]["message"]
    assert _error(unknown) == rest.post("/v1/risk/var", json={**_var_request(), "leverage": 3}).json()


async def test_domain_errors_are_tool_errors_with_the_rest_body(mcp_session: Session, rest: httpx.Client,
                                                                sp500_payload: dict[str, Any]) -> None:
    predict = {"model_id": "regime-does-not-exist", "data": sp500_payload}
    async with mcp_session() as client:
        no_model = await client.call_tool("regime_predict", predict)
        no_bandit = await client.call_tool("bandit_state", {"bandit": "nobody"})
        no_job = await client.call_tool("jobs_get", {"job_id": "j" * 65})
        bad_limit = await client.call_tool("jobs_list", {"limit": 0})
    assert _error(no_model) == rest.post("/v1/regime/predict", json=predict).json()
    assert _error(no_model)["error"]["code"] == "model_not_found"
    assert _error(no_bandit) == rest.get("/v1/bandit/nobody").json()
    assert _error(no_job) == rest.get(f"/v1/jobs/{'j' * 65}").json()  # a path parameter is named as one
    assert _error(no_job)["error"]["details"][0]["loc"] == ["path", "job_id"]
    assert _error(bad_limit) == rest.get("/v1/jobs", params={"limit": 0}).json()  # and a query parameter
    assert _error(bad_limit)["error"]["details"][0]["loc"] == ["query", "limit"]


async def test_list_replies_come_wrapped_as_result(mcp_session: Session, rest: httpx.Client) -> None:
    async with mcp_session() as client:
        listed = _reply(await client.call_tool("models_list", {"family": "regime"}))
    assert listed == {"result": rest.get("/v1/models", params={"family": "regime"}).json()}


async def test_json_strings_for_nested_arguments_are_parsed(mcp_session: Session, rest: httpx.Client) -> None:
    import json

    request = _var_request(seed=3)
    async with mcp_session() as client:  # some desktop clients send nested objects as JSON text
        result = await client.call_tool("risk_var", {**request, "data": json.dumps(request["data"])})
    assert _reply(result) == rest.post("/v1/risk/var", json=request).json()


async def test_tool_calls_are_counted_by_the_route_metrics(mcp_session: Session, rest: httpx.Client,
                                                           live_app: LiveApp) -> None:
    fits = live_app.app.state.metrics.fits.labels("risk", "var:historical", "false")
    before = fits._value.get()
    async with mcp_session() as client:
        _reply(await client.call_tool("risk_var", _var_request(seed=11)))
    assert fits._value.get() == before + 1  # the route's own counter: the tool ran the route's handler
    assert 'route="/mcp"' in rest.get("/metrics").text
