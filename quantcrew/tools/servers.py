"""Several ML servers behind no load balancer: which one a call goes to, and when it moves on.

A client made with several URLs (``client.urls``) keeps one :class:`~quantcrew.tools.breaker.CircuitBreaker`
per URL and routes every call by their states (:func:`route`):

* it prefers the first URL whose breaker is closed, the primary when it is healthy;
* a URL whose breaker is open is skipped; once its pause (``breaker_reset_s``) is over the breaker is half-open,
  and the next call first asks that server ``GET /health`` (one attempt, the breaker's trial): a server that
  answers 200 takes the call, and since the order is the list's, traffic moves back to a recovered primary;
* a call that fails on one URL moves to the next one in the same call (:func:`may_fail_over`) when nothing was
  sent (the connection could not be made, or the breaker refused), or when the call is idempotent and the fault
  retryable (unavailable, timeout, 503); the URL it leaves is tripped open at once (``CircuitBreaker.trip``), so
  that the calls after it go straight to the next URL instead of paying the dead one's connect first;
* a call that is not idempotent (a fit, a bandit select or reward) and failed after its request may have reached
  a server is never sent to another: its error says which URL it may have reached.

With one URL nothing here applies: the call goes to that URL, its breaker and retries work as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from quantcrew.tools.breaker import BreakerState, CircuitBreaker
from quantcrew.tools.errors import CircuitOpenError, MLClientError, MLResponseError

__all__ = ["Hop", "Server", "all_open_error", "build_servers", "describe_fault", "may_fail_over", "name_servers",
           "route"]


@dataclass(frozen=True, slots=True)
class Server:
    """One server a client calls.

    Attributes:
        url: Its base URL, without a trailing slash.
        breaker: Its own circuit breaker, or None for none.
    """

    url: str
    breaker: CircuitBreaker | None

    @property
    def state(self) -> BreakerState:
        """Its breaker's state (closed when it has none)."""
        return BreakerState.CLOSED if self.breaker is None else self.breaker.state


@dataclass(frozen=True, slots=True)
class Hop:
    """One server of a call's route: ``index`` into the client's servers; ``probe`` asks ``GET /health`` first."""

    index: int
    probe: bool


def build_servers(
    base_url: str, breaker: CircuitBreaker | None, urls: Sequence[str] | None,
    breakers: Sequence[CircuitBreaker] | None,
) -> tuple[list[Server], bool]:
    """A client's servers, and whether its requests go to its HTTP client's ``base_url`` (relative paths).

    Args:
        base_url: The HTTP client's base URL: the one server when ``urls`` is None.
        breaker: The breaker of a one-server client (None: none).
        urls: Several servers, primary first; requests then go to these absolute URLs.
        breakers: One distinct breaker per URL of ``urls``; default a new ``CircuitBreaker()`` each when there
            are several (failover needs each URL's state), ``breaker`` when there is one.

    Raises:
        ValueError: a URL that is not http(s), a URL listed twice, ``breakers`` that do not match ``urls``,
            or ``breaker`` with several URLs.
    """
    if not urls:
        if breakers is not None:
            raise ValueError("breakers are given per URL: pass urls too")
        return [Server(base_url.rstrip("/"), breaker)], True
    checked = [str(url).strip().rstrip("/") for url in urls]
    bad = [url for url in checked if not url.startswith(("http://", "https://"))]
    if bad:
        raise ValueError(f"urls must start with http:// or https://, got {bad}")
    if len(set(checked)) != len(checked):
        raise ValueError(f"urls must not repeat, got {checked}")
    if breakers is None:
        if len(checked) == 1:
            return [Server(checked[0], breaker)], False
        if breaker is not None:
            raise ValueError("one breaker cannot serve several URLs: pass breakers, one per URL")
        breakers = [CircuitBreaker() for _ in checked]
    if len(breakers) != len(checked) or len({id(b) for b in breakers}) != len(breakers):
        raise ValueError(f"breakers must be one distinct breaker per URL: {len(breakers)} for {len(checked)} URLs")
    return [Server(url, b) for url, b in zip(checked, breakers, strict=True)], False


def route(states: Sequence[BreakerState]) -> list[Hop]:
    """The servers a call tries, in order, from their breakers' states (the client's servers in its order).

    An open breaker's server is left out; a half-open one's is kept in its place and probed first; a closed
    one's is called at once. The first hop is therefore the first server that is not known to be down.
    """
    return [Hop(i, state is BreakerState.HALF_OPEN) for i, state in enumerate(states) if state is not BreakerState.OPEN]


def may_fail_over(idempotent: bool, exc: MLClientError) -> bool:
    """Whether a call that failed with ``exc`` on one server may be made on the next.

    Yes when nothing was sent (a refused or timed-out connect, an open breaker), whatever the call; yes for an
    idempotent call after a retryable fault (unavailable, timeout, 503); never after an answer that says the
    request was wrong (4xx) or another server fault, and never for a call that is not idempotent once its
    request may have reached the server.
    """
    if exc.nothing_sent:
        return True
    return idempotent and exc.retryable


def all_open_error(servers: Sequence[Server]) -> CircuitOpenError:
    """The error of a call refused before any attempt: every server's breaker is open."""
    waits = [(s.breaker.failures, s.breaker.retry_in_s, s.url) for s in servers if s.breaker is not None]
    failures, retry_in, _ = min(waits, key=lambda w: w[1]) if waits else (0, 0.0, "")
    listed = ", ".join(f"{url} (trial in {wait:.1f} s)" for _, wait, url in waits)
    error = CircuitOpenError(f"every ML server's circuit breaker is open: {listed}", retry_in_s=retry_in,
                             failures=failures)
    error.servers_tried = tuple(s.url for s in servers)
    return error


def name_servers(exc: MLClientError, tried: Sequence[tuple[str, str]], *, reached: str | None = None) -> None:
    """Add the servers a call tried to its error (``servers_tried`` and the message), in place.

    Args:
        exc: The error the call raises.
        tried: ``(url, what happened there)`` per server, in the order tried.
        reached: The server a call that is not idempotent may have reached, so it went to no other.
    """
    exc.servers_tried = tuple(dict.fromkeys(url for url, _ in tried))
    runs: list[list[Any]] = []  # the same thing at the same server in a row (retries) is said once, counted
    for url, what in tried:
        if runs and runs[-1][:2] == [url, what]:
            runs[-1][2] += 1
        else:
            runs.append([url, what, 1])
    note = "servers tried: " + ", ".join(f"{url} ({what}{f' x{n}' if n > 1 else ''})" for url, what, n in runs)
    if reached is not None:
        note += f"; not sent to another server: the call is not idempotent and may have reached {reached}"
    exc.message = f"{exc.message} [{note}]"
    exc.args = (exc.message, *exc.args[1:])


def describe_fault(exc: MLClientError) -> str:
    """What happened at one server, in a few words, for an error that names the servers tried."""
    if isinstance(exc, CircuitOpenError):
        return "breaker open"
    if isinstance(exc, MLResponseError):
        return f"{exc.status_code} {exc.code}"
    cause = exc.__cause__
    return type(cause).__name__ if cause is not None else type(exc).__name__
