"""MCP tool call round trip vs the REST call for the same request, against one real server.

One ``quantcrew-server`` child process (an API key, a fresh home, CPU) serves both ``/v1`` and ``/mcp``. Two
small requests, each sent the same way by every client, one call at a time:

* ``risk_var``: portfolio VaR / CVaR (historical and parametric normal, 95 % and 99 %) of a 60/40 book on
  250 daily returns of two assets: stateless;
* ``regime_predict``: a stored 2-state HMM (fitted once over REST before timing) labels the last 60 bars,
  without the per-bar probabilities: a registry model read from the cache, and a prediction-log write.

Clients, each with its own keep-alive connection:

* ``REST``: ``httpx.AsyncClient`` POSTs the JSON body and parses the JSON reply;
* ``MCP``: one initialised ``mcp.ClientSession`` over streamable HTTP calls the tool; the client parses the
  JSON-RPC reply (text and structured content);
* ``MCP, session per call``: connect, initialise, call, close for every call, as crewAI's ``MCPServerHTTP``
  tools do (a fresh client per tool invocation).

The calls are interleaved (REST, MCP, REST, MCP...) so that load from elsewhere falls on both alike; the
session-per-call variant runs after, on fewer calls. The tools declare no output schema: the SDK's client
would check every result against it, schema included (``jsonschema.validate``), and that check is timed on
its own, in this process, with the reply's schema, to show what it would add. The 1-minute load average is
printed with the table.

Run: ``.venv/bin/python bench/mcp_roundtrip.py [--calls 200] [--session-calls 40]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import orjson
from _table import pct, print_table
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from pydantic import TypeAdapter
from referencing import Registry

from quantcrew.crew.server_process import LocalServer
from quantcrew.data import load_sample, to_payload_dict
from quantcrew.ml_server.mcp_server.binding import bind

KEY = "bench-mcp-roundtrip-key-0123456789"
HEADERS = {"Authorization": f"Bearer {KEY}"}


def _requests(base: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Tool name -> (REST path, body), the regime model fitted first over REST."""
    rng = np.random.default_rng(42)
    returns = rng.standard_t(4, size=(250, 2)) * np.array([0.010, 0.014])
    var = {"data": {"columns": ["SPX", "NDX"], "values": returns.tolist()}, "weights": [0.6, 0.4],
           "levels": [0.95, 0.99], "methods": ["historical", "parametric_normal"]}
    bars = load_sample("SP500")
    fit = httpx.post(f"{base}/v1/regime/fit", headers=HEADERS, timeout=300,
                     json={"name": "bench-regime", "data": to_payload_dict(bars.tail(500)), "n_states": 2,
                           "include_probabilities": False})
    fit.raise_for_status()
    predict = {"model_id": fit.json()["model_id"], "data": to_payload_dict(bars.tail(60)), "symbol": "SP500",
               "include_probabilities": False}
    return {"risk_var": ("/v1/risk/var", var), "regime_predict": ("/v1/regime/predict", predict)}


async def _timed(call: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await call()
    return (time.perf_counter() - start) * 1e3


async def _interleaved(base: str, requests: dict[str, tuple[str, dict[str, Any]]], calls: int,
                       warmup: int) -> tuple[dict[tuple[str, str], list[float]], dict[str, Any]]:
    """REST and MCP calls, alternating; the last MCP result of each tool."""
    times: dict[tuple[str, str], list[float]] = {}
    results: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=base, headers=HEADERS, timeout=60) as rest, \
            httpx.AsyncClient(headers=HEADERS, timeout=60) as mcp_http, \
            streamable_http_client(f"{base}/mcp", http_client=mcp_http) as (read, write, _), \
            ClientSession(read, write) as session:
        await session.initialize()
        for name, (path, body) in requests.items():
            async def over_rest(path: str = path, body: dict[str, Any] = body) -> None:
                reply = await rest.post(path, content=orjson.dumps(body), headers={"Content-Type": "application/json"})
                reply.raise_for_status()
                reply.json()

            async def over_mcp(name: str = name, body: dict[str, Any] = body) -> None:
                result = await session.call_tool(name, body)
                if result.isError:
                    raise RuntimeError(f"{name}: {result.content}")
                results[name] = result.structuredContent

            clients = [("REST", over_rest), ("MCP", over_mcp)]
            for i in range(warmup + calls):
                for transport, call in clients if i % 2 else clients[::-1]:  # each goes first half the time
                    ms = await _timed(call)
                    if i >= warmup:
                        times.setdefault((name, transport), []).append(ms)
    return times, results


async def _session_per_call(base: str, requests: dict[str, tuple[str, dict[str, Any]]],
                            calls: int) -> dict[tuple[str, str], list[float]]:
    times: dict[tuple[str, str], list[float]] = {}
    for name, (_, body) in requests.items():
        async def once(name: str = name, body: dict[str, Any] = body) -> None:
            async with httpx.AsyncClient(headers=HEADERS, timeout=60) as http, \
                    streamable_http_client(f"{base}/mcp", http_client=http) as (read, write, _), \
                    ClientSession(read, write) as session:
                await session.initialize()
                if (await session.call_tool(name, body)).isError:
                    raise RuntimeError(name)

        await once()
        times[(name, "MCP, session per call")] = [await _timed(once) for _ in range(calls)]
    return times


def _schema_check_ms(results: dict[str, Any], requests: dict[str, tuple[str, dict[str, Any]]],
                     repeat: int = 100) -> dict[str, float]:
    """Median time the SDK's client would spend checking a result, were the reply's schema declared as the
    tool's output schema (it is not: this is why)."""
    out = {}
    for name, result in results.items():
        schema = TypeAdapter(bind("POST", requests[name][0]).route.response_model).json_schema(mode="serialization")
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            jsonschema.validate(result, schema, registry=Registry())  # as mcp.ClientSession does
            samples.append((time.perf_counter() - start) * 1e3)
        out[name] = statistics.median(samples)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="timed calls per request and transport")
    parser.add_argument("--session-calls", type=int, default=40, help="timed calls with a session per call")
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-mcp-") as home:
        env = {"QUANTCREW_HOME": home, "QUANTCREW_SERVER__API_KEY": KEY, "QUANTCREW_SERVER__DEVICE": "cpu",
               "QUANTCREW_SERVER__PRELOAD": "false", "QUANTCREW_SERVER__LOG_LEVEL": "warning"}
        server = LocalServer(env=env, log_path=Path(home) / "server.log").start()
        try:
            requests = _requests(server.url)
            times, results = asyncio.run(_interleaved(server.url, requests, args.calls, args.warmup))
            times |= asyncio.run(_session_per_call(server.url, requests, args.session_calls))
        finally:
            server.stop()
    checks = _schema_check_ms(results, requests)
    rows = []
    for name in requests:
        rest_median = statistics.median(times[(name, "REST")])
        for transport in ("REST", "MCP", "MCP, session per call"):
            samples = times[(name, transport)]
            median = statistics.median(samples)
            rows.append([name, transport, len(samples), median, pct(samples, 95), median / rest_median,
                         median - rest_median])
        rows.append([name, "(an output schema would add: client check)", 100, checks[name], "", "", ""])
    print_table(["request", "transport", "calls", "median ms", "p95 ms", "x REST", "+ms vs REST"], rows)
    print(f"\n1-minute load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
