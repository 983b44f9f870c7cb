"""Request plumbing: the route index sends every request where the router alone would."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from quantcrew.config.settings import load_settings
from quantcrew.ml_server.app import create_app
from quantcrew.ml_server.routing import RouteIndex


def _without_index(app: FastAPI) -> FastAPI:
    app.router.routes[:] = [r for r in app.router.routes if not isinstance(r, RouteIndex)]
    return app


def _index(app: FastAPI) -> RouteIndex:
    return next(r for r in app.router.routes if isinstance(r, RouteIndex))


def _requests(app: FastAPI) -> list[tuple[str, str]]:
    """Every documented route with its parameters filled in, each with a method it lacks, and some near misses."""
    out: list[tuple[str, str]] = []
    for path, operations in app.openapi()["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "x1", path)
        out += [(method.upper(), concrete) for method in operations]
        out.append(("PUT", concrete))  # no route takes PUT: 405 where the path exists
    # the docs and the schema, missing and nearly-right paths, trailing-slash redirects, a bandit named "select"
    out += [("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/nope"), ("GET", "/v1"), ("GET", "/v1/"),
            ("POST", "/v1/cluster"), ("GET", "/v1/cluster/predict/extra"), ("GET", "/v1/bandit/select"), ("GET", "/"),
            ("GET", "//v1/jobs"), ("GET", "/health/"), ("GET", "/v1/jobs/"), ("POST", "/v1/cluster/predict/")]
    return out


_STAMPED = {"/openapi.json", "/v1/monitor/alerts/evaluate"}
"""Replies that differ between two apps by more than routing: the schema (each app's), the time an evaluation ran."""


def test_every_request_reaches_the_route_it_reaches_without_the_index(tmp_path: Path) -> None:
    server = {"api_key": "k3y"}  # with a key: the routers' dependencies differ (the ops ones, the /v1 ones)
    indexed = create_app(load_settings(home=tmp_path / "a", server=server))
    plain = _without_index(create_app(load_settings(home=tmp_path / "b", server=server)))
    headers = {"Authorization": "Bearer k3y"}
    requests = _requests(indexed)
    assert len(requests) > 2 * 40  # the forty-odd operations, each two ways, and the near misses
    with TestClient(indexed) as a, TestClient(plain) as b:
        for method, path in requests:
            got = a.request(method, path, headers=headers, follow_redirects=False)
            want = b.request(method, path, headers=headers, follow_redirects=False)
            assert got.status_code == want.status_code, (method, path, got.text, want.text)
            assert got.headers.get("location") == want.headers.get("location"), (method, path)
            assert got.headers.get("allow") == want.headers.get("allow"), (method, path)
            if got.headers.get("content-type") == "application/json" and path not in _STAMPED:
                assert got.json() == want.json(), (method, path)


def test_each_request_is_tried_against_the_routers_of_its_path_only(tmp_path: Path) -> None:
    app = create_app(load_settings(home=tmp_path))
    index = _index(app)
    scope = {"type": "http", "method": "POST", "path": "/v1/cluster/predict", "root_path": "", "headers": []}
    assert len(index._candidates(scope)) == 1
    assert index._candidates({**scope, "path": "/v1/nothing/here"}) == []  # the routers after the index answer
    assert app.url_path_for("health") == "/health"  # reverse routing still finds the routes behind it


def _two_routers(order: list[str]) -> FastAPI:
    """Overlapping routes in two routers, and one router with a parameter where the index looks."""
    by_id, special, removal, anywhere = APIRouter(), APIRouter(), APIRouter(), APIRouter()

    @by_id.get("/v1/items/{item}")
    async def item(item: str) -> dict[str, Any]:
        return {"route": "by_id", "item": item}

    @special.get("/v1/items/special")
    async def item_special() -> dict[str, Any]:
        return {"route": "special"}

    @removal.delete("/v1/items/{item}")
    async def remove(item: str) -> dict[str, Any]:
        return {"route": "removal", "item": item}

    @anywhere.get("/{version}/other/thing")
    async def other(version: str) -> dict[str, Any]:
        return {"route": "anywhere", "version": version}

    routers = {"by_id": by_id, "special": special, "removal": removal, "anywhere": anywhere}
    app = FastAPI()
    index = RouteIndex()
    app.router.routes.append(index)
    for name in order:
        app.include_router(routers[name])
        index.add(app.router.routes[-1], [r.path for r in routers[name].routes if isinstance(r, APIRoute)])
    return app


@pytest.mark.parametrize("order", [["by_id", "special", "removal", "anywhere"],
                                   ["anywhere", "removal", "special", "by_id"]])
def test_the_first_router_that_matches_wins_as_without_the_index(order: list[str]) -> None:
    first = "by_id" if order.index("by_id") < order.index("special") else "special"
    allowed = "GET" if order.index("by_id") < order.index("removal") else "DELETE"
    with TestClient(_two_routers(order)) as tc:
        assert tc.get("/v1/items/special").json()["route"] == first
        assert tc.get("/v1/items/7").json() == {"route": "by_id", "item": "7"}
        assert tc.delete("/v1/items/7").json() == {"route": "removal", "item": "7"}
        assert tc.get("/v2/other/thing").json() == {"route": "anywhere", "version": "v2"}
        refused = tc.post("/v1/items/7")  # two routers hold the path, neither the method: the first one answers
        assert (refused.status_code, refused.headers["allow"]) == (405, allowed)
        assert tc.get("/v1/items").status_code == 404


def test_a_path_under_a_root_path_is_routed_as_without_the_index() -> None:
    app = _two_routers(["special", "by_id"])
    with TestClient(app, root_path="/api") as tc:
        assert tc.get("/api/v1/items/special").json() == {"route": "special"}
        assert tc.get("/api/v1/items/3").json() == {"route": "by_id", "item": "3"}


def test_a_body_that_is_not_utf8_gets_the_422_of_any_malformed_json(client: Any) -> None:
    reply = client.post("/v1/regime/label", content=b'{"data": "\xff\xfe"}',
                        headers={"content-type": "application/json"})
    assert reply.status_code == 422  # it was a 400 the OpenAPI document did not declare
    assert reply.json()["error"]["details"][0]["type"] == "json_invalid"
