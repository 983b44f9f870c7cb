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
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from quantcrew.ml_server.schemas.common import ErrorBody

__all__ = ["ERROR_RESPONSES", "ORJSONRequest", "ORJSONRoute", "model_response"]


class ORJSONRequest(Request):
    """A request whose ``json()`` uses orjson, falling back to the standard library."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = orjson.loads(body)
            except orjson.JSONDecodeError:
                self._json = json.loads(body)  # accepts NaN / Infinity, so the schema can name the field
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
