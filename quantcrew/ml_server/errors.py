"""Domain errors raised by services and the registry, and the one map to HTTP.

Services never see HTTP: they raise these. ``handlers.install_error_handlers`` maps each to a
status and the one error body ``{"error": {"code", "message", "details"}}``.
The client's error tree (``quantcrew.tools.errors``) mirrors this map.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ArtifactIntegrityError",
    "AuthError",
    "ConflictError",
    "InvalidInputError",
    "MLServerError",
    "ModelGatedError",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "NotFoundError",
    "PayloadTooLargeError",
]


class MLServerError(Exception):
    """Root of the server's domain errors."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInputError(MLServerError):
    """The request is well-formed JSON but its content cannot be used (422)."""

    status_code = 422
    code = "invalid_input"


class PayloadTooLargeError(MLServerError):
    """The body exceeds the configured byte limit (413)."""

    status_code = 413
    code = "payload_too_large"


class AuthError(MLServerError):
    """Missing or wrong API key (401)."""

    status_code = 401
    code = "unauthorized"


class NotFoundError(MLServerError):
    """No such resource: a job, a bandit, a decision (404)."""

    status_code = 404
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    """No model with that id in the registry (404)."""

    status_code = 404
    code = "model_not_found"


class ConflictError(MLServerError):
    """The request conflicts with the resource's state: cancelling a finished job, rewarding a
    decision twice, creating a name that exists (409)."""

    status_code = 409
    code = "conflict"


class ArtifactIntegrityError(ConflictError):
    """A stored artifact does not match its recorded SHA-256, or holds a refused type (409)."""

    status_code = 409
    code = "artifact_integrity"


class ModelGatedError(ConflictError):
    """Trained models exist for what was asked, but none passed its quality gate, so none is
    deployed (409). ``details`` carries the newest one's ``model_id`` and its ``gate`` verdict."""

    status_code = 409
    code = "model_gated"


class ModelNotReadyError(MLServerError):
    """The server or model cannot answer yet (503)."""

    status_code = 503
    code = "not_ready"
