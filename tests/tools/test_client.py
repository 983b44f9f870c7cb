"""MLClient / AsyncMLClient over httpx.MockTransport: parsing, errors, retries, breaker, factories."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr

from quantcrew.config.settings import ClientSettings, Settings
from quantcrew.ml_server.schemas.bandit import (
    BanditCreateRequest,
    BanditDeleted,
    BanditReplayRequest,
    BanditRewardRequest,
    BanditSelectRequest,
)
from quantcrew.ml_server.schemas.common import HealthResponse, ModelInfo, OHLCVPayload, ReadyResponse
from quantcrew.ml_server.schemas.jobs import JobInfo, JobProgress
from quantcrew.ml_server.schemas.regime import (
    RegimeFitRequest,
    RegimeFitResponse,
    RegimeLabelRequest,
    RegimeLabelResponse,
    RegimePredictRequest,
    RegimeStateInfo,
)
from quantcrew.tools.breaker import BreakerState, CircuitBreaker
from quantcrew.tools.client import AsyncMLClient, MLClient, make_async_client, make_client
from quantcrew.tools.errors import (
    CircuitOpenError,
    Conflict,
    InvalidModelInput,
    MLClientError,
    MLResponseError,
    MLServerFault,
    MLServerTimeout,
    MLServerUnavailable,
    ModelNotFound,
    ModelNotReady,
    Unauthorized,
)

BASE = "http://ml.test"
T0 = datetime(2024, 1, 2, tzinfo=UTC)

# ---------------------------------------------------------------------------- fixtures and fakes


def _payload(n: int = 40) -> OHLCVPayload:
    rng = random.Random(7)
    closes, price = [], 100.0
    for _ in range(n):
        price *= 1.0 + rng.gauss(0.0005, 0.01)
        closes.append(round(price, 4))
    opens = [closes[0], *closes[:-1]]
    return OHLCVPayload(
        timestamps=[T0 + timedelta(days=i) for i in range(n)],
        open=opens,
        high=[max(o, c) * 1.005 for o, c in zip(opens, closes, strict=True)],
        low=[min(o, c) * 0.995 for o, c in zip(opens, closes, strict=True)],
        close=closes,
        volume=[1e6 + i for i in range(n)],
    )


def _label_request() -> RegimeLabelRequest:
    return RegimeLabelRequest(data=_payload(), n_states=2, seed=3)


def _model_info(model_id: str = "regime-3f9a") -> ModelInfo:
    return ModelInfo(
        model_id=model_id, name="regime", version=3, family="regime", method="gaussian_hmm",
        sha256="ab" * 32, created_at=T0, stage="none", metadata={"n_states": 2},
    )


def _label_response(n: int = 39) -> RegimeLabelResponse:
    rng = random.Random(1)
    p_bull = [rng.random() for _ in range(n)]
    labels = ["bull" if p > 0.5 else "bear" for p in p_bull]
    return RegimeLabelResponse(
        model_id=None, model_version=None, method_used="gaussian_hmm", fallback=False,
        data_hash="f" * 64, seed=3, as_of=T0 + timedelta(days=n),
        n_states=2,
        timestamps=[(T0 + timedelta(days=i + 1)).isoformat() for i in range(n)],
        labels=labels,  # type: ignore[arg-type]
        states=[0 if label == "bull" else 1 for label in labels],
        label_probabilities={"bull": p_bull, "bear": [1.0 - p for p in p_bull]},
        state_probabilities=[[p, 1.0 - p] for p in p_bull],
        state_info=[
            RegimeStateInfo(state=0, label="bull", mean_return=0.0011, volatility=0.008,
                            expected_duration=12.5, occupancy=0.55),
            RegimeStateInfo(state=1, label="bear", mean_return=-0.0013, volatility=0.017,
                            expected_duration=7.1, occupancy=0.45),
        ],
        transition_matrix=[[0.92, 0.08], [0.14, 0.86]],
        current_label=labels[-1],  # type: ignore[arg-type]
        current_probability=max(p_bull[-1], 1.0 - p_bull[-1]),
        converged=True, log_likelihood=123.456, bic={2: -210.5, 3: -190.25},
    )


def _fit_response() -> RegimeFitResponse:
    label = _label_response()
    return RegimeFitResponse(
        **{**label.model_dump(), "model_id": "regime-3f9a", "model_version": 3}, model=_model_info()
    )


def _error(status: int, code: str, message: str = "m", details: object = None, **kw: object) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message, "details": details}}, **kw)  # type: ignore[arg-type]


def _ok(model: object) -> httpx.Response:
    if isinstance(model, list):
        content = json.dumps([m.model_dump(mode="json") for m in model]).encode()
    else:
        content = model.model_dump_json().encode()  # type: ignore[attr-defined]
    return httpx.Response(200, content=content, headers={"content-type": "application/json"})


Reply = httpx.Response | Exception


class Server:
    """A scripted transport: hands out replies in order (the last one repeats) and records requests."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    @property
    def calls(self) -> int:
        return len(self.requests)


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)

    async def async_sleep(self, seconds: float) -> None:
        self.delays.append(seconds)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


MakeClient = Callable[..., MLClient]


@pytest.fixture
def make(sleeps: Sleeps) -> MakeClient:
    def _make(server: Server, **kwargs: object) -> MLClient:
        http = httpx.Client(base_url=BASE, transport=httpx.MockTransport(server))
        kwargs.setdefault("sleep", sleeps)
        kwargs.setdefault("rng", random.Random(0))
        return MLClient(http, **kwargs)  # type: ignore[arg-type]

    return _make


def _make_async(server: Server, sleeps: Sleeps, **kwargs: object) -> AsyncMLClient:
    http = httpx.AsyncClient(base_url=BASE, transport=httpx.MockTransport(server))
    kwargs.setdefault("sleep", sleeps.async_sleep)
    kwargs.setdefault("rng", random.Random(0))
    return AsyncMLClient(http, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- requests and parsing


def test_regime_label_sends_json_body_and_parses_realistic_response(make: MakeClient) -> None:
    expected = _label_response()
    server = Server(_ok(expected))
    request = _label_request()
    with make(server) as client:
        result = client.regime_label(request)
    assert result == expected
    assert isinstance(result, RegimeLabelResponse)
    assert result.bic == {2: -210.5, 3: -190.25}  # int keys survive the JSON round trip
    sent = server.requests[0]
    assert sent.method == "POST"
    assert str(sent.url) == f"{BASE}/v1/regime/label"
    assert sent.headers["content-type"] == "application/json"
    assert sent.content == request.model_dump_json().encode()
    assert RegimeLabelRequest.model_validate_json(sent.content) == request


def test_regime_fit_parses_fit_response(make: MakeClient) -> None:
    expected = _fit_response()
    server = Server(_ok(expected))
    result = make(server).regime_fit(RegimeFitRequest(data=_payload(), name="spx_daily"))
    assert isinstance(result, RegimeFitResponse)
    assert result.model.model_id == "regime-3f9a"
    assert result == expected
    assert server.requests[0].url.path == "/v1/regime/fit"
    assert json.loads(server.requests[0].content)["name"] == "spx_daily"


def test_regime_predict_posts_model_id(make: MakeClient) -> None:
    server = Server(_ok(_label_response()))
    make(server).regime_predict(RegimePredictRequest(model_id="regime-3f9a", data=_payload()))
    assert server.requests[0].url.path == "/v1/regime/predict"
    assert json.loads(server.requests[0].content)["model_id"] == "regime-3f9a"


def test_list_and_get_models_parse_model_info(make: MakeClient) -> None:
    infos = [_model_info("a"), _model_info("b")]
    client = make(Server(_ok(infos)))
    assert client.list_models() == infos
    server = Server(_ok(_model_info("x/y z")))
    assert make(server).get_model("x/y z").model_id == "x/y z"
    assert server.requests[0].url.raw_path == b"/v1/models/x%2Fy%20z"  # the id cannot escape its segment
    assert server.requests[0].method == "GET"


def test_get_model_empty_id_raises_value_error(make: MakeClient) -> None:
    server = Server(_ok(_model_info()))
    with pytest.raises(ValueError, match="get_model: the id must not be empty"):
        make(server).get_model("")
    assert server.calls == 0


def test_health_and_ready_parse(make: MakeClient) -> None:
    client = make(Server(_ok(HealthResponse(version="0.1.0"))))
    assert client.health() == HealthResponse(version="0.1.0")
    ready = ReadyResponse(ready=True, device="cpu", models=2, families=["regime"])
    server = Server(_ok(ready))
    assert make(server).ready() == ready
    assert server.requests[0].url.path == "/ready"


def test_call_wrong_request_type_raises_type_error_before_sending(make: MakeClient) -> None:
    server = Server(_ok(_label_response()))
    fit_request = RegimeFitRequest(data=_payload())
    with pytest.raises(TypeError, match="regime_label takes a RegimeLabelRequest, got RegimeFitRequest"):
        make(server).regime_label(fit_request)
    assert server.calls == 0


def test_base_url_path_prefix_is_kept(sleeps: Sleeps) -> None:
    server = Server(_ok(_label_response()))
    http = httpx.Client(base_url="http://ml.test/prefix", transport=httpx.MockTransport(server))
    MLClient(http, sleep=sleeps).regime_label(_label_request())
    assert server.requests[0].url.path == "/prefix/v1/regime/label"


def test_reply_breaking_contract_raises_server_fault(make: MakeClient) -> None:
    server = Server(httpx.Response(200, json={"labels": "not a list"}))
    with pytest.raises(MLServerFault) as info:
        make(server).regime_label(_label_request())
    assert info.value.code == "invalid_response"
    assert info.value.status_code == 200
    assert info.value.details
    assert server.calls == 1  # a broken contract is not retried


def test_reply_not_json_raises_server_fault(make: MakeClient) -> None:
    with pytest.raises(MLServerFault, match="does not match the wire contract"):
        make(Server(httpx.Response(200, content=b"<html>"))).health()


# ---------------------------------------------------------------------------- error mapping


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (422, "invalid_input", InvalidModelInput),
        (401, "unauthorized", Unauthorized),
        (404, "model_not_found", ModelNotFound),
        (500, "internal_error", MLServerFault),
    ],
)
def test_call_error_status_raises_mapped_error(
    make: MakeClient, status: int, code: str, cls: type[MLResponseError]
) -> None:
    details = [{"loc": ["data", "close", 3], "msg": "finite"}]
    server = Server(_error(status, code, "what to change", details, headers={"x-request-id": "r1"}))
    with pytest.raises(cls) as info:
        make(server).regime_label(_label_request())
    assert type(info.value) is cls
    assert (info.value.status_code, info.value.code, info.value.message) == (status, code, "what to change")
    assert info.value.details == details
    assert info.value.request_id == "r1"
    assert info.value.endpoint == "POST /v1/regime/label"
    assert server.calls == 1  # neither 4xx nor a plain 500 is retried


def test_ready_not_ready_raises_model_not_ready_once(make: MakeClient, sleeps: Sleeps) -> None:
    server = Server(_error(503, "not_ready", "registry opening"))
    with pytest.raises(ModelNotReady, match="registry opening"):
        make(server).ready()
    assert server.calls == 1  # a probe answers now: no retry
    assert sleeps.delays == []


def test_transport_error_keeps_cause(make: MakeClient) -> None:
    original = httpx.ConnectError("connection refused")
    with pytest.raises(MLServerUnavailable) as info:
        make(Server(original), retries=0).list_models()
    assert info.value.__cause__ is original


def test_timeout_raises_ml_server_timeout(make: MakeClient) -> None:
    server = Server(httpx.ReadTimeout("slow"))
    with pytest.raises(MLServerTimeout):
        make(server, retries=1).regime_label(_label_request())
    assert server.calls == 2


# ---------------------------------------------------------------------------- retries


def test_idempotent_call_retries_503_then_succeeds(make: MakeClient, sleeps: Sleeps) -> None:
    expected = _label_response()
    server = Server(_error(503, "not_ready"), _error(503, "not_ready"), _ok(expected))
    client = make(server, retries=2, backoff_s=0.1)
    assert client.regime_label(_label_request()) == expected
    assert server.calls == 3
    assert len(sleeps.delays) == 2
    assert 0.05 <= sleeps.delays[0] <= 0.1  # backoff_s * 2**0, jittered to 50-100 %
    assert 0.1 <= sleeps.delays[1] <= 0.2  # backoff_s * 2**1
    assert [r.content for r in server.requests] == [server.requests[0].content] * 3
    assert client.last_call is not None
    assert client.last_call.attempts == 3
    assert client.last_call.ok
    assert client.last_call.status_code == 200


@pytest.mark.parametrize(
    "failure", [httpx.ConnectError("refused"), httpx.RemoteProtocolError("eof"), httpx.ConnectTimeout("t")]
)
def test_idempotent_call_retries_transport_errors(make: MakeClient, failure: Exception) -> None:
    server = Server(failure, _ok(_model_info()))
    assert make(server).get_model("regime-3f9a").model_id == "regime-3f9a"
    assert server.calls == 2


def test_retries_stop_after_n_and_raise_last_error(make: MakeClient, sleeps: Sleeps) -> None:
    original = httpx.ConnectError("refused")
    server = Server(original)
    with pytest.raises(MLServerUnavailable) as info:
        make(server, retries=3).regime_predict(RegimePredictRequest(model_id="m", data=_payload()))
    assert server.calls == 4
    assert len(sleeps.delays) == 3
    assert info.value.__cause__ is original


def test_retries_zero_makes_one_attempt(make: MakeClient, sleeps: Sleeps) -> None:
    server = Server(_error(503, "not_ready"))
    with pytest.raises(ModelNotReady):
        make(server, retries=0).regime_label(_label_request())
    assert server.calls == 1
    assert sleeps.delays == []


@pytest.mark.parametrize(
    "failure", [_error(503, "not_ready"), httpx.ConnectError("refused"), httpx.ReadTimeout("slow")]
)
def test_regime_fit_is_never_retried(make: MakeClient, sleeps: Sleeps, failure: Reply) -> None:
    server = Server(failure, _ok(_fit_response()))
    with pytest.raises(MLClientError):
        make(server, retries=5).regime_fit(RegimeFitRequest(data=_payload()))
    assert server.calls == 1
    assert sleeps.delays == []


def test_backoff_grows_and_is_capped(make: MakeClient, sleeps: Sleeps) -> None:
    server = Server(httpx.ConnectError("refused"))
    with pytest.raises(MLServerUnavailable):
        make(server, retries=6, backoff_s=1.0, max_backoff_s=4.0).list_models()
    ceilings = [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert len(sleeps.delays) == 6
    for delay, ceiling in zip(sleeps.delays, ceilings, strict=True):
        assert ceiling * 0.5 <= delay <= ceiling


def test_backoff_jitter_varies(make: MakeClient, sleeps: Sleeps) -> None:
    server = Server(httpx.ConnectError("refused"))
    with pytest.raises(MLServerUnavailable):
        make(server, retries=8, backoff_s=1.0, max_backoff_s=1.0).list_models()
    assert len(set(sleeps.delays)) > 1


def test_retry_after_header_lengthens_backoff_up_to_cap(make: MakeClient, sleeps: Sleeps) -> None:
    busy = _error(503, "not_ready", headers={"retry-after": "2"})
    server = Server(busy, busy, _ok(_model_info()))
    make(server, retries=2, backoff_s=0.01, max_backoff_s=1.5).get_model("m")
    assert sleeps.delays == [1.5, 1.5]


def test_invalid_retry_settings_raise(sleeps: Sleeps) -> None:
    http = httpx.Client(base_url=BASE, transport=httpx.MockTransport(Server(_ok(_model_info()))))
    with pytest.raises(ValueError):
        MLClient(http, retries=-1)
    with pytest.raises(ValueError):
        MLClient(http, backoff_s=-0.1)


# ---------------------------------------------------------------------------- breaker


def _breaker(clock: FakeClock, threshold: int = 2) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=threshold, reset_timeout_s=30.0, clock=clock)


def test_breaker_opens_after_threshold_and_short_circuits_transport(make: MakeClient) -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    server = Server(httpx.ConnectError("refused"))
    client = make(server, retries=0, breaker=breaker)
    for _ in range(2):
        with pytest.raises(MLServerUnavailable):
            client.regime_label(_label_request())
    assert breaker.state is BreakerState.OPEN
    for _ in range(5):
        with pytest.raises(CircuitOpenError, match="30.0 s"):
            client.regime_label(_label_request())
    assert server.calls == 2  # the open breaker never touched the transport
    assert client.last_call is not None
    assert client.last_call.attempts == 0
    assert not client.last_call.ok


def test_breaker_half_opens_after_timeout_and_trial_success_closes(make: MakeClient) -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    server = Server(httpx.ConnectError("refused"), httpx.ConnectError("refused"), _ok(_label_response()))
    client = make(server, retries=0, breaker=breaker)
    for _ in range(2):
        with pytest.raises(MLServerUnavailable):
            client.regime_label(_label_request())
    clock.now += 30.0
    assert breaker.state is BreakerState.HALF_OPEN
    client.regime_label(_label_request())
    assert server.calls == 3
    assert breaker.failures == 0
    assert str(breaker.state) == "closed"


def test_breaker_trial_failure_reopens(make: MakeClient) -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    server = Server(_error(500, "internal_error"))
    client = make(server, retries=0, breaker=breaker)
    for _ in range(2):
        with pytest.raises(MLServerFault):
            client.list_models()
    clock.now += 30.0
    with pytest.raises(MLServerFault):
        client.list_models()  # the trial
    with pytest.raises(CircuitOpenError):
        client.list_models()
    assert server.calls == 3


def test_breaker_4xx_never_trips(make: MakeClient) -> None:
    breaker = _breaker(FakeClock())
    server = Server(_error(422, "invalid_input"))
    client = make(server, breaker=breaker)
    for _ in range(10):
        with pytest.raises(InvalidModelInput):
            client.regime_label(_label_request())
    assert server.calls == 10
    assert breaker.state is BreakerState.CLOSED
    assert breaker.failures == 0


def test_breaker_opening_mid_retries_stops_them_with_real_error(make: MakeClient, sleeps: Sleeps) -> None:
    breaker = _breaker(FakeClock(), threshold=2)
    server = Server(httpx.ConnectError("refused"))
    with pytest.raises(MLServerUnavailable) as info:
        make(server, retries=5, breaker=breaker).regime_label(_label_request())
    assert not isinstance(info.value, CircuitOpenError)
    assert server.calls == 2
    assert len(sleeps.delays) == 1
    assert breaker.state is BreakerState.OPEN


def test_probes_bypass_open_breaker(make: MakeClient) -> None:
    breaker = _breaker(FakeClock())
    breaker.record_failure()
    breaker.record_failure()
    server = Server(_ok(HealthResponse(version="0.1.0")))
    client = make(server, breaker=breaker)
    assert client.health().status == "ok"
    assert server.calls == 1
    assert breaker.state is BreakerState.OPEN


# ---------------------------------------------------------------------------- factories


def test_make_client_sends_auth_user_agent_and_uses_settings() -> None:
    server = Server(_ok(_model_info()))
    settings = ClientSettings(url="http://ml.example:8765", api_key=SecretStr("s3cret"), timeout_s=12.0,
                              connect_timeout_s=1.5, retries=4, backoff_s=0.25, breaker_failures=5,
                              breaker_reset_s=7.0)
    client = make_client(settings, transport=httpx.MockTransport(server))
    client.get_model("m1")
    sent = server.requests[0]
    assert sent.headers["authorization"] == "Bearer s3cret"
    assert sent.headers["user-agent"].startswith("quantcrew/")
    assert str(sent.url) == "http://ml.example:8765/v1/models/m1"
    assert client.retries == 4
    assert client.backoff_s == 0.25
    assert client.breaker is not None
    assert (client.breaker.failure_threshold, client.breaker.reset_timeout_s) == (5, 7.0)
    assert client._http.timeout == httpx.Timeout(12.0, connect=1.5)
    client.close()


def test_make_client_without_key_sends_no_auth_header() -> None:
    server = Server(_ok(_model_info()))
    make_client(ClientSettings(url=BASE), transport=httpx.MockTransport(server)).get_model("m1")
    assert "authorization" not in server.requests[0].headers


def test_make_client_base_url_argument_wins() -> None:
    server = Server(_ok(HealthResponse(version="0")))
    client = make_client(ClientSettings(url=BASE), base_url="http://127.0.0.1:9999",
                         transport=httpx.MockTransport(server))
    client.health()
    assert str(server.requests[0].url) == "http://127.0.0.1:9999/health"


def test_make_client_without_url_raises_value_error() -> None:
    with pytest.raises(ValueError, match="QUANTCREW_CLIENT__URL"):
        make_client(ClientSettings())


def test_make_client_configures_keepalive_pool() -> None:
    client = make_client(ClientSettings(url=BASE, max_connections=7))
    pool = client._http._transport._pool  # type: ignore[attr-defined]
    assert pool._max_connections == 7
    assert pool._max_keepalive_connections == 7
    client.close()


def test_make_client_shares_given_breaker() -> None:
    breaker = CircuitBreaker()
    client = make_client(ClientSettings(url=BASE), breaker=breaker, transport=httpx.MockTransport(Server()))
    assert client.breaker is breaker


def test_close_closes_http_client(make: MakeClient) -> None:
    client = make(Server(_ok(_model_info())))
    with client:
        pass
    assert client._http.is_closed


def test_last_call_ms_recorded(make: MakeClient) -> None:
    client = make(Server(_ok(_model_info())))
    assert client.last_call_ms is None
    client.get_model("m")
    assert client.last_call_ms is not None
    assert client.last_call_ms >= 0.0
    assert client.last_call is not None
    assert client.last_call.endpoint == "get_model"


def test_works_over_starlette_test_client() -> None:
    # Starlette's TestClient subclasses httpx2.Client (starlette >= 1.x), not httpx.Client:
    # the client only relies on base_url / build_request / send / close, so it works as is.
    pytest.importorskip("fastapi")
    from fastapi import FastAPI, Response
    from fastapi.responses import JSONResponse
    from fastapi.testclient import TestClient

    app = FastAPI()

    @app.post("/v1/regime/label")
    def label(body: dict[str, object]) -> Response:
        assert body["seed"] == 3
        return Response(_label_response().model_dump_json(), media_type="application/json")

    @app.get("/v1/models/{model_id}")
    def get_model(model_id: str) -> Response:
        body = {"error": {"code": "model_not_found", "message": f"no model {model_id!r}", "details": None}}
        return JSONResponse(body, status_code=404)

    with MLClient(TestClient(app)) as client:  # type: ignore[arg-type]
        assert client.regime_label(_label_request()) == _label_response()
        with pytest.raises(ModelNotFound, match="no model 'zz'"):
            client.get_model("zz")


def test_bandit_reset_and_delete_over_the_real_app(settings: Settings) -> None:
    from fastapi.testclient import TestClient

    from quantcrew.ml_server.app import create_app

    with TestClient(create_app(settings)) as http, MLClient(http) as client:  # type: ignore[arg-type]
        client.bandit_create(BanditCreateRequest(name="meta", policy="ucb1"))
        for regime in ("bull", "bear"):
            decision = client.bandit_select(BanditSelectRequest(bandit="meta", regime=regime))
            client.bandit_reward(BanditRewardRequest(decision_id=decision.decision_id, reward=0.5))
        decision = client.bandit_select(BanditSelectRequest(bandit="meta", regime="bull"))
        with pytest.raises(InvalidModelInput, match="QUANTCREW_SERVER__MAX_ABS_REWARD"):
            client.bandit_reward(BanditRewardRequest(decision_id=decision.decision_id, reward=1e160))
        state = client.bandit_reset("meta", regime="bull")
        assert {r.regime: r.pulls for r in state.regimes}["bull"] == 0 and state.pulls == 1
        assert client.bandit_reset("meta").pulls == 0
        deleted = client.bandit_delete("meta")
        assert deleted.name == "meta" and deleted.regimes == ["bear", "bull"] and deleted.decisions == 2
        with pytest.raises(ModelNotFound):
            client.bandit_delete("meta")
        with pytest.raises(ModelNotFound):
            client.bandit_state("meta")


def _replay_request() -> BanditReplayRequest:
    bars = {"timestamps": ["2024-01-02", "2024-01-03"], "open": [1.0, 1.1], "high": [1.2, 1.2],
            "low": [0.9, 1.0], "close": [1.1, 1.15]}
    return BanditReplayRequest.model_validate({"symbol": "SP500", "data": bars, "model_ids": ["rl-a", "rl-b"]})


def test_bandit_replay_posts_and_parses_the_job_and_a_second_replay_is_a_conflict(make: MakeClient) -> None:
    job = JobInfo(job_id="job-0123456789abcdef", kind="bandit_replay", status="queued", cancel_requested=False,
                  created_at=datetime(2024, 1, 2, tzinfo=UTC), progress=JobProgress(done=0, total=0, fraction=0.0),
                  params={"bars": 120})
    server = Server(_ok(job), _error(409, "conflict", "already replayed", {"status": "done", "result": {"bars": 1}}))
    client = make(server)
    request = _replay_request()
    assert client.bandit_replay(request) == job
    assert (server.requests[0].method, server.requests[0].url.path) == ("POST", "/v1/bandit/replay")
    assert json.loads(server.requests[0].content)["model_ids"] == ["rl-a", "rl-b"]
    with pytest.raises(Conflict, match="already replayed") as info:
        client.bandit_replay(request)
    assert info.value.details == {"status": "done", "result": {"bars": 1}}


async def test_async_bandit_replay_is_never_retried(sleeps: Sleeps) -> None:
    server = Server(_error(503, "model_not_ready", "starting"))
    with pytest.raises(ModelNotReady):
        await _make_async(server, sleeps).bandit_replay(_replay_request())
    assert server.calls == 1 and server.requests[0].url.path == "/v1/bandit/replay"


# ---------------------------------------------------------------------------- async


async def test_async_bandit_reset_and_delete_send_their_routes(sleeps: Sleeps) -> None:
    deleted = BanditDeleted(bandit_id="bandit-0123456789abcdef", name="meta", regimes=["bull"], decisions=3)
    server = Server(_ok(deleted))
    assert await _make_async(server, sleeps).bandit_delete("meta") == deleted
    assert (server.requests[0].method, server.requests[0].url.path) == ("DELETE", "/v1/bandit/meta")
    server = Server(_error(404, "not_found", "no bandit with id or name 'meta'"))
    with pytest.raises(ModelNotFound):
        await _make_async(server, sleeps).bandit_reset("meta", regime="bear")
    request = server.requests[0]
    assert (request.method, request.url.path) == ("POST", "/v1/bandit/meta/reset")
    assert json.loads(request.content) == {"regime": "bear"}
    assert server.calls == 1  # a reset is never retried


async def test_async_regime_label_parses_realistic_response(sleeps: Sleeps) -> None:
    expected = _label_response()
    server = Server(_ok(expected))
    request = _label_request()
    async with _make_async(server, sleeps) as client:
        assert await client.regime_label(request) == expected
    assert server.requests[0].content == request.model_dump_json().encode()
    assert client._http.is_closed


async def test_async_all_endpoints_parse(sleeps: Sleeps) -> None:
    ready = ReadyResponse(ready=True, device="cuda", models=1, families=["regime"])
    infos = [_model_info()]
    client = _make_async(Server(_ok(HealthResponse(version="1"))), sleeps)
    assert (await client.health()).version == "1"
    assert await _make_async(Server(_ok(ready)), sleeps).ready() == ready
    assert await _make_async(Server(_ok(infos)), sleeps).list_models() == infos
    assert await _make_async(Server(_ok(infos[0])), sleeps).get_model("m") == infos[0]
    fit = await _make_async(Server(_ok(_fit_response())), sleeps).regime_fit(RegimeFitRequest(data=_payload()))
    assert fit.model.version == 3
    predict = RegimePredictRequest(model_id="m", data=_payload())
    assert (await _make_async(Server(_ok(_label_response())), sleeps).regime_predict(predict)).n_states == 2


async def test_async_retries_idempotent_calls(sleeps: Sleeps) -> None:
    server = Server(httpx.ConnectError("refused"), _error(503, "not_ready"), _ok(_label_response()))
    client = _make_async(server, sleeps, retries=2)
    await client.regime_label(_label_request())
    assert server.calls == 3
    assert len(sleeps.delays) == 2
    assert client.last_call is not None
    assert client.last_call.attempts == 3


async def test_async_regime_fit_is_never_retried(sleeps: Sleeps) -> None:
    server = Server(_error(503, "not_ready"), _ok(_fit_response()))
    with pytest.raises(ModelNotReady):
        await _make_async(server, sleeps, retries=3).regime_fit(RegimeFitRequest(data=_payload()))
    assert server.calls == 1
    assert sleeps.delays == []


async def test_async_error_mapping(sleeps: Sleeps) -> None:
    server = Server(_error(422, "invalid_input", "data.close.3: finite", [{"loc": ["data"]}]))
    with pytest.raises(InvalidModelInput) as info:
        await _make_async(server, sleeps).regime_label(_label_request())
    assert info.value.code == "invalid_input"
    assert info.value.details == [{"loc": ["data"]}]
    assert server.calls == 1


async def test_async_timeout_maps(sleeps: Sleeps) -> None:
    server = Server(httpx.PoolTimeout("pool"))
    with pytest.raises(MLServerTimeout):
        await _make_async(server, sleeps, retries=0).list_models()


async def test_async_breaker_short_circuits(sleeps: Sleeps) -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    server = Server(httpx.ConnectError("refused"), httpx.ConnectError("refused"), _ok(_label_response()))
    client = _make_async(server, sleeps, retries=0, breaker=breaker)
    for _ in range(2):
        with pytest.raises(MLServerUnavailable):
            await client.regime_label(_label_request())
    with pytest.raises(CircuitOpenError):
        await client.regime_label(_label_request())
    assert server.calls == 2
    clock.now += 30.0
    await client.regime_label(_label_request())
    assert breaker.state is BreakerState.CLOSED


async def test_async_cancelled_trial_frees_breaker(sleeps: Sleeps) -> None:
    clock = FakeClock()
    breaker = _breaker(clock, threshold=1)
    breaker.record_failure()
    clock.now += 30.0
    started = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        started.set()
        await asyncio.sleep(3600)
        raise AssertionError("not reached")

    http = httpx.AsyncClient(base_url=BASE, transport=httpx.MockTransport(hang))
    client = AsyncMLClient(http, breaker=breaker, sleep=sleeps.async_sleep)
    task = asyncio.create_task(client.list_models())
    await started.wait()
    with pytest.raises(CircuitOpenError):  # the trial is in flight
        await client.list_models()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.before_call() is True  # the slot was freed for the next trial


async def test_make_async_client_sends_auth_header() -> None:
    server = Server(_ok(_model_info()))
    settings = ClientSettings(url=BASE, api_key=SecretStr("k"))
    async with make_async_client(settings, transport=httpx.MockTransport(server)) as client:
        await client.get_model("m")
    assert server.requests[0].headers["authorization"] == "Bearer k"
    assert server.requests[0].headers["user-agent"].startswith("quantcrew/")


async def test_make_async_client_without_url_raises_value_error() -> None:
    with pytest.raises(ValueError):
        make_async_client(ClientSettings())
