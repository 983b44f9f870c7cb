"""``/mcp`` on the app: the route, and the FastMCP session manager that runs inside the app's lifespan.

The route sits in the app's own router (not a mounted sub-application), so the app's middleware applies to it
as to ``/v1``: the API key is checked from the headers before the body is read, the body limits refuse an
oversized call with the one 413, and the metrics label its requests ``/mcp``.

The tools' input schemas take about half a second of CPU to generate, and the mcp SDK as long to import: a
start of the server does not wait for them. With ``server.preload`` the tools are built in the background once the
server is up; without it (tests), by the first MCP request. The session manager then runs in a task group
that the lifespan holds, so it stops with the app. A session manager runs once: each run of the lifespan
builds its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup, TaskStatus
from fastapi import FastAPI
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from quantcrew.config.settings import Settings
from quantcrew.ml_server.errors import ModelNotReadyError
from quantcrew.ml_server.handlers import domain_error_response
from quantcrew.ml_server.mcp_server.catalog import MCP_PATH

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

__all__ = ["McpEndpoint"]


class _McpRoute(Route):
    """A route that names itself in the scope it matches, as FastAPI's routes do, so that the metrics label
    its requests with its path when the app's route index is what matched them."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


class McpEndpoint:
    """The ASGI endpoint at ``/mcp``: hands each request to the session manager, started on first need.

    Args:
        app: The app whose state the tools use.
    """

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._settings: Settings = app.state.settings
        self._group: TaskGroup | None = None
        self._lock: anyio.Lock | None = None
        self._manager: StreamableHTTPSessionManager | None = None
        self.route: Route = _McpRoute(MCP_PATH, endpoint=self, name="mcp", include_in_schema=False)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """Hold the task group the session manager runs in for as long as the block runs (the app's lifespan,
        once its state is open); with ``server.preload``, start the manager now, in the background."""
        async with anyio.create_task_group() as group:
            self._group, self._lock = group, anyio.Lock()
            if self._settings.server.preload:
                group.start_soon(self._ready_manager)
            try:
                yield
            finally:
                self._group = self._lock = self._manager = None
                group.cancel_scope.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        manager = self._manager or await self._ready_manager()
        if manager is None:
            error = ModelNotReadyError("server is starting or stopping: the MCP endpoint is not running")
            await domain_error_response(error)(scope, receive, send)
            return
        await manager.handle_request(scope, receive, send)

    async def _ready_manager(self) -> StreamableHTTPSessionManager | None:
        """The running session manager, built and started if it is not yet; None outside the lifespan."""
        group, lock = self._group, self._lock
        if group is None or lock is None:
            return None
        async with lock:
            if self._manager is None:
                from quantcrew.ml_server.mcp_server.server import build_mcp, build_tools

                await anyio.to_thread.run_sync(build_tools)  # the schemas, once per process, off the event loop
                server = build_mcp(self._app)
                server.streamable_http_app()  # creates the server's session manager (its own app is not used)
                manager = server.session_manager
                await group.start(_run, manager)
                if self._group is group:  # the lifespan did not end meanwhile
                    self._manager = manager
            return self._manager


async def _run(manager: StreamableHTTPSessionManager, *, task_status: TaskStatus[None]) -> None:
    async with manager.run():
        task_status.started()
        await anyio.sleep_forever()
