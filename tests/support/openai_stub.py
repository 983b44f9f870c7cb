"""A tiny OpenAI-compatible chat-completions server on a free loopback port, for tests.

It lets CrewAI's real OpenAI provider talk HTTP without any network beyond 127.0.0.1::

    with openai_stub("echo_stats", {"symbol": "SP500", "lookback": 750}) as stub:
        llm = crewai.LLM(model="openai/gpt-4o-mini", base_url=stub.base_url, api_key="test-key")
        ...
    assert stub.requests[0]["tools"]

``POST /v1/chat/completions`` (non-streaming): while the request offers ``tools`` and no
tool result is in its messages, the answer is one native tool call to the configured tool
with the configured arguments (``finish_reason="tool_calls"``); otherwise it is the final
text, followed by every tool result seen in the messages (so a test can check that the
observation travelled back to the model). Every other request gets a 404 in OpenAI's error
shape and is listed in ``unhandled``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["OpenAIStub", "openai_stub"]


@dataclass
class OpenAIStub:
    """What a test sees of the running stub.

    Attributes:
        base_url: ``http://127.0.0.1:<port>/v1``, for ``crewai.LLM(base_url=...)``.
        tool_name: The tool the stub asks for.
        tool_args: The arguments it asks for.
        final_text: The text of its final answer.
        requests: Every chat-completions request body, in arrival order.
        unhandled: ``"METHOD /path"`` of every other request.
    """

    base_url: str
    tool_name: str
    tool_args: dict[str, Any]
    final_text: str
    then: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    unhandled: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reply(self, body: dict[str, Any]) -> dict[str, Any]:
        """Record one chat-completions request and build the response body."""
        with self._lock:
            self.requests.append(body)
            number = len(self.requests)
        messages = body.get("messages") or []
        observations = [str(m.get("content") or "") for m in messages if m.get("role") == "tool"]
        message: dict[str, Any] = {"role": "assistant", "content": None}
        plan = [(self.tool_name, self.tool_args), *self.then]
        if body.get("tools") and len(observations) < len(plan):
            name, args = plan[len(observations)]  # one call per turn, in plan order
            message["tool_calls"] = [{
                "id": f"call_stub_{number}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }]
            finish_reason = "tool_calls"
        else:
            message["content"] = "\n".join([self.final_text, *observations])
            finish_reason = "stop"
        return {
            "id": f"chatcmpl-stub-{number}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "stub"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }


def _handler_for(stub: OpenAIStub) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the OpenAI SDK's httpx pool expects

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._not_found("POST")
                return
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                self._send(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
                return
            if body.get("stream"):
                self._send(400, {"error": {"message": "the stub does not stream", "type": "invalid_request_error"}})
                return
            self._send(200, stub.reply(body))

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._not_found("GET")

        def _not_found(self, method: str) -> None:
            with stub._lock:
                stub.unhandled.append(f"{method} {self.path}")
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
            """Keep test output quiet."""

    return _Handler


@contextmanager
def openai_stub(
    tool_name: str, tool_args: dict[str, Any], *, final_text: str = "Stub final answer.",
    then: list[tuple[str, dict[str, Any]]] | None = None,
) -> Iterator[OpenAIStub]:
    """Run the stub on a free 127.0.0.1 port for the duration of the ``with`` block.

    Args:
        tool_name: The tool the stub calls on the first request that offers tools.
        tool_args: The arguments of that call.
        final_text: The start of the final answer.
        then: Further ``(tool, arguments)`` calls, one per turn after each tool result.

    Yields:
        The running stub (``base_url``, ``requests``, ``unhandled``).
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    stub = OpenAIStub(f"http://127.0.0.1:{port}/v1", tool_name, dict(tool_args), final_text, list(then or []))
    server.RequestHandlerClass = _handler_for(stub)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
