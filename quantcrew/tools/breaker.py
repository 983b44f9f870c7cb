"""A circuit breaker for calls to the ML server.

::

    closed --(failure_threshold consecutive server faults)--> open
    open   --(reset_timeout_s elapsed)---------------------> half_open
    half_open: ONE trial call goes through, others are refused
      trial succeeds (or the server answers with a 4xx) -> closed
      trial fails with a server fault                   -> open again, timer restarted
    trip(): open at once (a client with several servers moving away from a faulty one)

Only server faults count (``quantcrew.tools.errors.is_server_fault``): a 4xx reply proves
the server is up and answering, so it counts as a success.

Each opening from closed is kept as a :class:`BreakerTrip` until the client reports it to the server
(``POST /v1/monitor/events``, read by the server's alert rules): :meth:`CircuitBreaker.take_trips`
hands them over, :meth:`CircuitBreaker.return_trips` takes back those that could not be sent.

State changes happen under a ``threading.Lock`` held for a few attribute updates and never across I/O, so one breaker
can be shared by threads and by asyncio tasks (nothing in it awaits).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from quantcrew.tools.errors import CircuitOpenError, MLClientError

__all__ = ["BreakerState", "BreakerTrip", "CircuitBreaker"]

_MAX_TRIPS = 100
"""Openings kept unreported at most (the oldest are dropped first)."""


class BreakerState(StrEnum):
    """Where the breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerTrip:
    """One opening of the breaker, to report to the server.

    Attributes:
        at: When it opened (UTC wall clock).
        failures: Consecutive server faults that opened it.
        event_id: Made once, so that a report sent twice counts once on the server.
    """

    at: datetime
    failures: int
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)


class CircuitBreaker:
    """Stops calling a server that keeps failing, and tries it again after a pause.

    Args:
        failure_threshold: Consecutive server faults that open the breaker.
        reset_timeout_s: Seconds an open breaker waits before letting one trial call through.
        clock: Monotonic clock in seconds; tests pass a fake one.

    Raises:
        ValueError: ``failure_threshold`` below 1 or ``reset_timeout_s`` not positive.

    Example:
        >>> breaker = CircuitBreaker(failure_threshold=3, reset_timeout_s=30.0)
        >>> with breaker.guard():
        ...     pass  # the call; an MLClientError raised here is booked by its kind
    """

    def __init__(
        self,
        failure_threshold: int = 3,
        reset_timeout_s: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        if not reset_timeout_s > 0:
            raise ValueError(f"reset_timeout_s must be positive, got {reset_timeout_s}")
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None  # set while open or half-open
        self._trial_in_flight = False
        self._trips: deque[BreakerTrip] = deque(maxlen=_MAX_TRIPS)

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose pause is over reads as half-open."""
        with self._lock:
            return self._state_locked()

    @property
    def failures(self) -> int:
        """Consecutive server faults counted so far."""
        with self._lock:
            return self._failures

    def before_call(self) -> bool:
        """Ask to make a call; in half-open state this claims the single trial slot.

        Every successful ``before_call`` must be followed by exactly one of
        ``record_success``, ``record_failure`` or ``release``, passing back what it
        returned (``guard`` does all this).

        Returns:
            True when this call is the half-open trial, False for an ordinary call.

        Raises:
            CircuitOpenError: the breaker is open, or half-open with its trial in flight.
        """
        with self._lock:
            state = self._state_locked()
            if state is BreakerState.CLOSED:
                return False
            if state is BreakerState.HALF_OPEN and not self._trial_in_flight:
                self._trial_in_flight = True
                return True
            retry_in = self._retry_in_locked()
            failures = self._failures
        if state is BreakerState.HALF_OPEN:
            message = "ML server circuit breaker is half-open and its one trial call is in flight; try again shortly"
        else:
            message = (
                f"ML server circuit breaker is open after {failures} consecutive server faults; "
                f"it lets a trial call through in {retry_in:.1f} s"
            )
        raise CircuitOpenError(message, retry_in_s=retry_in, failures=failures)

    def record_success(self, trial: bool = False) -> None:
        """Book a call that got an answer from the server (2xx, or a 4xx)."""
        with self._lock:
            if self._opened_at is not None and not trial:
                return  # a straggler that started before the breaker opened: the pause stands
            self._failures = 0
            self._opened_at = None
            self._trial_in_flight = False

    def record_failure(self, trial: bool = False) -> None:
        """Book a server fault; opens the breaker at the threshold, re-opens after a failed trial."""
        with self._lock:
            if trial:  # the trial failed: open for another full pause
                self._failures += 1
                self._opened_at = self._clock()
                self._trial_in_flight = False
            elif self._opened_at is None:
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    self._opened_at = self._clock()
                    self._trips.append(BreakerTrip(datetime.now(UTC), self._failures))
            # else: a straggler failing after the breaker opened changes nothing

    def release(self, trial: bool = False) -> None:
        """End a call that proved nothing (cancelled, or failed on the client side)."""
        if trial:
            with self._lock:
                self._trial_in_flight = False

    @property
    def retry_in_s(self) -> float:
        """Seconds until an open breaker lets a trial call through (0 when closed or half-open)."""
        with self._lock:
            return self._retry_in_locked() if self._state_locked() is BreakerState.OPEN else 0.0

    @property
    def pending_trips(self) -> int:
        """Openings not yet handed over for reporting."""
        return len(self._trips)

    def take_trips(self) -> list[BreakerTrip]:
        """Hand over the openings not yet reported, oldest first (they are the caller's now)."""
        with self._lock:
            trips = list(self._trips)
            self._trips.clear()
        return trips

    def return_trips(self, trips: Iterable[BreakerTrip]) -> None:
        """Take back openings that could not be reported, ahead of any newer ones."""
        with self._lock:
            newer = list(self._trips)
            self._trips.clear()
            self._trips.extend([*trips, *newer][-_MAX_TRIPS:])

    def trip(self) -> None:
        """Open now, whatever the count: a client with another server to go to stops calling this one at its
        first fault (``quantcrew.tools.servers``). An opening from closed is kept for reporting; an open or
        half-open breaker starts a new full pause."""
        with self._lock:
            if self._opened_at is None:
                self._failures += 1
                self._trips.append(BreakerTrip(datetime.now(UTC), self._failures))
            self._opened_at = self._clock()
            self._trial_in_flight = False

    def reset(self) -> None:
        """Close the breaker and forget all failures."""
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial_in_flight = False

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Wrap one call: refuse it when open, then book its outcome.

        A server fault (``MLClientError`` with ``server_fault``) is a failure; another
        ``MLClientError`` (a 4xx) or a normal exit is a success; anything else (a bug,
        ``asyncio.CancelledError``, ``KeyboardInterrupt``) books nothing but frees the
        half-open trial slot. Usable around ``await`` since it holds no lock while open.

        Raises:
            CircuitOpenError: from ``before_call``, without running the block.
        """
        trial = self.before_call()
        try:
            yield
        except MLClientError as exc:
            if exc.server_fault:
                self.record_failure(trial)
            else:
                self.record_success(trial)
            raise
        except BaseException:
            self.release(trial)
            raise
        self.record_success(trial)

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(state={self.state.value!r}, failures={self.failures}, "
            f"failure_threshold={self.failure_threshold}, reset_timeout_s={self.reset_timeout_s})"
        )

    def _state_locked(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._trial_in_flight or self._clock() - self._opened_at >= self.reset_timeout_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def _retry_in_locked(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.reset_timeout_s - self._clock())
