"""Body limits at the ASGI edge: JSON entries counted while the body streams in, refused before parsing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcrew.config.settings import load_settings
from quantcrew.crew.server_process import LocalServer
from quantcrew.ml_server.app import create_app, items_setting, max_items
from quantcrew.ml_server.errors import InvalidInputError, PayloadTooLargeError
from quantcrew.ml_server.limits import COLLAPSE_PASSES, MAX_DEPTH, BodySizeLimitMiddleware, JsonItemCounter
from tests.support.servers import CHILD_SERVER_ENV

# strings full of the characters the counter must not mistake for structure
_TRICKY = st.text(alphabet=st.sampled_from(list('ab",[]{}\\:') + ["\n", "\u00e9"]), max_size=6)
_JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.integers() | _TRICKY,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(_TRICKY, inner, max_size=5),
    max_leaves=25,
)


def _most_entries(value: Any) -> int:
    if isinstance(value, list):
        return max([len(value), *(_most_entries(v) for v in value)])
    if isinstance(value, dict):
        return max([len(value), *(_most_entries(v) for v in value.values())])
    return 0


def _feed(counter: JsonItemCounter, body: bytes, cuts: list[int]) -> bool:
    """Whether the counter refuses ``body`` delivered in the pieces ``cuts`` make."""
    bounds = [0, *sorted(c % (len(body) + 1) for c in cuts), len(body)]
    try:
        for start, end in zip(bounds, bounds[1:], strict=False):
            counter.feed(body[start:end])
    except PayloadTooLargeError:
        return True
    return False


@settings(max_examples=120, deadline=None)
@given(doc=_JSON, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
       slack=st.integers(min_value=-2, max_value=1), compact=st.booleans(), ascii_only=st.booleans())
def test_counter_refuses_exactly_the_bodies_with_a_container_over_the_limit(
        doc: Any, cuts: list[int], slack: int, compact: bool, ascii_only: bool) -> None:
    most = _most_entries(doc)
    limit = max(1, most + slack)
    body = json.dumps(doc, separators=(",", ":") if compact else None, ensure_ascii=ascii_only).encode()
    assert _feed(JsonItemCounter(limit), body, cuts) == (most > limit)


@settings(max_examples=200, deadline=None)
@given(doc=_JSON, limit=st.integers(min_value=1, max_value=400), depth=st.integers(min_value=1, max_value=12),
       nest=st.integers(min_value=0, max_value=14))
def test_a_body_the_counter_may_skip_is_one_it_would_pass(doc: Any, limit: int, depth: int, nest: int) -> None:
    body = (b"[" * nest) + json.dumps(doc).encode() + (b"]" * nest)
    if JsonItemCounter(limit, max_depth=depth).cannot_refuse(body):
        JsonItemCounter(limit, max_depth=depth).feed(body)  # raises if the shortcut were wrong


def test_counter_skips_only_short_bodies_with_few_brackets() -> None:
    counter = JsonItemCounter(100, max_depth=4)
    assert counter.cannot_refuse(b'{"a":[[1,2],[3,4]]}')
    assert not counter.cannot_refuse(b"[" + b"1," * 60 + b"1]")  # over 100 bytes: it might hold 100 entries
    assert not counter.cannot_refuse(b"[[[[[1]]]]]")  # five brackets may nest five deep
    counter.feed(b"[")
    assert not counter.cannot_refuse(b"1]")  # only a whole body: not one after a part of it


def test_counter_stops_reading_a_flood_of_one_value_rows_at_the_limit() -> None:
    rows = 1_000_000
    body = b'{"columns":["a"],"values":[' + b",".join([b"[1]"] * rows) + b"]}"
    counter = JsonItemCounter(10_000)
    with pytest.raises(PayloadTooLargeError, match="more than 10000 entries") as caught:
        for start in range(0, len(body), 65_536):
            counter.feed(body[start:start + 65_536])
    assert caught.value.details["limit_items"] == 10_000
    assert counter.received < 20 * 10_000  # refused after the first ~10,000 rows, not the whole body


def test_counter_refuses_nesting_deeper_than_the_limit() -> None:
    JsonItemCounter(10).feed(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)
    # the innermost levels of one chunk are collapsed before the nesting is counted: at most a few slip past
    deeper = MAX_DEPTH + 2 * COLLAPSE_PASSES + 1
    with pytest.raises(InvalidInputError, match="deeper than"):
        JsonItemCounter(10).feed(b"[" * deeper + b"]" * deeper)


def test_item_limit_is_the_largest_of_the_row_column_and_batch_limits(tmp_path: Any) -> None:
    s = load_settings(home=tmp_path, server={"max_rows": 50, "max_columns": 80}, inference={"max_request_batch": 60})
    assert (max_items(s), items_setting(s)) == (80, "QUANTCREW_SERVER__MAX_COLUMNS")


def test_too_many_rows_are_refused_with_413_naming_the_setting(tmp_path: Any) -> None:
    settings_ = load_settings(home=tmp_path, server={"max_rows": 1_000, "max_columns": 8},
                              inference={"max_request_batch": 16})
    body = json.dumps({"data": {"columns": ["a"], "values": [[0.01]] * 5_000}})
    with TestClient(create_app(settings_)) as tc:
        resp = tc.post("/v1/risk/var", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 413, resp.text
    error = resp.json()["error"]
    assert error["code"] == "payload_too_large"
    assert "QUANTCREW_SERVER__MAX_ROWS" in error["message"] and error["details"]["limit_items"] == 1_000


def test_deep_nesting_is_refused_with_422(client: TestClient) -> None:
    body = b'{"data":' + b"[" * 500 + b"]" * 500 + b"}"
    resp = client.post("/v1/regime/label", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 422, resp.text
    assert "nests deeper" in resp.json()["error"]["message"]


def test_streamed_body_is_refused_without_being_read_to_the_end() -> None:
    """A chunked upload (no Content-Length) stops being read at the offending entry."""
    reached_app: list[str] = []
    delivered = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            reached_app.append(message["type"])
            if not message.get("more_body"):
                return

    chunk = b"[1]," * 10_000
    chunks = [b'{"values":['] + [chunk] * 100

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        delivered += 1
        return {"type": "http.request", "body": chunks[delivered - 1], "more_body": delivered < len(chunks)}

    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    middleware = BodySizeLimitMiddleware(app, max_bytes=1 << 30, max_items=25_000)
    scope = {"type": "http", "method": "POST", "path": "/v1/x", "headers": [(b"content-type", b"application/json")]}
    asyncio.run(middleware(scope, receive, send))
    assert sent[0]["status"] == 413
    assert delivered == 4  # the third 10,000-row chunk pushed the array past 25,000 entries; nothing after it
    assert reached_app == ["http.request"] * 3 + ["http.disconnect"]  # the chunks before it, then a disconnect


def test_non_json_bodies_are_not_counted() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"[" + b"1," * 100 + b"1]", "more_body": False}

    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": [(b"content-type", b"text/csv")]}
    asyncio.run(BodySizeLimitMiddleware(app, max_bytes=10_000, max_items=10)(scope, receive, send))
    assert sent[0]["status"] == 204


def test_real_server_refuses_many_rows_and_keyless_bodies_and_stays_healthy(tmp_path: Path) -> None:
    """Through uvicorn: the refusal reaches the client although the rest of the body is still on the wire."""
    env = {"QUANTCREW_HOME": str(tmp_path), **CHILD_SERVER_ENV, "QUANTCREW_SERVER__API_KEY": "s3cret",
           "QUANTCREW_SERVER__MAX_ROWS": "1000", "QUANTCREW_SERVER__PROTECT_OPS": "false"}
    body = b'{"data":{"columns":["a"],"values":[' + b",".join([b"[1]"] * 500_000) + b"]}}"  # 2 MB
    json_type = {"content-type": "application/json"}
    with LocalServer(env=env) as server, httpx.Client(base_url=server.url, timeout=30.0) as http:
        keyless = http.post("/v1/risk/var", content=body, headers=json_type)
        too_many = http.post("/v1/risk/var", content=body, headers={**json_type, "authorization": "Bearer s3cret"})
        health = http.get("/health")
    assert keyless.status_code == 401 and keyless.json()["error"]["code"] == "unauthorized"
    assert too_many.status_code == 413 and too_many.json()["error"]["details"]["limit_items"] == 1000
    assert too_many.json()["error"]["details"]["received_bytes"] < 100_000  # read only until the limit was passed
    assert health.status_code == 200
