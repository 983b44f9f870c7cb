"""Tool-to-server overhead of a small request: the agent-side call over HTTP vs the same service call in process.

The call is a cluster predict of one row on a fitted KMeans (4 columns; the model is cached on
both sides), made one at a time:

* ``tool``: the path a tool's ``_calls`` takes: ``drive(call(CLUSTER_PREDICT, request), perform)``
  through the sync ``MLClient`` (``make_client``: keep-alive pool, retries, breaker) to a real
  uvicorn server in a child process (``quantcrew-server``) on a loopback port;
* ``service``: ``services.cluster.service.predict(request, registry)`` in this process, on the
  same data with the same fitted model: the work itself, with no HTTP.

The overhead is the difference of the medians. Where it goes is then timed layer by layer, each
on its own and in this process:

* client, request: ``model_dump_json`` of the request;
* client, reply: ``ClusterPredictResponse.model_validate_json`` of the reply;
* client, the rest: the tool flow (generator driver, ``perform``) and ``MLClient``'s exchange
  (URL, breaker, retry loop, error mapping, call record): the tool path on an ``MLClient`` whose
  transport answers at once, minus httpx without network, minus the two above;
* httpx: a prebuilt body POSTed to a prebuilt absolute URL with a plain ``httpx.Client`` whose
  transport answers at once (no network), the reply's bytes read;
* transport (httpcore, loopback, uvicorn): ``raw httpx`` (the same POST to the real server)
  minus httpx without network minus ``server app``;
* server app: the whole ASGI app called in process with the request's bytes (routing, our
  middleware, validation, the service in a worker thread, serialisation) on an app of its own
  over the same model; split into our middleware (each layer around a no-op app), request
  validation (orjson + the request model, as the route gets it), the service, reply
  serialisation, and the rest (FastAPI's routing, dependencies, the thread hop).

The four end-to-end measurements (tool, service, raw httpx, server app) are interleaved call by
call, so that load from elsewhere falls on them alike; the layers are timed in blocks between
rounds. The 1-minute load average is printed with the table.
Target: tool - service median <= 1.5 ms.

Run: ``.venv/bin/python bench/tool_overhead.py [--calls 300] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from _table import pct, print_table
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from quantcrew.config.settings import ClientSettings, load_settings
from quantcrew.crew.server_process import LocalServer
from quantcrew.ml_server.app import create_app, items_setting, max_items
from quantcrew.ml_server.handlers import UnexpectedErrorMiddleware
from quantcrew.ml_server.limits import BodySizeLimitMiddleware
from quantcrew.ml_server.metrics import Metrics, MetricsMiddleware
from quantcrew.ml_server.routing import model_response
from quantcrew.ml_server.schemas.cluster import ClusterFitRequest, ClusterPredictRequest, ClusterPredictResponse
from quantcrew.ml_server.security import APIKeyMiddleware
from quantcrew.ml_server.services.cluster import service
from quantcrew.tools.breaker import CircuitBreaker
from quantcrew.tools.calls import call, perform
from quantcrew.tools.client import MLClient, make_client
from quantcrew.tools.endpoints import CLUSTER_PREDICT
from quantcrew.tools.flow import drive

PATH = "/v1/cluster/predict"
COLUMNS = ["a", "b", "c", "d"]
ROW = [0.1, -0.2, 0.3, 0.05]
TARGET_MS = 1.5


def _fit_request() -> ClusterFitRequest:
    rng = np.random.default_rng(0)
    return ClusterFitRequest.model_validate({
        "data": {"columns": COLUMNS, "values": rng.normal(size=(200, len(COLUMNS))).round(4).tolist()},
        "method": "kmeans", "n_clusters": 3})


def _predict_request(model_id: str) -> ClusterPredictRequest:
    return ClusterPredictRequest.model_validate({"model_id": model_id, "data": {"columns": COLUMNS, "values": [ROW]}})


def _timed(fn: Callable[[], object], n: int) -> list[float]:
    """Milliseconds of each of ``n`` calls."""
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


class _AsgiCaller:
    """Calls an ASGI app in process with one request's bytes, on one event loop kept for all calls."""

    def __init__(self, app: ASGIApp, path: str, body: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        self.app, self.loop = app, asyncio.new_event_loop()
        self.scope: Scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"bench"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()), *headers],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2), "state": {}}
        self.body = body

    async def _one(self) -> int:
        delivered = False
        status = 0

        async def receive() -> Message:
            nonlocal delivered
            if delivered:
                await asyncio.Event().wait()  # a client that stays connected
            delivered = True
            return {"type": "http.request", "body": self.body, "more_body": False}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await self.app(dict(self.scope), receive, send)
        return status

    def __call__(self) -> None:
        status = self.loop.run_until_complete(self._one())
        if status != 200:
            raise RuntimeError(f"in-process app answered {status}")


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    """A no-op app: reads the body, answers 200 with two bytes."""
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


def _middleware_layers(app: FastAPI) -> dict[str, ASGIApp]:
    settings = app.state.settings
    return {
        "metrics": MetricsMiddleware(_ok, metrics=Metrics()),
        "api key (none set)": APIKeyMiddleware(_ok, key=None, protect_ops=True),
        "api key (checked)": APIKeyMiddleware(_ok, key=b"bench-key", protect_ops=True),
        "body limits": BodySizeLimitMiddleware(_ok, max_bytes=settings.server.max_body_bytes,
                                               max_items=max_items(settings), items_setting=items_setting(settings)),
        "unexpected errors": UnexpectedErrorMiddleware(_ok),
    }


def _mock_client(reply: bytes) -> httpx.Client:
    """An httpx client whose transport answers every request with ``reply`` at once (no network, no server)."""
    return httpx.Client(base_url="http://bench", transport=httpx.MockTransport(
        lambda _: httpx.Response(200, content=reply, headers={"content-type": "application/json"})))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per measurement and round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="qc-bench-tool-"))
    settings = load_settings(home=work / "in-process")
    app = create_app(settings)
    env = {"QUANTCREW_HOME": str(work / "server"), "QUANTCREW_SERVER__PRELOAD": "false"}
    with TestClient(app) as local, LocalServer(env=env, log_path=work / "server.log") as server:
        local_id = local.post("/v1/cluster/fit", content=_fit_request().model_dump_json(),
                              headers={"content-type": "application/json"}).json()["model"]["model_id"]
        client = make_client(ClientSettings(url=server.url))
        remote = _predict_request(client.cluster_fit(_fit_request()).model.model_id)
        request = _predict_request(local_id)
        registry = app.state.registry
        body = remote.model_dump_json().encode()
        local_body = request.model_dump_json().encode()
        raw = httpx.Client(base_url=server.url, headers={"content-type": "application/json"})
        reply = client.cluster_predict(remote)
        reply_bytes = reply.model_dump_json().encode()
        local_reply = service.predict(request, registry)
        if reply.labels != local_reply.labels:
            raise SystemExit(f"the server and the in-process model disagree: {reply.labels} vs {local_reply.labels}")
        mock_client = MLClient(_mock_client(reply_bytes), breaker=CircuitBreaker())
        mock_raw = _mock_client(reply_bytes)

        def tool_call(through: MLClient) -> Callable[[], object]:
            return lambda: drive(call(CLUSTER_PREDICT, remote), lambda step: perform(through, step))

        def raw_post(http: httpx.Client) -> Callable[[], object]:
            url = httpx.URL(str(http.base_url).rstrip("/") + PATH)  # absolute, parsed once: no URL joining per call

            def post() -> None:
                response = http.post(url, content=body, headers={"content-type": "application/json"})
                response.raise_for_status()
                _ = response.content
            return post

        # the end-to-end calls, interleaved call by call: they go through the same moments of load
        paired: dict[str, Callable[[], object]] = {
            "tool": tool_call(client),
            "service": lambda: service.predict(request, registry),
            "raw httpx": raw_post(raw),
            "server app": _AsgiCaller(app, PATH, local_body),
        }
        # the layers without network or server, timed in blocks
        alone: dict[str, Callable[[], object]] = {
            "tool, no network": tool_call(mock_client),
            "httpx, no network": raw_post(mock_raw),
            "request model_dump_json": lambda: remote.model_dump_json().encode(),
            "reply model_validate_json": lambda: ClusterPredictResponse.model_validate_json(reply_bytes),
            "server validation": lambda: ClusterPredictRequest.model_validate(orjson.loads(local_body)),
            "reply serialisation": lambda: model_response(local_reply),
        }
        key = ((b"authorization", b"Bearer bench-key"),)
        alone.update({name: _AsgiCaller(layer, PATH, local_body, key)
                      for name, layer in _middleware_layers(app).items()})
        alone["(no-op app alone)"] = _AsgiCaller(_ok, PATH, local_body)
        for fn in [*paired.values(), *alone.values()]:
            _timed(fn, 20)  # warm-up
        times: dict[str, list[float]] = {name: [] for name in [*paired, *alone]}
        load = os.getloadavg()[0]
        for _ in range(args.rounds):
            for _ in range(args.calls):
                for name, fn in paired.items():
                    times[name] += _timed(fn, 1)
            for name, fn in alone.items():
                times[name] += _timed(fn, args.calls)
        load = (load + os.getloadavg()[0]) / 2
        client.close()
        raw.close()

    med = {name: statistics.median(values) for name, values in times.items()}
    n = args.calls * args.rounds
    print(f"POST {PATH} (KMeans, 1 row), {n} sequential calls per row ({args.rounds} rounds, the four end-to-end "
          f"rows interleaved call by call), load average {load:.2f} on {os.cpu_count()} CPUs; ms")
    rows: list[list[Any]] = [[name, med[name], pct(times[name], 95), pct(times[name], 99)]
                             for name in ("tool", "service", "raw httpx", "server app")]
    overhead = med["tool"] - med["service"]
    rows.append(["overhead (tool - service)", overhead, pct(times["tool"], 95) - pct(times["service"], 95),
                 pct(times["tool"], 99) - pct(times["service"], 99)])
    print_table(["call", "median_ms", "p95_ms", "p99_ms"], rows)
    print(f"target: overhead <= {TARGET_MS} ms median: {'met' if overhead <= TARGET_MS else 'missed'}\n")

    noop = med["(no-op app alone)"]
    middleware = {name: max(0.0, med[name] - noop) for name in alone
                  if name in _MIDDLEWARE_NAMES}
    ours = sum(v for k, v in middleware.items() if k != "api key (checked)")  # the server runs with no key here
    server_framework = (med["server app"] - med["service"] - ours - med["server validation"]
                        - med["reply serialisation"])
    client_side = med["tool, no network"] - med["httpx, no network"]
    breakdown: list[list[Any]] = [
        ["client: request model_dump_json", med["request model_dump_json"]],
        ["client: reply model_validate_json", med["reply model_validate_json"]],
        ["client: tool flow, MLClient exchange (URL, breaker, retries, errors)",
         client_side - med["request model_dump_json"] - med["reply model_validate_json"]],
        ["httpx: building and sending a request (no network)", med["httpx, no network"]],
        ["transport: httpcore, loopback, uvicorn", med["raw httpx"] - med["httpx, no network"] - med["server app"]],
        ["server: our middleware (4 layers)", ours],
        ["server: request validation", med["server validation"]],
        ["server: routing, dependencies, thread hop", server_framework],
        ["server: reply serialisation", med["reply serialisation"]],
    ]
    attributed = sum(float(r[1]) for r in breakdown)
    breakdown.append(["unattributed (overhead - the rows above: noise, interaction)", overhead - attributed])
    print("where the overhead goes (medians; each row timed on its own, or the difference of two named ones)")
    print_table(["layer", "median_ms"], breakdown)
    print(f"\nour middleware, each around a no-op app (median ms over the no-op app alone, {noop * 1000:.0f} us)")
    print_table(["middleware", "median_ms"], [[k, v] for k, v in middleware.items()])


_MIDDLEWARE_NAMES = ("metrics", "api key (none set)", "api key (checked)", "body limits", "unexpected errors")


if __name__ == "__main__":
    main()
