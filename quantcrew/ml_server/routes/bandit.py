"""bandit routes (being written)."""

from __future__ import annotations

from fastapi import APIRouter

from quantcrew.ml_server.routing import ORJSONRoute

router = APIRouter(prefix="/bandit", tags=["bandit"], route_class=ORJSONRoute)
