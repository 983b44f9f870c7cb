"""jobs routes (being written)."""

from __future__ import annotations

from fastapi import APIRouter

from quantcrew.ml_server.routing import ORJSONRoute

router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=ORJSONRoute)
