"""Serving a predict request by the deployment stages of a model name, for every stateful family.

A request gives either a pinned ``model_id`` (answered by that version, as always) or a deployment
``name`` (see :class:`~quantcrew.ml_server.schemas.serving.ServedRequest`). With a name,
:meth:`~quantcrew.ml_server.services.deployment.DeploymentStore.route` picks the answering version
from the sticky bucket of the request key (the request's ``request_key``, else its symbol, else the
name), and every shadow version of the name runs on the same input: its answer goes to the
prediction log with ``shadow=True`` and to the deployment store's shadow log, never to the client.
A shadow that fails (its artifact gone, columns it was not fitted on) is skipped with a warning: it
never fails the request it watches.

A family's verb hands :func:`serve` one function, ``answer(model_id, log)``, that loads the version,
answers and records the answer on ``log`` (the prediction log, or its shadow view); :func:`serve`
resolves, answers, runs the shadows and fills the reply's ``served_by``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from quantcrew.ml_server.errors import InvalidInputError, MLServerError
from quantcrew.ml_server.schemas.serving import ServedBy, ServedReply
from quantcrew.ml_server.services.deployment import Deployment, DeploymentStore
from quantcrew.ml_server.services.monitor.predictions import PredictionLog

__all__ = ["Named", "Served", "ShadowView", "request_key", "resolve", "serve"]

logger = logging.getLogger(__name__)

Reply = TypeVar("Reply", bound=ServedReply)


class Named(Protocol):
    """A request that names its model: a pinned ``model_id``, or a deployment ``name`` and sticky key."""

    model_id: str | None
    name: str | None
    request_key: str | None


@dataclass(frozen=True)
class Served:
    """The version that answers one request, and the shadows that also run.

    Attributes:
        model_id: The answering version.
        served_by: Why it answers (None when the request pinned ``model_id``).
        shadows: Shadow versions of the name (none when pinned).
        request_key: The sticky key the route used ('' when pinned).
    """

    model_id: str
    served_by: ServedBy | None
    shadows: list[Deployment]
    request_key: str


def request_key(req: Named) -> str:
    """The sticky key of a request: its ``request_key``, else its symbol, else the model name."""
    return str(req.request_key or getattr(req, "symbol", None) or req.name or "")


def resolve(req: Named, deployments: DeploymentStore | None) -> Served:
    """The pinned version, or the version the deployment stages of ``req.name`` route the request key to.

    Raises:
        NotFoundError: the name has no full, canary or gradual version (404 naming it).
        InvalidInputError: a name with no deployment store to route it (a library call without one).
    """
    if req.model_id is not None:
        return Served(req.model_id, None, [], "")
    name = req.name or ""
    if deployments is None:
        raise InvalidInputError(f"model '{name}' is asked for by name, and no deployment store routes names here",
                                details=[{"loc": ["name"], "msg": "give model_id"}])
    key = request_key(req)
    route = deployments.peek(name, key) or deployments.route(name, key)  # no lock while nothing changed
    p = route.primary
    return Served(p.model_id, ServedBy(model_id=p.model_id, name=p.name, version=p.version, stage=p.stage,
                                       variant=route.variant, bucket=route.bucket), list(route.shadows), key)


class ShadowView:
    """The prediction log as a shadow version writes to it: every record it takes is marked ``shadow=True``.

    The family's capture function records through it unchanged (it reads ``enabled`` and calls ``record``).
    """

    def __init__(self, log: PredictionLog) -> None:
        self._log = log

    @property
    def enabled(self) -> bool:
        return self._log.enabled

    def record(self, **fields: Any) -> bool:
        """Queue one record of a shadow version's answer."""
        return self._log.record(**{**fields, "shadow": True})


Answer = Callable[[str, Any], Reply]
"""``answer(model_id, log)``: one version's reply, recorded on ``log`` (a PredictionLog, a ShadowView or None)."""


def serve(req: Named, deployments: DeploymentStore | None, log: PredictionLog | None, answer: Answer[Reply],
          summary: Callable[[Reply], Mapping[str, Any]]) -> Reply:
    """Answer ``req`` with the version it names (pinned, or routed by name) and run the name's shadows.

    Args:
        req: The request (a :class:`~quantcrew.ml_server.schemas.serving.ServedRequest`).
        deployments: The deployment store (needed for a request by name).
        log: The prediction log (None: nothing recorded).
        answer: ``answer(model_id, log)``: load the version, answer, record on ``log``.
        summary: What the deployment store's shadow log keeps of a shadow's reply (a small JSON dict).

    Raises:
        NotFoundError: a name with nothing deployed, or an unknown pinned id (404).
        Whatever ``answer`` raises for the answering version (never for a shadow).
    """
    served = resolve(req, deployments)
    reply = answer(served.model_id, log)
    if served.served_by is None:
        return reply
    for shadow in served.shadows:
        _run_shadow(shadow, served, deployments, log, answer, summary)
    return reply.model_copy(update={"served_by": served.served_by})


def _run_shadow(shadow: Deployment, served: Served, deployments: DeploymentStore | None, log: PredictionLog | None,
                answer: Answer[Reply], summary: Callable[[Reply], Mapping[str, Any]]) -> None:
    try:
        out = answer(shadow.model_id, ShadowView(log) if log is not None else None)
        if deployments is not None:
            output = {"model_version": getattr(out, "model_version", shadow.version), **summary(out)}
            deployments.log_shadow(model_id=shadow.model_id, primary_model_id=served.model_id,
                                   request_key=served.request_key, output=output)
    except MLServerError as exc:  # a shadow never fails the request it watches
        logger.warning("shadow %s of '%s' skipped: %s", shadow.model_id, shadow.name, exc)
