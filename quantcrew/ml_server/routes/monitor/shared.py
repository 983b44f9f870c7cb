"""The monitor family's one router (``/v1/monitor``), shared by its route modules.

Each module of :mod:`quantcrew.ml_server.routes.monitor` adds its routes to this router, so the
family mounts as one router of plain routes, as every other family does.
"""

from __future__ import annotations

from fastapi import APIRouter

from quantcrew.ml_server.routing import ORJSONRoute

__all__ = ["monitor_router"]

monitor_router = APIRouter(prefix="/monitor", tags=["monitor"], route_class=ORJSONRoute)
