"""Big bodies refused by a real uvicorn server: the client reads the refusal, the connection closes, and the
client's next call works on a new one. A small refused request keeps its connection."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from quantcrew.crew.server_process import LocalServer
from tests.support.servers import CHILD_SERVER_ENV

KEY = "flood-key"
MAX_ROWS = 1_000
MAX_BYTES = 4 * 2**20
JSON = {"content-type": "application/json"}


def _rows(n: int) -> bytes:
    return b'{"data":{"columns":["a"],"values":[' + b",".join([b"[1]"] * n) + b"]}}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    home = tmp_path_factory.mktemp("refused-bodies")
    env = {"QUANTCREW_HOME": str(home), **CHILD_SERVER_ENV, "QUANTCREW_SERVER__API_KEY": KEY,
           "QUANTCREW_SERVER__PROTECT_OPS": "false", "QUANTCREW_SERVER__MAX_ROWS": str(MAX_ROWS),
           "QUANTCREW_SERVER__MAX_COLUMNS": "64", "QUANTCREW_INFERENCE__MAX_REQUEST_BATCH": "64",
           "QUANTCREW_SERVER__MAX_BODY_BYTES": str(MAX_BYTES)}
    with LocalServer(env=env, log_path=home / "server.log") as running:
        yield running


def _client(server: LocalServer, *, key: bool = True) -> httpx.Client:
    headers = {"Authorization": f"Bearer {KEY}"} if key else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30.0)


def _next_call_works(http: httpx.Client) -> None:
    resp = http.get("/v1/models")
    assert resp.status_code == 200, resp.text


def test_a_body_over_the_row_limit_is_refused_mid_stream_and_its_connection_closed(server: LocalServer) -> None:
    body = _rows(800_000)  # 3 MiB: under the byte limit, 800 times the row limit
    assert len(body) < MAX_BYTES
    with _client(server) as http:
        resp = http.post("/v1/risk/var", content=body, headers=JSON)
        assert resp.status_code == 413, resp.text
        assert resp.headers["connection"] == "close"
        error = resp.json()["error"]
        assert error["code"] == "payload_too_large" and "QUANTCREW_SERVER__MAX_ROWS" in error["message"]
        assert error["details"]["received_bytes"] < len(body) // 4  # refused near the 1,000th row, not at the end
        _next_call_works(http)


def test_a_body_over_the_byte_limit_is_refused_from_its_length_and_its_connection_closed(
        server: LocalServer) -> None:
    with _client(server) as http:
        resp = http.post("/v1/risk/var", content=b" " * (MAX_BYTES + 1), headers=JSON)
        assert resp.status_code == 413, resp.text
        assert resp.headers["connection"] == "close"
        assert "QUANTCREW_SERVER__MAX_BODY_BYTES" in resp.json()["error"]["message"]
        _next_call_works(http)


def test_a_keyless_big_body_is_refused_401_from_its_headers_and_its_connection_closed(server: LocalServer) -> None:
    with _client(server, key=False) as http:
        resp = http.post("/v1/risk/var", content=_rows(800_000), headers=JSON)
        assert resp.status_code == 401, resp.text
        assert resp.headers["connection"] == "close" and resp.headers["www-authenticate"] == "Bearer"
        assert resp.json()["error"]["message"].startswith("missing API key")
        assert http.get("/health").status_code == 200


def test_a_refused_request_read_to_its_end_keeps_its_connection(server: LocalServer) -> None:
    with _client(server, key=False) as http:
        assert http.get("/v1/models").status_code == 401  # no body: nothing left unread
    with _client(server) as http:
        small = http.post("/v1/risk/var", content=b'{"data": {"columns": ["a"], "values": "x"}}', headers=JSON)
        assert small.status_code == 422, small.text
        over = http.post("/v1/risk/var", content=_rows(MAX_ROWS + 5), headers=JSON)  # all of it in one read
        for resp in (small, over):
            assert "close" not in resp.headers.get("connection", "")
        _next_call_works(http)
