"""Bearer API key, compared in constant time; off when no key is configured.

The key is checked twice, by one rule: :class:`APIKeyMiddleware` answers 401 from the request
headers alone, before anything reads the body (a keyless client cannot make the server buffer
and parse megabytes), and :func:`require_api_key` is the route dependency that declares the
bearer scheme in the OpenAPI document and checks again behind the middleware.

Which paths need the key: every ``/v1`` route and ``/mcp`` (the same routes as MCP tools); ``/ready``,
``/metrics``, ``/docs`` and ``/openapi.json`` too unless ``server.protect_ops`` is false; ``/health`` never (liveness).
"""

from __future__ import annotations

import hmac

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from quantcrew.ml_server.errors import AuthError
from quantcrew.ml_server.handlers import body_pending, domain_error_response

__all__ = ["OPS_PATHS", "APIKeyMiddleware", "bearer_scheme", "check_key", "needs_key", "require_api_key"]

OPS_PATHS = frozenset({"/ready", "/metrics", "/docs", "/openapi.json"})
"""Operational routes that need the key when one is set and ``server.protect_ops`` is true."""

bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="bearer",
    description="The server's API key (server.api_key), sent as 'Authorization: Bearer <key>'.",
)


def needs_key(path: str, *, protect_ops: bool) -> bool:
    """Whether a request to ``path`` must carry the key (when the server has one)."""
    if path == "/v1" or path.startswith("/v1/") or path == "/mcp" or path.startswith("/mcp/"):
        return True
    return protect_ops and path in OPS_PATHS


def check_key(authorization: str | None, expected: bytes) -> AuthError | None:
    """The refusal for an ``Authorization`` header value, or None when it carries the key."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return AuthError("missing API key: send 'Authorization: Bearer <key>'", details={"header": "Authorization"})
    if not hmac.compare_digest(token.encode(), expected):
        return AuthError("wrong API key", details={"header": "Authorization"})
    return None


class APIKeyMiddleware:
    """Refuses requests without the key (401) from their headers, before the body is read."""

    def __init__(self, app: ASGIApp, key: bytes | None, protect_ops: bool) -> None:
        self.app = app
        self.key = key
        self.protect_ops = protect_ops

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is None or scope["type"] != "http" or not needs_key(scope["path"],
                                                                           protect_ops=self.protect_ops):
            await self.app(scope, receive, send)
            return
        header: str | None = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        error = check_key(header, self.key)
        if error is not None:
            # outside Starlette's exception middleware: rendered by the error map directly; a body the
            # client is still sending is not read: the connection closes after the 401
            await domain_error_response(error, close=body_pending(scope))(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def require_api_key(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Security(bearer_scheme),  # noqa: B008 - FastAPI's idiom
) -> None:
    """Route dependency: declares the bearer scheme in OpenAPI and checks the key behind the middleware."""
    expected: bytes | None = request.app.state.api_key
    if expected is None:
        return
    header = None if credentials is None else f"{credentials.scheme} {credentials.credentials}"
    error = check_key(header, expected)
    if error is not None:
        raise error
