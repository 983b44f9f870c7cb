"""Monitor family routes under ``/v1/monitor``: one module per concern, mounted here in one router.

* :mod:`.predictions`: the prediction log, outcomes and live quality per model version;
* :mod:`.drift`: drift of inputs and outputs against each model's training reference, data quality;
* :mod:`.alerts`: alerts fired by the rules, acknowledged and resolved.
"""

from __future__ import annotations

from fastapi import APIRouter

from quantcrew.ml_server.routes.monitor import alerts, drift, predictions
from quantcrew.ml_server.routing import ORJSONRoute

__all__ = ["router"]

router = APIRouter(prefix="/monitor", tags=["monitor"], route_class=ORJSONRoute)
for _part in (predictions, drift, alerts):
    router.include_router(_part.router)
