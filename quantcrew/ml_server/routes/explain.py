"""Explain family: permutation importance, a global surrogate with its fidelity, local explanations."""

from __future__ import annotations

from fastapi import APIRouter

from quantcrew.ml_server.routing import ORJSONRoute

router = APIRouter(prefix="/explain", tags=["explain"], route_class=ORJSONRoute)
