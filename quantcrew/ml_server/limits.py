"""Request size limits: bytes and JSON items at the ASGI edge (413), rows per payload (422).

The cost of a body is the number of values the parser must build, not its bytes: 16 MiB of
one-value rows (``[1],[1],...``) is 3.9 million lists. A byte cap per route cannot bound that
for the matrix families (a legitimate 512-column table needs far more bytes per row than a
one-column one), so the middleware counts items while the body streams in and refuses the
first array or object with more than ``max_items`` entries, having read only that far; the
parser never sees the body. Columns of an OHLCV payload are fixed by its schema (unknown fields
are refused); the matrix-shaped families check ``server.max_columns`` with the same kind of helper.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import anyio.to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from quantcrew.ml_server.errors import InvalidInputError, MLServerError, PayloadTooLargeError
from quantcrew.ml_server.handlers import domain_error_response
from quantcrew.ml_server.schemas.common import OHLCVPayload
from quantcrew.ml_server.schemas.matrix import MatrixPayload

__all__ = ["COLLAPSE_PASSES", "MAX_DEPTH", "BodySizeLimitMiddleware", "JsonItemCounter", "check_matrix", "check_rows"]

MAX_DEPTH = 64
"""Deepest JSON nesting a request may have (the deepest schema nests a handful of levels)."""

_THREAD_CHUNK = 16 * 1024
"""Chunks at least this long are counted in a worker thread, so a flood of big bodies leaves the
event loop free: the counter is Python between C-speed searches, so it yields the GIL."""

_PIECE = 16 * 1024
"""Longest piece of a chunk handled by one pass."""

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)  # the rest of a string cut by a chunk
_BRACKETS = re.compile(rb"[\[\]{}]")
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b"[]{},")))
"""Every byte but brackets and commas: once strings are gone, only these decide the count."""
COLLAPSE_PASSES = 2
"""Passes that collapse the innermost containers of a chunk before it is counted. A pass removes empty
ones first, then those holding only commas, so it may take two levels: up to ``2 * COLLAPSE_PASSES``
innermost levels are not counted against :data:`MAX_DEPTH`."""


def _leaf_pattern(max_items: int) -> re.Pattern[bytes] | None:
    """Arrays and objects reduced to their commas, holding none of another container and at least one but too
    few commas for more than ``max_items`` entries: they can be dropped unseen (their parent counts its own
    commas only). None when even one comma is too many."""
    most = max_items - 1
    if most < 1:
        return None
    return re.compile(rb"\[,{1,%d}\]|\{,{1,%d}\}" % (most, most))


class JsonItemCounter:
    """Counts the entries of every open JSON array and object as a body arrives in chunks.

    It does not validate JSON (the parser does); it only tracks nesting and commas outside
    strings, across chunk boundaries (a string or an escape may be cut anywhere). ``feed``
    raises as soon as one container has more than ``max_items`` entries or nesting passes
    ``max_depth``, so a refused body is read only as far as the offending entry.

    Args:
        max_items: Most entries of one array or object.
        max_depth: Deepest nesting.
        setting: The setting named in the refusal.
    """

    def __init__(self, max_items: int, *, max_depth: int = MAX_DEPTH, setting: str = "QUANTCREW_SERVER__MAX_ROWS"):
        self.max_items = max_items
        self.max_depth = max_depth
        self.setting = setting
        self.received = 0
        self._leaf = _leaf_pattern(max_items)
        self._commas: list[int] = []  # commas seen so far in each open container, innermost last
        self._in_string = False
        self._escape = False  # the last chunk ended on a backslash inside a string

    def cannot_refuse(self, body: bytes) -> bool:
        """Whether ``body``, a whole request body, is too short to break either limit (so need not be fed).

        An array or object needs a comma per entry past the first, and a level of nesting needs an
        opening bracket: a body no longer than ``max_items`` bytes with no more than ``max_depth``
        brackets passes :meth:`feed` whatever it holds. Two C-speed counts instead of the scan.
        """
        return (self.received == 0 and len(body) <= self.max_items
                and body.count(b"[") + body.count(b"{") <= self.max_depth)

    def feed(self, chunk: bytes) -> None:
        """Account for the next chunk of the body.

        Raises:
            PayloadTooLargeError: a container has more than ``max_items`` entries.
            InvalidInputError: the nesting is deeper than ``max_depth``.
        """
        # pieces keep each C-speed pass short: a thread holds the GIL for the whole of one pass, and the
        # event loop waits for it (the counter is chunk-boundary-safe, so any cut will do)
        for offset in range(0, len(chunk), _PIECE):
            self._feed(chunk[offset:offset + _PIECE])

    def _feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        start = self._finish_string(chunk)
        if start is None:
            return
        body = chunk[start:]
        if b"\\" not in body:
            # no escapes: quotes pair up, and every closed string becomes one inert byte (C speed)
            parts = body.split(b'"')
            self._in_string = len(parts) % 2 == 0  # an odd count of quotes leaves a string open
            self._count(b"0".join(parts[::2]))
            return
        text = _STRING.sub(b"0", body)
        quote = text.find(b'"')  # a quote left over opens a string that runs past the end of the chunk
        if quote >= 0:
            tail = text[quote + 1:]
            rest = _STRING_REST.match(tail)
            assert rest is not None  # matches the empty string at least
            self._in_string = True
            self._escape = rest.end() < len(tail)  # only a lone trailing backslash stops the match early
            text = text[:quote]
        self._count(text)

    def _finish_string(self, chunk: bytes) -> int | None:
        """Where the structure resumes in ``chunk`` after a string left open by the last one."""
        if not self._in_string:
            return 0
        pos = 0
        if self._escape:
            if not chunk:
                return None
            pos, self._escape = 1, False
        rest = _STRING_REST.match(chunk, pos)
        assert rest is not None
        end = rest.end()
        if end < len(chunk) and chunk[end:end + 1] == b'"':
            self._in_string = False
            return end + 1
        self._escape = end < len(chunk)  # stopped on a trailing backslash
        return None

    def _count(self, text: bytes) -> None:
        commas = self._commas
        prev = 0
        # strings are gone: numbers, spaces, colons and literals count for nothing, and dropping them is one
        # C-speed pass that shortens everything after it ("[1.5, 2.5]" becomes "[,]")
        text = text.translate(None, _NOT_STRUCTURE)
        # the long runs of one flat array (a column of prices) hold no bracket: memchr finds that out
        # far faster than a regex scan
        if any(b in text for b in (b"[", b"]", b"{", b"}")):
            # rows such as [1.5, 2.5] hold no container and cannot overflow: they are dropped before the count,
            # so a body of millions of short rows costs a few C-speed passes, not a Python loop. One-value rows,
            # now "[]", go by replace (memmem speed); the regex (one match per row) sees only rows with commas
            for _ in range(COLLAPSE_PASSES):
                collapsed = text.replace(b"[]", b"").replace(b"{}", b"")
                if self._leaf is not None and (b"[," in collapsed or b"{," in collapsed):
                    collapsed = self._leaf.sub(b"", collapsed)
                if len(collapsed) == len(text):
                    break
                text = collapsed
            brackets: Iterable[re.Match[bytes]] = _BRACKETS.finditer(text)
        else:
            brackets = ()
        for match in brackets:
            pos = match.start()
            if commas:
                commas[-1] += text.count(b",", prev, pos)
                if commas[-1] >= self.max_items:
                    self._too_many()
            if text[pos] in b"[{":
                commas.append(0)
                if len(commas) > self.max_depth:
                    raise InvalidInputError(
                        f"request body nests deeper than {self.max_depth} levels",
                        details=[{"loc": ["body"], "msg": f"at most {self.max_depth} levels of nesting"}],
                    )
            elif commas:
                commas.pop()
            prev = pos + 1
        if commas:
            commas[-1] += text.count(b",", prev)
            if commas[-1] >= self.max_items:
                self._too_many()

    def _too_many(self) -> None:
        raise PayloadTooLargeError(
            f"request body has an array or object of more than {self.max_items} entries; the limit is "
            f"{self.max_items} ({self.setting}); refused after {self.received} bytes",
            details={"limit_items": self.max_items, "received_bytes": self.received, "setting": self.setting},
        )


class BodySizeLimitMiddleware:
    """Refuses bodies over ``max_bytes`` or with containers over ``max_items`` with 413 before they are parsed.

    Checks Content-Length first, then counts streamed chunks (chunked uploads carry no
    length) and the JSON entries in them, so an oversized body is never buffered whole.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_items: int | None = None,
                 items_setting: str = "QUANTCREW_SERVER__MAX_ROWS") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_items = max_items
        self.items_setting = items_setting

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        content_type = b""
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await _too_large(scope, receive, send, declared, self.max_bytes)
                    return
            elif name == b"content-type":
                content_type = value.lower()
        counter = (JsonItemCounter(self.max_items, setting=self.items_setting)
                   if self.max_items is not None and (not content_type or b"json" in content_type) else None)
        received = 0
        responded = False

        async def refuse(error: MLServerError, *, unread: bool) -> Message:
            nonlocal responded
            responded = True
            await domain_error_response(error, close=unread)(scope, receive, send)
            return {"type": "http.disconnect"}

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                body: bytes = message.get("body", b"")
                received += len(body)
                last = not message.get("more_body", False)
                if received > self.max_bytes:
                    return await refuse(_byte_error(received, self.max_bytes), unread=not last)
                if counter is not None and body and not (last and counter.cannot_refuse(body)):
                    try:
                        if len(body) >= _THREAD_CHUNK:
                            await anyio.to_thread.run_sync(counter.feed, body)
                        else:
                            counter.feed(body)
                    except MLServerError as error:
                        return await refuse(error, unread=not last)
            return message

        async def guarded_send(message: Message) -> None:
            if not responded:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)


def _byte_error(size: int, limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"request body of {size} bytes exceeds the limit of {limit} bytes (QUANTCREW_SERVER__MAX_BODY_BYTES)",
        details={"limit_bytes": limit, "received_bytes": size},
    )


async def _too_large(scope: Scope, receive: Receive, send: Send, size: int, limit: int) -> None:
    # This middleware sits outside Starlette's exception middleware, so raising here would reach
    # the server as an unhandled error: the reply is rendered by the error map directly instead.
    await domain_error_response(_byte_error(size, limit), close=True)(scope, receive, send)  # the body stays unread


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
