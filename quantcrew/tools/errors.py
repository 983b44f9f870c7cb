"""The ML client's one error tree, and the one place that translates into it.

::

    MLClientError
     ├── MLServerUnavailable          no response: connect / DNS / refused / read / protocol error
     │    └── CircuitOpenError        no attempt made: the circuit breaker is open
     ├── MLServerTimeout              no response in time (any httpx.TimeoutException)
     └── MLResponseError              an error response: .status_code .code .message .details .request_id
          ├── MLRequestRejected       other 4xx: the request was wrong
          │    ├── InvalidModelInput  422 invalid_input
          │    │    └── PayloadTooLarge   413 payload_too_large
          │    ├── Unauthorized       401, 403
          │    ├── NotFound           404 (alias ModelNotFound): no such model, job, bandit, decision
          │    └── Conflict           409 (alias ArtifactConflict): a finished job, a second reward,
          │                               an artifact that failed its integrity check
          ├── ModelNotReady           503 not_ready
          └── MLServerFault           other 5xx (and a 2xx body that breaks the contract)

Two questions a tool asks of an error, each answered by a class attribute:

* ``server_fault``: the server side failed (unavailable, timeout, breaker open, 5xx). A tool
  answers from its light fallback and says so. False for the 4xx family: the caller's input
  was wrong, so a fallback would only hide it; report it instead.
* ``retryable``: a retry of an idempotent call may succeed (unavailable, timeout, 503).

A client with several servers (:mod:`quantcrew.tools.servers`) also asks ``nothing_sent`` (no byte of the
request left: a call that must not be made twice may still go to the next server) and names the servers
it tried in ``servers_tried`` and in the message.

``PayloadTooLarge`` sits under ``InvalidModelInput`` because both say "this payload cannot be
used, send a different one": the server refuses over-limit arrays by rows or columns with 422
and by bytes with 413, so whoever catches ``InvalidModelInput`` sees every size limit at once.

``map_transport_errors`` maps transport failures and ``error_from_response`` maps error
replies; nothing else builds these from httpx objects. The server's side of the same map is
``quantcrew.ml_server.errors``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import httpx

__all__ = [
    "ArtifactConflict",
    "CircuitOpenError",
    "Conflict",
    "InvalidModelInput",
    "MLClientError",
    "MLRequestRejected",
    "MLResponseError",
    "MLServerFault",
    "MLServerTimeout",
    "MLServerUnavailable",
    "ModelNotFound",
    "ModelNotReady",
    "NotFound",
    "PayloadTooLarge",
    "Unauthorized",
    "error_class_for_status",
    "error_from_response",
    "is_server_fault",
    "map_transport_errors",
]

_REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-correlation-id")
_SNIPPET_CHARS = 200


class MLClientError(Exception):
    """Root of every error the ML client raises.

    Attributes:
        nothing_sent: No byte of the request left the client (the connection could not be made, or the breaker
            refused the call): even a call that must not be made twice may go to another server.
        servers_tried: The URLs a client with several servers tried, in order (empty for a one-server client).
    """

    server_fault: ClassVar[bool] = False
    retryable: ClassVar[bool] = False
    nothing_sent: bool = False
    servers_tried: tuple[str, ...] = ()

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MLServerUnavailable(MLClientError):
    """No response: the server could not be reached or the exchange broke off."""

    server_fault = True
    retryable = True


class CircuitOpenError(MLServerUnavailable):
    """Refused without an attempt: the circuit breaker is open after repeated server faults.

    Attributes:
        retry_in_s: Seconds until the breaker lets one trial call through.
        failures: Consecutive server faults that opened it.
    """

    retryable = False  # retrying at once is what the breaker exists to prevent
    nothing_sent = True

    def __init__(self, message: str, *, retry_in_s: float, failures: int) -> None:
        super().__init__(message)
        self.retry_in_s = retry_in_s
        self.failures = failures


class MLServerTimeout(MLClientError):
    """No response in time (connect, read, write or pool timeout)."""

    server_fault = True
    retryable = True


class MLResponseError(MLClientError):
    """The server answered with an error status.

    Attributes:
        status_code: The HTTP status.
        code: The stable machine-readable code from the error body (``http_<status>`` when
            the body was not the one error shape).
        message: The server's sentence for a person.
        details: Structured context (field paths, limits), or None.
        request_id: The reply's request id header, when it had one.
        retry_after_s: The reply's ``Retry-After`` in seconds, when it had one.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str,
        details: Any = None,
        request_id: str | None = None,
        retry_after_s: float | None = None,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.details = details
        self.request_id = request_id
        self.retry_after_s = retry_after_s
        self.endpoint = endpoint

    def __str__(self) -> str:
        where = f"{self.endpoint} -> " if self.endpoint else ""
        return f"{where}{self.status_code} {self.code}: {self.message}"


class MLRequestRejected(MLResponseError):
    """A 4xx reply: the request itself was wrong; change it rather than retry."""


class InvalidModelInput(MLRequestRejected):
    """422: the payload is valid JSON but cannot be used (``details`` names the fields)."""


class PayloadTooLarge(InvalidModelInput):
    """413: the body is over the server's byte limit; send fewer rows."""


class Unauthorized(MLRequestRejected):
    """401 or 403: the API key is missing or wrong."""


class NotFound(MLRequestRejected):
    """404: no model, job, bandit or decision with that id (or no such route on this server version)."""


class Conflict(MLRequestRejected):
    """409: the request conflicts with the resource's state (``code`` says which): cancelling a
    finished job, rewarding a decision twice, a name taken (``conflict``), or an artifact that
    failed its integrity check (``artifact_integrity``)."""


ModelNotFound = NotFound  # the name tools used before jobs and bandits had ids too
ArtifactConflict = Conflict


class ModelNotReady(MLResponseError):
    """503: the server or the model cannot answer yet."""

    server_fault = True
    retryable = True


class MLServerFault(MLResponseError):
    """Any other 5xx, or a success reply whose body does not match the contract."""

    server_fault = True


_STATUS_CLASSES: dict[int, type[MLResponseError]] = {
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidModelInput,
    503: ModelNotReady,
}


def error_class_for_status(status_code: int) -> type[MLResponseError]:
    """The class of the tree for an error status.

    Anything that is neither a named status nor a 4xx (a 5xx, or an unexpected 1xx/3xx
    that only a misconfigured URL or proxy produces) is a server-side fault.
    """
    cls = _STATUS_CLASSES.get(status_code)
    if cls is not None:
        return cls
    if 400 <= status_code < 500:
        return MLRequestRejected
    return MLServerFault


def error_from_response(response: httpx.Response) -> MLResponseError:
    """Build the error for a non-2xx reply from its status and its error body.

    Reads ``{"error": {"code", "message", "details"}}``; tolerates any other body (HTML from
    a proxy, FastAPI's ``{"detail": ...}``, nothing at all) by falling back to
    ``code="http_<status>"`` and a snippet of the text as the message.
    """
    status = response.status_code
    code, message, details = _parse_error_body(response)
    cls = error_class_for_status(status)
    return cls(
        message,
        status_code=status,
        code=code,
        details=details,
        request_id=_request_id(response),
        retry_after_s=_retry_after_s(response),
        endpoint=_endpoint(response),
    )


@contextmanager
def map_transport_errors() -> Iterator[None]:
    """Translate httpx transport failures raised in the block into the tree.

    Timeouts become ``MLServerTimeout``; every other ``httpx.TransportError`` (connect,
    read, write, protocol, proxy, unsupported scheme) becomes ``MLServerUnavailable``.
    A connection that could not be made (``ConnectError``, ``ConnectTimeout``, ``PoolTimeout``)
    sent nothing: the error's ``nothing_sent`` says so. The httpx error is kept as ``__cause__``.
    Works around ``await`` as well.
    """
    error: MLClientError
    try:
        yield
    except httpx.TimeoutException as exc:
        error = MLServerTimeout(f"no reply from the ML server in time{_target(exc)}: {_describe(exc)}")
        error.nothing_sent = isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
        raise error from exc
    except httpx.TransportError as exc:
        error = MLServerUnavailable(f"cannot reach the ML server{_target(exc)}: {_describe(exc)}")
        error.nothing_sent = isinstance(exc, httpx.ConnectError)
        raise error from exc


def is_server_fault(exc: BaseException) -> bool:
    """Whether a tool should fall back: the server side failed, not the caller's input.

    True for unavailable, timeout, breaker open, 503 and other 5xx (and for a raw
    ``httpx.TransportError`` that escaped the mapping); False for the 4xx family and for
    anything that is not a client error.
    """
    if isinstance(exc, MLClientError):
        return exc.server_fault
    return isinstance(exc, httpx.TransportError)


def _parse_error_body(response: httpx.Response) -> tuple[str, str, Any]:
    fallback_code = f"http_{response.status_code}"
    raw = response.content
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:  # not JSON, or not UTF-8
        text = raw.decode("utf-8", errors="replace").strip()
        return fallback_code, _snippet(text) or response.reason_phrase or fallback_code, None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and isinstance(error.get("code"), str):
            message = error.get("message")
            return error["code"], message if isinstance(message, str) else str(message), error.get("details")
        if "detail" in payload:  # FastAPI's default shape, e.g. from a proxy or an older server
            detail = payload["detail"]
            return fallback_code, detail if isinstance(detail, str) else _snippet(json.dumps(detail)), detail
    message = response.reason_phrase or fallback_code
    return fallback_code, message, payload


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SNIPPET_CHARS else text[: _SNIPPET_CHARS - 3] + "..."


def _request_id(response: httpx.Response) -> str | None:
    for name in _REQUEST_ID_HEADERS:
        value: str | None = response.headers.get(name)
        if value:
            return value
    return None


def _retry_after_s(response: httpx.Response) -> float | None:
    value: str | None = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _endpoint(response: httpx.Response) -> str | None:
    try:
        request = response.request
    except RuntimeError:  # a Response built by hand has no request
        return None
    return f"{request.method} {request.url.path}"


def _target(exc: httpx.TransportError) -> str:
    try:
        request = exc.request
    except RuntimeError:  # raised without a request attached
        return ""
    return f" ({request.method} {request.url})"


def _describe(exc: httpx.TransportError) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
