"""One MCP tool that is one REST route: the route's input schema in, the route's reply (or its 4xx body) out.

:class:`RouteTool` is a FastMCP ``Tool`` whose ``run`` validates the arguments with the route's own request
model and calls the route's handler (:mod:`quantcrew.ml_server.mcp_server.binding`), instead of FastMCP's
wrapping of a Python function's signature: the input schema a client lists is the REST schema itself,
whole-model validators included, and a refusal names the field as the REST 422 does.
"""

from __future__ import annotations

import inspect
import json
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from mcp.server.fastmcp.tools import Tool
from mcp.server.fastmcp.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import BaseModel, PrivateAttr, ValidationError

from quantcrew.ml_server.errors import MLServerError
from quantcrew.ml_server.mcp_server.binding import RouteBinding, bind
from quantcrew.ml_server.mcp_server.catalog import ToolEntry
from quantcrew.ml_server.mcp_server.errors import (
    domain_error_result,
    reply_result,
    unexpected_error_result,
    validation_error_result,
)

if TYPE_CHECKING:
    from mcp.server.fastmcp import Context

__all__ = ["RouteTool", "app_request"]


def app_request(app: FastAPI) -> Request:
    """A request that carries only ``app``: what the server's dependency getters read (``request.app.state``)."""
    return Request({"type": "http", "app": app, "method": "POST", "path": "/mcp", "headers": []})


class RouteTool(Tool):
    """An MCP tool that runs one REST route's handler on one app's state.

    Build it with :meth:`of`; FastMCP lists it (name, description, input and output schemas, hints) and
    calls :meth:`run`, which always returns a ``CallToolResult``: the reply, or ``isError`` with the REST
    error body.
    """

    _binding: RouteBinding = PrivateAttr()
    _request: Request = PrivateAttr()

    @classmethod
    def of(cls, entry: ToolEntry, app: FastAPI) -> RouteTool:
        """The tool ``entry`` names, over ``app``'s state.

        Raises:
            LookupError: the entry names no REST route.
            TypeError: the route's handler takes what no tool can supply.
        """
        binding = bind(entry.method, entry.path)
        doc = inspect.getdoc(binding.route.endpoint) or binding.route.summary or entry.name
        tool = cls(
            fn=binding.call,
            name=entry.name,
            title=entry.name.replace("_", " ").capitalize(),
            description=f"{doc}\n\nThe MCP form of {binding.rest}: the same input, and its reply "
                        f"({binding.reply_name}) as structured content.",
            parameters=binding.input_schema,
            # FastMCP's wrapping of a function is not used (run is this class's own), and no output schema is
            # declared: the Python SDK's client re-checks the whole schema and the result against it on every
            # call, which took 150-230 ms for these schemas against a 30 ms REST call (bench/mcp_roundtrip.py).
            # The reply's schema is the REST route's, in /openapi.json.
            fn_metadata=FuncMetadata(arg_model=ArgModelBase),
            is_async=True,
            context_kwarg=None,
            annotations=ToolAnnotations(readOnlyHint=entry.read_only, destructiveHint=entry.destructive,
                                        openWorldHint=False),
        )
        tool._binding = binding
        tool._request = app_request(app)
        return tool

    async def run(self, arguments: dict[str, Any], context: Context[Any, Any, Any] | None = None,
                  convert_result: bool = False) -> CallToolResult:
        """Validate ``arguments`` with the route's input model and run its handler.

        Args:
            arguments: The tool call's arguments (the REST body, or its path and query parameters).
            context: FastMCP's request context (unused: the app's state is all the handler needs).
            convert_result: Unused: the result is always a ``CallToolResult``.
        """
        binding = self._binding
        try:
            parsed = binding.input_model.model_validate(_parse_json_strings(binding.input_model, arguments))
        except ValidationError as exc:
            return validation_error_result(exc, binding.location)
        try:
            body = await binding.call(self._request, parsed)
        except MLServerError as exc:
            return domain_error_result(exc)
        except Exception as exc:  # a bug: the REST side answers its one 500 body; so does the tool
            return unexpected_error_result(self.name, exc)
        return reply_result(body, wrapped=binding.wrapped)


def _parse_json_strings(model: type[BaseModel], arguments: dict[str, Any]) -> dict[str, Any]:
    """Arguments with a JSON object or array sent as a string (some desktop clients send nested values so)
    parsed, where the field does not take a string; as FastMCP does for the tools it wraps."""
    parsed = dict(arguments)
    for name, value in arguments.items():
        field = model.model_fields.get(name)
        if field is None or field.annotation is str or not isinstance(value, str):
            continue
        if value.lstrip()[:1] in ("{", "["):
            try:
                loaded = json.loads(value)
            except json.JSONDecodeError:
                continue  # left as it is: validation names the field
            if isinstance(loaded, dict | list):
                parsed[name] = loaded
    return parsed
