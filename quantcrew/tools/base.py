"""What every quantcrew tool shares: settings, the ML client, fallbacks, kept results.

A tool answers an agent with a short readable text and keeps the full structured result
(:class:`ToolResult`) for the crew: in ``last_result``, and passed to ``on_result`` when one
is set (the runs store uses it). Server faults (unreachable, timeout, breaker open, 5xx) make
the tool answer from its numpy fallback with ``degraded=True`` and the reason; a request the
server refused (4xx) is reported back as an actionable message. Nothing raises into the
agent loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from crewai.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from quantcrew.config.settings import Settings, get_settings
from quantcrew.data.errors import DataError
from quantcrew.tools.arguments import ToolInputError
from quantcrew.tools.calls import CallFlow, aperform, perform
from quantcrew.tools.client import AsyncMLClient, MLClient, make_async_client, make_client
from quantcrew.tools.errors import MLClientError, Unauthorized, is_server_fault
from quantcrew.tools.flow import adrive, drive

__all__ = ["QuantTool", "ToolResult"]

_NO_SERVER = "no ML server configured (set QUANTCREW_CLIENT__URL or run through the quantcrew CLI)"


Failure = Literal["bad_input", "data", "refused", "unauthorized"]
"""Why a tool could not answer (``ToolResult.failure``)."""


class ToolResult(BaseModel):
    """The structured result a tool keeps beside its text answer."""

    model_config = ConfigDict(extra="forbid")

    tool: str
    ok: bool = Field(description="False when the tool could not answer (bad input, data error).")
    degraded: bool = Field(default=False, description="True when a local fallback answered instead of the server.")
    degraded_reason: str | None = None
    gated: bool = Field(
        default=False,
        description="True when a trained model was judged by its quality gate and rejected, and a named rule "
                    "answered by design (not degraded: the model the crew asked for did answer, with 'no').")
    gated_reason: str | None = Field(default=None, description="The failed gate and the rule that stood in.")
    failure: Failure | None = Field(
        default=None,
        description="Why ok is False: a bad argument, unusable data, a request the server refused (4xx), or a "
                    "request it refused for want of a valid API key (401/403).")
    summary: str = Field(description="The text the agent received.")
    arguments: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict, description="The full structured answer.")
    elapsed_ms: float = 0.0


class QuantTool(BaseTool):
    """Base of quantcrew's tools: owns the client and the fallback policy.

    Args:
        settings: Settings tree; defaults to the process settings.
        client: An :class:`MLClient` to use instead of one built from settings.
        async_client: Likewise for ``_arun``.
        on_result: Called with every :class:`ToolResult` (e.g. to persist it).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    settings: Settings | None = Field(default=None, exclude=True)
    client: MLClient | None = Field(default=None, exclude=True)
    async_client: AsyncMLClient | None = Field(default=None, exclude=True)
    on_result: Callable[[ToolResult], None] | None = Field(default=None, exclude=True)

    _last_result: ToolResult | None = PrivateAttr(default=None)

    @property
    def last_result(self) -> ToolResult | None:
        """The structured result of the latest call."""
        return self._last_result

    def _settings(self) -> Settings:
        if self.settings is None:
            self.settings = get_settings()
        return self.settings

    def _sync_client(self) -> MLClient:
        if self.client is None:
            self.client = make_client(self._settings().client)
        return self.client

    def _async_client(self) -> AsyncMLClient:
        if self.async_client is None:
            self.async_client = make_async_client(self._settings().client)
        return self.async_client

    # -- the shared flow -------------------------------------------------------------------

    def _run(self, **kwargs: Any) -> str:
        """CrewAI's sync entry: ``kwargs`` are the validated ``args_schema`` fields."""
        flow = self._flow(kwargs, has_client=self.client is not None)
        return drive(flow, lambda step: perform(self._sync_client(), step))

    async def _arun(self, **kwargs: Any) -> str:
        """CrewAI's async entry: the same flow, its calls made through the async client."""
        flow = self._flow(kwargs, has_client=self.async_client is not None)
        return await adrive(flow, lambda step: aperform(self._async_client(), step))

    def _flow(self, arguments: dict[str, Any], *, has_client: bool) -> CallFlow[str]:
        """Prepare, call the server, answer: the whole tool call, its server calls left to the driver."""
        started = time.perf_counter()
        prepared, failed = self._prepare_or_fail(arguments, started)
        if failed is not None:
            return failed
        if not has_client and self._settings().client.url is None:
            return self._finish(self._fallback(arguments, prepared, _NO_SERVER), started)
        try:
            reply = yield from self._calls(prepared)
        except MLClientError as exc:
            return self._on_client_error(arguments, prepared, exc, started)
        return self._finish(self._answer(arguments, prepared, reply), started)

    def _prepare_or_fail(self, arguments: dict[str, Any], started: float) -> tuple[Any, str | None]:
        """Load data and build the request; a data error or a bad argument becomes the answer."""
        failure: Failure
        try:
            return self._prepare(arguments), None
        except DataError as exc:
            text, failure = f"{self.name}: cannot use the data: {exc}", "data"
        except ToolInputError as exc:
            text, failure = f"{self.name}: bad argument: {exc}", "bad_input"
        result = ToolResult(tool=self.name, ok=False, summary=text, arguments=arguments, failure=failure)
        return None, self._finish(result, started)

    def _on_client_error(self, arguments: dict[str, Any], prepared: Any, exc: MLClientError, started: float) -> str:
        if isinstance(exc, Unauthorized):
            text = (f"{self.name}: the ML server refused the API key ({exc}); set QUANTCREW_CLIENT__API_KEY "
                    "(client.api_key) to the server's key. No model can answer until it is fixed.")
            result = ToolResult(tool=self.name, ok=False, summary=text, arguments=arguments, failure="unauthorized")
            return self._finish(result, started)
        if not is_server_fault(exc):
            text = f"{self.name}: the ML server refused the request: {exc}. Change the arguments and try again."
            result = ToolResult(tool=self.name, ok=False, summary=text, arguments=arguments, failure="refused")
            return self._finish(result, started)
        reason = f"ML server unavailable ({type(exc).__name__}: {exc})"
        result = self._fallback(arguments, prepared, reason)
        return self._finish(result, started)

    def _finish(self, result: ToolResult, started: float) -> str:
        result.elapsed_ms = (time.perf_counter() - started) * 1000.0
        self._last_result = result
        if self.on_result is not None:
            self.on_result(result)
        return result.summary

    # -- what each tool provides -------------------------------------------------------------

    def _prepare(self, arguments: dict[str, Any]) -> Any:
        """Load the data and build the wire request (raise DataError on bad data, ToolInputError on bad arguments)."""
        raise NotImplementedError

    def _calls(self, prepared: Any) -> CallFlow[Any]:
        """The server calls the tool makes, as a generator (see :mod:`quantcrew.tools.calls`).

        Yield each call (``reply = yield from call(ENDPOINT, request)``) and return the reply
        that ``_answer`` receives; the base class runs it with the sync or the async client. A
        failed call raises its ``MLClientError`` at the ``yield``: catch the ones the tool turns
        into an answer (e.g. ``NotFound``); the rest become the fallback or a refusal message.
        """
        raise NotImplementedError

    def _answer(self, arguments: dict[str, Any], prepared: Any, reply: Any) -> ToolResult:
        """Turn the server's reply into a ToolResult with a short summary."""
        raise NotImplementedError

    def _fallback(self, arguments: dict[str, Any], prepared: Any, reason: str) -> ToolResult:
        """Answer without the server (numpy only), with degraded=True and the reason."""
        raise NotImplementedError
