"""rl routes (being written)."""

from __future__ import annotations

from fastapi import APIRouter

from quantcrew.ml_server.routing import ORJSONRoute

router = APIRouter(prefix="/rl", tags=["rl"], route_class=ORJSONRoute)
