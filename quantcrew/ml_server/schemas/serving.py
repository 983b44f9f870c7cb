"""How a predict request names the model that answers it: a pinned ``model_id``, or a deployment ``name``.

With ``name``, the deployment stages of that name pick the version (the full version, or a canary /
gradual candidate for the request keys whose sticky bucket falls in its share); its shadows run on
the same input and are logged, never returned. The reply's ``served_by`` says which version answered.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from quantcrew.ml_server.schemas.common import WireModel
from quantcrew.ml_server.schemas.ensemble import ServedBy

__all__ = ["ServedBy", "ServedReply", "ServedRequest"]

_NAME = r"^[A-Za-z0-9_.-]+$"


class ServedRequest(WireModel):
    """The fields that pick the model of a predict request: exactly one of ``model_id`` or ``name``."""

    model_id: str | None = Field(default=None, min_length=1, max_length=64,
                                 description="Pin one stored version (bypassing the deployment stages). Give this "
                                             "or `name`.")
    name: str | None = Field(default=None, min_length=1, max_length=64, pattern=_NAME,
                             description="Deployment name: the version its stages route to answers (full, or a "
                                         "canary / gradual candidate by the sticky request key); its shadows also "
                                         "run and are logged. Give this or `model_id`.")
    request_key: str | None = Field(default=None, min_length=1, max_length=200,
                                    description="Sticky A/B key (with `name`): the same key always reaches the same "
                                                "version. Default the request's symbol, else the name.")

    @model_validator(mode="after")
    def _one_model(self) -> ServedRequest:
        if (self.model_id is None) == (self.name is None):
            raise ValueError("give exactly one of `model_id` (a pinned version) or `name` (its deployed version)")
        return self


class ServedReply(WireModel):
    """The ``served_by`` field of a reply to a :class:`ServedRequest`."""

    served_by: ServedBy | None = Field(
        default=None, description="Which deployed version answered and why, when the request gave `name`; null "
                                  "when it pinned a `model_id` (or nothing was stored).")
