"""Monitor family routes under ``/v1/monitor``: one module per concern, all on the family's one router.

* :mod:`.predictions`: the prediction log, outcomes and live quality per model version;
* :mod:`.drift`: drift of inputs and outputs against each model's training reference, data quality;
* :mod:`.alerts`: alerts fired by the rules, acknowledged and resolved; events reported by clients.
"""

from __future__ import annotations

from quantcrew.ml_server.routes.monitor import alerts, drift, predictions
from quantcrew.ml_server.routes.monitor.shared import monitor_router

__all__ = ["router"]

router = monitor_router
"""The family's router: the routes of :mod:`.predictions`, :mod:`.drift` and :mod:`.alerts`, in that order."""
_ROUTE_MODULES = (predictions, drift, alerts)  # imported for their routes
