"""The server's families as MCP tools: over streamable HTTP at ``/mcp`` on the app, or over stdio.

Each tool is one REST route (:mod:`~quantcrew.ml_server.mcp_server.catalog`): it takes the route's request
schema, runs the route's own handler on the app's state (:mod:`~quantcrew.ml_server.mcp_server.binding`)
and returns the route's reply, provenance included, as structured content; a refusal is a tool error
carrying the REST error body (:mod:`~quantcrew.ml_server.mcp_server.errors`).

* :class:`~quantcrew.ml_server.mcp_server.http.McpEndpoint`: the ``/mcp`` route that ``create_app`` adds when
  ``server.mcp`` is on, and the session manager its lifespan runs.
* :func:`~quantcrew.ml_server.mcp_server.server.build_mcp`: the FastMCP server of one app (it imports the mcp
  SDK, so this package's root does not).
* :func:`~quantcrew.ml_server.mcp_server.stdio.serve_stdio`: ``quantcrew-server --mcp-stdio``.
"""

from __future__ import annotations

from quantcrew.ml_server.mcp_server.catalog import CATALOG, MCP_PATH, ToolEntry
from quantcrew.ml_server.mcp_server.http import McpEndpoint

__all__ = ["CATALOG", "MCP_PATH", "McpEndpoint", "ToolEntry"]
