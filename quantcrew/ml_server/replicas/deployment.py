"""The Serve deployment: one replica = one process serving the app ``create_app`` builds.

A replica, as it starts, caps native compute threads, takes the home's lock *shared* (replicas
of one deployment share a home; an exclusive server on it refuses them, and they it), and
starts the model-code preload when the settings ask for it; Serve then builds the app
(:meth:`ServerReplica.__serve_build_asgi_app__`) and runs its lifespan in the replica, so each
replica opens the registry, the stores and the job manager as a plain server does. When Serve
stops the replica, the lifespan's shutdown runs first, then the lock is released.

Every answer carries ``X-Quantcrew-Replica``, the Serve replica that gave it (its id in
``serve status`` and the replica's logs): which replica answered is otherwise invisible behind
Serve's proxy.

This module imports Ray: only ``quantcrew-server --ray`` and ``serve run`` load it.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.deployment import Application
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from quantcrew.config.server_lock import hold_home
from quantcrew.config.settings import Settings
from quantcrew.ml_server.app import create_app
from quantcrew.ml_server.replicas.options import deployment_options
from quantcrew.ml_server.threads import limit_compute_threads

__all__ = ["REPLICA_HEADER", "ReplicaHeaderMiddleware", "ServerReplica", "bind"]

REPLICA_HEADER = "x-quantcrew-replica"
"""The response header naming the replica that answered."""


class ReplicaHeaderMiddleware:
    """Adds :data:`REPLICA_HEADER` to every HTTP answer (pure ASGI: the body streams through untouched)."""

    def __init__(self, app: ASGIApp, replica: str) -> None:
        self.app = app
        self._header = (REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self._header]
            await send(message)

        await self.app(scope, receive, tagged)


def _replica_id() -> str:
    """This replica's Serve id (the process id outside a replica)."""
    try:
        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # noqa: BLE001 - not inside a replica: name the process instead
        return f"pid-{os.getpid()}"


@serve.ingress()
class ServerReplica:
    """One replica of the ML server: holds the home shared while it lives, serves the app."""

    def __init__(self, settings: Settings, url: str | None) -> None:
        limit_compute_threads(settings.server.compute_threads)  # before any model code loads its libraries
        self._settings = settings
        self._replica = _replica_id()
        self._home = ExitStack()
        # the lock marks this process as one of the home's servers; a refused lock fails the replica's start
        # and Serve reports the HomeInUseError, naming the exclusive server that holds the home
        self._home.enter_context(hold_home(settings.home, url, shared=True))
        if settings.server.preload:
            from quantcrew.ml_server.preload import preload

            preload()

    def __serve_build_asgi_app__(self) -> FastAPI:  # noqa: PLW3201 - Serve's hook for a late-bound app
        """The app Serve serves from this replica (Serve runs its lifespan here)."""
        app = create_app(self._settings)
        app.add_middleware(ReplicaHeaderMiddleware, replica=self._replica)
        return app

    def __del__(self) -> None:
        """Serve stops the replica: its lifespan has shut down; release the home."""
        home = getattr(self, "_home", None)
        if home is not None:
            home.close()


def bind(settings: Settings, url: str | None, *, cluster_gpus: float) -> Application:
    """The application to deploy: :class:`ServerReplica` with the options the settings give.

    Args:
        settings: The settings every replica serves with (pickled to each one).
        url: Where the proxy listens (written in the home's lock), None if not known.
        cluster_gpus: GPUs of the Ray cluster (Ray's resource view), shared out when ``ray.num_gpus`` is unset.

    Raises:
        OptionsError: the ``ray.*`` settings do not go together.
    """
    options: dict[str, Any] = deployment_options(settings, cluster_gpus)
    app: Application = serve.deployment(**options)(ServerReplica).bind(settings, url)
    return app
