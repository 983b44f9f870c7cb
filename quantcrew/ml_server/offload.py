"""Where a predict on a stored model runs: on the event loop when it is light, else in a worker thread.

FastAPI runs a ``def`` route in a worker thread. For a light predict (one row through a fitted
scikit-learn pipeline, about 0.1 ms of work) the hop costs more than the work once many clients
are in flight: each request then hands the GIL between the event loop and forty worker threads
several times. Measured on the light path at 64 concurrent clients (``bench/light_throughput.py``,
2 cores): 1.4 ms of CPU per request through a thread against 1.0 ms on the loop.

A predict runs on the loop only when nothing in it can wait: the answering model is known without a
statement (pinned by id, or a name whose routes the deployment store has kept since the last write:
:meth:`~quantcrew.ml_server.services.deployment.DeploymentStore.peek`; a name with a shadow version
writes the shadow log, so it never qualifies), that model is already in the registry's cache (one
not cached is read from disk and rebuilt), and the input is small. Everything else, fits included,
keeps the worker thread, so a long computation never stalls the loop that answers ``/health``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from starlette.concurrency import run_in_threadpool

from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.services.deployment import DeploymentStore
from quantcrew.ml_server.services.serving import Named, request_key

__all__ = ["LIGHT_ROWS", "is_light", "run"]

P = ParamSpec("P")
T = TypeVar("T")

LIGHT_ROWS = 256
"""Most rows a scikit-learn predict takes on the loop. Measured for 256 rows of 10 features, one
thread: gradient boosting 0.3 ms, a 100-tree random forest 4.8 ms, an isolation forest 6.2 ms."""


def is_light(registry: ModelRegistry, deployments: DeploymentStore | None, req: Named, rows: int, *,
             max_rows: int = LIGHT_ROWS) -> bool:
    """Whether a predict of ``rows`` rows for ``req`` (pinned or by name) may run on the event loop.

    Args:
        registry: The model registry (its cache is asked, nothing is read).
        deployments: The deployment store (its kept routes are asked, nothing is read).
        req: The request: its ``model_id``, or its ``name`` and sticky key.
        rows: The rows to predict.
        max_rows: The family's bound (a predict costs more per row in some families than others).
    """
    if rows > max_rows:
        return False
    model_id = req.model_id
    if model_id is None:
        route = None if deployments is None or not req.name else deployments.peek(req.name, request_key(req))
        if route is None:
            return False
        model_id = route.primary.model_id
    return registry.is_cached(model_id)


async def run(inline: bool, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` on the loop when ``inline``, else in a worker thread."""
    if inline:
        return fn(*args, **kwargs)
    return await run_in_threadpool(fn, *args, **kwargs)
