"""Tool results: a reply as structured content, and every refusal as the REST route's error body.

A tool that fails answers ``isError: true`` with the body the REST route would have sent with its 4xx
(``{"error": {"code", "message", "details"}}``), as text and as structured content, so that a person, an
LLM and a program read the same message naming the same field. Nothing raised by a tool reaches the MCP
layer, which would answer with the exception's bare text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from mcp.types import CallToolResult, TextContent
from pydantic import ValidationError

from quantcrew.ml_server.errors import MLServerError
from quantcrew.ml_server.handlers import domain_error_response, error_response

__all__ = ["domain_error_result", "reply_result", "unexpected_error_result", "validation_error_result"]

logger = logging.getLogger("quantcrew.ml_server")


def reply_result(body: bytes, *, wrapped: bool) -> CallToolResult:
    """A successful call: the REST reply's JSON as text and as structured content.

    Args:
        body: The reply as the REST route sends it.
        wrapped: The reply is a JSON array, carried as ``{"result": [...]}`` (structured content is an object).
    """
    reply = orjson.loads(body)
    if wrapped:
        reply = {"result": reply}
        body = orjson.dumps(reply)
    return CallToolResult(content=[TextContent(type="text", text=body.decode())], structuredContent=reply)


def _error_result(body: bytes) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=body.decode())], structuredContent=orjson.loads(body),
                          isError=True)


def domain_error_result(exc: MLServerError) -> CallToolResult:
    """A domain error (a 404, 409, 422... on the REST side) as the route's error body."""
    return _error_result(bytes(domain_error_response(exc).body))


def validation_error_result(exc: ValidationError, location: Callable[[str], str]) -> CallToolResult:
    """Arguments the input schema refuses, rendered as FastAPI's request validation is on the REST side.

    Args:
        exc: The refusal.
        location: Where an argument travels on the REST route (``body``, ``path`` or ``query``), which
            heads each error's ``loc`` there.
    """
    details: list[dict[str, Any]] = []
    for error in exc.errors():
        loc = list(error.get("loc", ()))
        head = location(str(loc[0])) if loc else "body"
        details.append({"loc": [head, *loc], "msg": error.get("msg", ""), "type": error.get("type", "")})
    first = details[0] if details else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return _error_result(bytes(error_response(422, "invalid_input", f"{where}: {first['msg']}{more}", details).body))


def unexpected_error_result(tool: str, exc: Exception) -> CallToolResult:
    """A bug: logged with its traceback, answered with the REST side's one 500 body (no internals)."""
    logger.error("unhandled error in MCP tool %s", tool, exc_info=exc)
    return _error_result(bytes(error_response(500, "internal_error",
                                              f"unexpected server error: {type(exc).__name__}").body))
