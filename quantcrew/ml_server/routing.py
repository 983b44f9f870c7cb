"""Request and response plumbing shared by every router: orjson in, pydantic-core out.

FastAPI parses JSON bodies with the standard library; :class:`ORJSONRoute` swaps in orjson
(several times faster on the long float arrays this API carries) through FastAPI's documented
custom ``Request`` / ``APIRoute`` hook. Standard JSON has no NaN or Infinity, so orjson refuses
them; such a body is parsed again by the standard library, so that validation can name the
field holding the NaN instead of answering with a byte offset.

:func:`model_response` serialises a reply model with pydantic-core straight to bytes. Reply
models are validated when the service builds them (finite floats included), so FastAPI's
second validation pass (run in a worker thread for sync handlers) is skipped; the routes still
declare ``response_model`` so that OpenAPI documents every reply.

:class:`RouteIndex` sends a request only to the included routers that can match its path. FastAPI
matches included routers lazily: each request is tried against every route of every router before
the matching one, and the matching router's routes twice more, at several microseconds a route;
with the server's forty-odd routes that was the largest cost of a light request.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

from quantcrew.ml_server.schemas.common import ErrorBody

__all__ = ["ERROR_RESPONSES", "ORJSONRequest", "ORJSONRoute", "RouteIndex", "model_response"]


class ORJSONRequest(Request):
    """A request whose ``json()`` uses orjson, falling back to the standard library."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = orjson.loads(body)
            except orjson.JSONDecodeError:
                try:
                    self._json = json.loads(body)  # accepts NaN / Infinity, so the schema can name the field
                except UnicodeDecodeError as exc:  # a JSON error like any other: the one 422, not a bare 400
                    raise json.JSONDecodeError(f"the body is not UTF-8 ({exc.reason})", repr(body[:64]),
                                               exc.start) from exc
        return self._json


class ORJSONRoute(APIRoute):
    """An APIRoute that hands its endpoint an :class:`ORJSONRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            return await original(ORJSONRequest(request.scope, request.receive))

        return handler


def model_response(model: BaseModel, status_code: int = 200) -> Response:
    """A JSON response serialised once, by pydantic-core."""
    return Response(model.model_dump_json().encode(), status_code=status_code, media_type="application/json")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody}, 409: {"model": ErrorBody}, 413: {"model": ErrorBody}, 422: {"model": ErrorBody},
}
"""The error replies every model route documents in OpenAPI (one body shape for all)."""


_Key = tuple[str, ...]
_CHOSEN = "quantcrew.route_group"
"""Scope key under which :meth:`RouteIndex.matches` hands the matched group to :meth:`RouteIndex.handle`."""


def _key(path: str) -> _Key:
    """The first two segments of a path: ``/v1/cluster/predict`` -> ``("v1", "cluster")``."""
    return tuple(path.split("/", 3)[1:3])


def _template_key(path: str) -> _Key | None:
    """:func:`_key` of a route's path template, or None when a parameter sits in those segments."""
    key = _key(path)
    return None if any("{" in part for part in key) else key


class RouteIndex(BaseRoute):
    """A route placed before a router's route groups that tries only the groups able to match a request.

    Each group (what ``include_router`` added: it keeps its own matching, dependencies and
    handling) is registered with the path templates of its routes and indexed by their first two
    segments; a group with a parameter in those segments is tried for every request. The index
    returns what the first group to match fully returns (or the first partial match, as a
    router does), so a request reaches the route it would reach without the index, without
    trying the groups that cannot hold its path. The groups stay in the router after the index:
    OpenAPI documents them from there, and a request the index does not match (a 404, a path
    under a ``root_path``) is matched by them as before.
    """

    def __init__(self) -> None:
        self._groups: list[tuple[BaseRoute, frozenset[_Key] | None]] = []
        self._by_key: dict[_Key, list[BaseRoute]] = {}
        self._anywhere: list[BaseRoute] = []

    @property
    def groups(self) -> list[BaseRoute]:
        """The registered groups, in the order they are tried."""
        return [group for group, _ in self._groups]

    def add(self, group: BaseRoute, paths: Iterable[str]) -> None:
        """Register ``group``, which holds routes with these full path templates (after any prefix)."""
        keys = {_template_key(path) for path in paths}
        self._groups.append((group, None if None in keys else frozenset(k for k in keys if k is not None)))
        indexed = {key for _, keys_ in self._groups if keys_ is not None for key in keys_}
        self._by_key = {key: [g for g, ks in self._groups if ks is None or key in ks] for key in indexed}
        self._anywhere = [g for g, ks in self._groups if ks is None]

    def _candidates(self, scope: Scope) -> list[BaseRoute]:
        if scope.get("root_path"):
            return self.groups  # the routes match the path less the root path: no pruning here
        return self._by_key.get(_key(scope["path"]), self._anywhere)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        partial: tuple[BaseRoute, Scope] | None = None
        for group in self._candidates(scope):
            match, child_scope = group.matches(scope)
            if match is Match.FULL:
                return match, {**child_scope, _CHOSEN: group}
            if match is Match.PARTIAL and partial is None:
                partial = (group, child_scope)
        if partial is not None:
            return Match.PARTIAL, {**partial[1], _CHOSEN: partial[0]}
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        group: BaseRoute = scope.pop(_CHOSEN)
        await group.handle(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NoMatchFound(name, path_params)  # the groups after the index answer for their routes
