"""Bearer API key, compared in constant time; off when no key is configured."""

from __future__ import annotations

import hmac

from fastapi import Request

from quantcrew.ml_server.errors import AuthError

__all__ = ["require_api_key"]


async def require_api_key(request: Request) -> None:
    """Dependency for every /v1 route: checks ``Authorization: Bearer <key>``."""
    expected: bytes | None = request.app.state.api_key
    if expected is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthError("missing API key: send 'Authorization: Bearer <key>'", details={"header": "Authorization"})
    if not hmac.compare_digest(token.strip().encode(), expected):
        raise AuthError("wrong API key", details={"header": "Authorization"})
