"""The one map from exceptions to HTTP statuses and the one error body.

An unexpected error answers a JSON 500 and leaves the connection open for the client's next
request: it is caught inside the application (:class:`UnexpectedErrorMiddleware`), never left to
reach the server, which closes a connection whose application raised after replying.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from quantcrew.ml_server.errors import MLServerError

__all__ = ["UnexpectedErrorMiddleware", "body_pending", "domain_error_response", "error_response",
           "install_error_handlers", "with_location"]

logger = logging.getLogger("quantcrew.ml_server")

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
               413: "payload_too_large", 415: "unsupported_media_type"}


def error_response(status: int, code: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> Response:
    """Serialise ``{"error": {...}}`` with orjson."""
    body = orjson.dumps({"error": {"code": code, "message": message, "details": details}},
                        option=orjson.OPT_SERIALIZE_NUMPY, default=str)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


_HTTP_LOCATIONS = frozenset({"body", "path", "query", "header", "cookie"})


def with_location(details: Any) -> Any:
    """Services name fields of the request body (``["data", "close"]``); the wire names them as
    FastAPI's validation does (``["body", "data", "close"]``). Locations that already name an
    HTTP part (a path parameter, say) are kept."""
    if not isinstance(details, list):
        return details
    out = []
    for item in details:
        if isinstance(item, dict) and isinstance(item.get("loc"), list | tuple):
            loc = list(item["loc"])
            if not loc or loc[0] not in _HTTP_LOCATIONS:
                loc.insert(0, "body")
            item = {**item, "loc": loc}
        out.append(item)
    return out


def domain_error_response(exc: MLServerError, *, close: bool = False) -> Response:
    """The one rendering of a domain error: its status, code, message and located details.

    ``close``: the request's body is refused before it was read to the end; the reply says
    ``Connection: close`` and the server closes the connection after it, instead of reading and
    throwing away the rest of the body (what a refused 15 MiB flood would otherwise cost the
    event loop). The client is told, so its next request opens a new connection.
    """
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else {}
    if close:
        headers["Connection"] = "close"
    return error_response(exc.status_code, exc.code, exc.message, with_location(exc.details), headers or None)


def body_pending(scope: Scope) -> bool:
    """Whether the request announces a body (a Content-Length above 0, or a chunked one) not read yet."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
        if name == b"transfer-encoding":
            return b"chunked" in value.lower()
    return False


async def _domain_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, MLServerError)
    return domain_error_response(exc)


def _loc_str(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc if p != "body") or "body"


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
               for e in exc.errors()]
    first = details[0] if details else {"loc": [], "msg": "invalid request"}
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    message = f"{_loc_str(first['loc'])}: {first['msg']}{more}"
    return error_response(422, "invalid_input", message, details)


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), None, getattr(exc, "headers", None))


def _internal_error(exc: BaseException) -> Response:
    logger.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", f"unexpected server error: {type(exc).__name__}")


async def _unexpected(_: Request, exc: Exception) -> Response:
    # Reached only by an error raised in a middleware outside UnexpectedErrorMiddleware: Starlette
    # then re-raises after this reply and the server drops the connection.
    return _internal_error(exc)


class UnexpectedErrorMiddleware:
    """Answers any exception a route lets escape with the one 500 body, and does not re-raise it.

    Starlette's handler for ``Exception`` replies and then re-raises (so test clients can see the
    error); the server, seeing an application fail after its reply began, closes the connection
    without a ``Connection: close``, and the client's next request on it fails. Caught here, the
    error ends as an ordinary response and the connection stays usable. An error after the reply
    started cannot be answered and is re-raised.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as exc:
            if started:
                raise
            await _internal_error(exc)(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Register the map: domain errors, request validation, HTTP errors, anything else.

    Call before adding other middleware, so :class:`UnexpectedErrorMiddleware` sits innermost,
    right outside the routes, and every other middleware sees its 500 as a normal response.
    """
    app.add_exception_handler(MLServerError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(UnexpectedErrorMiddleware)
