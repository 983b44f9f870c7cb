"""Monitor routes: predictions."""

from __future__ import annotations

from fastapi import APIRouter

from quantcrew.ml_server.routing import ORJSONRoute

router = APIRouter(route_class=ORJSONRoute)
