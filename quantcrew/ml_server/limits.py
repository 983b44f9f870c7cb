"""Request size limits: bytes at the ASGI edge (413), rows per payload (422).

Columns of an OHLCV payload are fixed by its schema (unknown fields are refused); the
matrix-shaped families check ``server.max_columns`` with the same kind of helper.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from quantcrew.ml_server.errors import InvalidInputError, PayloadTooLargeError
from quantcrew.ml_server.handlers import domain_error_response
from quantcrew.ml_server.schemas.common import OHLCVPayload
from quantcrew.ml_server.schemas.matrix import MatrixPayload

__all__ = ["BodySizeLimitMiddleware", "check_matrix", "check_rows"]


class BodySizeLimitMiddleware:
    """Refuses bodies over ``max_bytes`` with 413 before they are parsed.

    Checks Content-Length first, then counts streamed chunks (chunked uploads carry no
    length), so an oversized body is never buffered whole.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await _too_large(scope, receive, send, declared, self.max_bytes)
                    return
        received = 0
        responded = False

        async def limited_receive() -> Message:
            nonlocal received, responded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    responded = True
                    await _too_large(scope, receive, send, received, self.max_bytes)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not responded:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)


async def _too_large(scope: Scope, receive: Receive, send: Send, size: int, limit: int) -> None:
    # This middleware sits outside Starlette's exception middleware, so raising here would reach
    # the server as an unhandled error: the reply is rendered by the error map directly instead.
    error = PayloadTooLargeError(
        f"request body of {size} bytes exceeds the limit of {limit} bytes (QUANTCREW_SERVER__MAX_BODY_BYTES)",
        details={"limit_bytes": limit, "received_bytes": size},
    )
    await domain_error_response(error)(scope, receive, send)


def check_rows(payload: OHLCVPayload, *, max_rows: int, field: str = "data") -> None:
    """Refuse a payload with more bars than the configured limit (422 naming the field)."""
    n = len(payload.timestamps)
    if n > max_rows:
        raise InvalidInputError(
            f"{field} has {n} rows; the limit is {max_rows} (QUANTCREW_SERVER__MAX_ROWS)",
            details=[{"loc": [field, "timestamps"], "msg": f"at most {max_rows} rows", "rows": n}],
        )


def check_matrix(payload: MatrixPayload, *, max_rows: int, max_columns: int, field: str = "data") -> None:
    """Refuse a table over the configured row or column limits (422 naming the field)."""
    rows, cols = payload.shape
    if rows > max_rows:
        raise InvalidInputError(
            f"{field} has {rows} rows; the limit is {max_rows} (QUANTCREW_SERVER__MAX_ROWS)",
            details=[{"loc": [field, "values"], "msg": f"at most {max_rows} rows", "rows": rows}],
        )
    if cols > max_columns:
        raise InvalidInputError(
            f"{field} has {cols} columns; the limit is {max_columns} (QUANTCREW_SERVER__MAX_COLUMNS)",
            details=[{"loc": [field, "columns"], "msg": f"at most {max_columns} columns", "columns": cols}],
        )
