"""The FastMCP server of one app: every catalog tool over that app's state, stateless, answering in JSON."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from mcp.server.fastmcp import FastMCP
from mcp.server.fastmcp.tools import Tool
from mcp.server.transport_security import TransportSecuritySettings

from quantcrew import __version__
from quantcrew.config.settings import Settings
from quantcrew.ml_server.mcp_server.binding import bind
from quantcrew.ml_server.mcp_server.catalog import CATALOG, MCP_PATH
from quantcrew.ml_server.mcp_server.tool import RouteTool

__all__ = ["INSTRUCTIONS", "build_mcp", "build_tools"]

INSTRUCTIONS = (
    f"quantcrew ML server {__version__}: market regimes, risk (VaR, covariance), factor decomposition, "
    "clustering, anomalies, supervised models, RL policies, bandits choosing among agents, ensembles with "
    "uncertainty, execution plans, explanations, monitoring, the model registry and jobs. Each tool is the "
    "REST route named in its description: the same input (OHLCV bars as columns: timestamps, open, high, low, "
    "close) and the same reply, provenance included. Long work (RL, ensemble and walk-forward training) "
    "returns a job: poll it with jobs_get."
)


def build_tools() -> None:
    """Bind every catalog route now (their input schemas are generated once per process: about half a second)."""
    for entry in CATALOG:
        bind(entry.method, entry.path)


def build_mcp(app: FastAPI) -> FastMCP:
    """A FastMCP server whose tools run ``app``'s REST handlers on ``app``'s state.

    Stateless streamable HTTP with JSON replies: every POST is answered on its own, so any process serving
    the app can answer it and nothing is kept between calls. DNS-rebinding protection (a ``Host`` allow-list)
    is off: the server is reached under whatever name its network gives it, and the API key guards ``/mcp``
    as it guards ``/v1``.
    """
    settings: Settings = app.state.settings
    tools: list[Tool] = [RouteTool.of(entry, app) for entry in CATALOG]
    # FastMCP's constructor configures the root logger when it has no handler (logging.basicConfig): the
    # server's logging is uvicorn's (or stdio's, on stderr), so that is undone
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        server = FastMCP(
            name="quantcrew",
            instructions=INSTRUCTIONS,
            tools=tools,
            stateless_http=True,
            json_response=True,
            streamable_http_path=MCP_PATH,
            max_request_body_size=settings.server.max_body_bytes,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            log_level="WARNING",
        )
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    # serverInfo.version is this server's. Left unset (FastMCP takes no version), the SDK reads the mcp package's
    # version from its installed metadata for every stateless request: about 5 ms a call on two busy cores
    server._mcp_server.version = __version__
    return server
