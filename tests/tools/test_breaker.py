"""Circuit breaker: closed -> open -> half-open -> closed/open, on a fake clock."""

from __future__ import annotations

import contextlib
import threading

import pytest

from quantcrew.tools.breaker import BreakerState, CircuitBreaker
from quantcrew.tools.errors import (
    CircuitOpenError,
    InvalidModelInput,
    MLServerFault,
    MLServerUnavailable,
    ModelNotReady,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=3, reset_timeout_s=10.0, clock=clock)


def _state(breaker: CircuitBreaker) -> BreakerState:
    # Read through a call: mypy narrows a property across statements and would flag the next read.
    return breaker.state


def _fail(breaker: CircuitBreaker, exc: Exception | None = None) -> None:
    with pytest.raises(type(exc) if exc else MLServerUnavailable), breaker.guard():
        raise exc if exc is not None else MLServerUnavailable("down")


def _open(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        _fail(breaker)
    assert breaker.state is BreakerState.OPEN


def test_breaker_starts_closed(breaker: CircuitBreaker) -> None:
    assert breaker.state is BreakerState.CLOSED
    assert breaker.failures == 0
    with breaker.guard():
        pass
    assert breaker.state is BreakerState.CLOSED


def test_breaker_below_threshold_stays_closed(breaker: CircuitBreaker) -> None:
    _fail(breaker)
    _fail(breaker)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.failures == 2


def test_breaker_opens_at_threshold_and_rejects_without_running(breaker: CircuitBreaker, clock: FakeClock) -> None:
    _open(breaker)
    ran = False
    clock.advance(2.5)
    with pytest.raises(CircuitOpenError) as info, breaker.guard():
        ran = True
    assert not ran
    assert info.value.failures == 3
    assert info.value.retry_in_s == pytest.approx(7.5)
    assert "open after 3 consecutive server faults" in str(info.value)
    assert "7.5 s" in str(info.value)


def test_breaker_success_resets_consecutive_count(breaker: CircuitBreaker) -> None:
    _fail(breaker)
    _fail(breaker)
    with breaker.guard():
        pass
    assert breaker.failures == 0
    _fail(breaker)
    _fail(breaker)
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize(
    "exc",
    [
        MLServerUnavailable("down"),
        MLServerFault("boom", status_code=500, code="internal_error"),
        ModelNotReady("loading", status_code=503, code="not_ready"),
    ],
)
def test_breaker_counts_every_server_fault(breaker: CircuitBreaker, exc: Exception) -> None:
    for _ in range(3):
        _fail(breaker, exc)
    assert breaker.state is BreakerState.OPEN


def test_breaker_4xx_counts_as_success(breaker: CircuitBreaker) -> None:
    bad_input = InvalidModelInput("nan in close", status_code=422, code="invalid_input")
    for _ in range(10):
        _fail(breaker, bad_input)
    assert breaker.state is BreakerState.CLOSED
    _fail(breaker)
    _fail(breaker)
    _fail(breaker, bad_input)  # the server answered: the streak of faults is broken
    assert breaker.failures == 0


def test_breaker_non_client_exception_books_nothing(breaker: CircuitBreaker) -> None:
    _fail(breaker)
    with pytest.raises(KeyError), breaker.guard():
        raise KeyError("bug")
    assert breaker.failures == 1


def test_breaker_half_opens_after_reset_timeout(breaker: CircuitBreaker, clock: FakeClock) -> None:
    _open(breaker)
    clock.advance(9.99)
    assert breaker.state is BreakerState.OPEN
    clock.advance(0.01)
    assert _state(breaker) is BreakerState.HALF_OPEN


def test_breaker_half_open_lets_exactly_one_trial_through(breaker: CircuitBreaker, clock: FakeClock) -> None:
    _open(breaker)
    clock.advance(10.0)
    assert breaker.before_call() is True  # the trial
    with pytest.raises(CircuitOpenError) as info:
        breaker.before_call()
    assert "half-open" in str(info.value)
    assert breaker.state is BreakerState.HALF_OPEN


def test_breaker_trial_success_closes(breaker: CircuitBreaker, clock: FakeClock) -> None:
    _open(breaker)
    clock.advance(10.0)
    with breaker.guard():
        pass
    assert breaker.state is BreakerState.CLOSED
    assert breaker.failures == 0
    with breaker.guard():  # ordinary calls flow again
        pass


def test_breaker_trial_4xx_closes(breaker: CircuitBreaker, clock: FakeClock) -> None:
    _open(breaker)
    clock.advance(10.0)
    _fail(breaker, InvalidModelInput("bad", status_code=422, code="invalid_input"))
    assert breaker.state is BreakerState.CLOSED


def test_breaker_trial_failure_reopens_for_full_timeout(breaker: CircuitBreaker, clock: FakeClock) -> None:
    _open(breaker)
    clock.advance(15.0)
    _fail(breaker)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError) as info:
        breaker.before_call()
    assert info.value.retry_in_s == pytest.approx(10.0)
    clock.advance(10.0)
    assert _state(breaker) is BreakerState.HALF_OPEN


def test_breaker_cancelled_trial_frees_the_slot(breaker: CircuitBreaker, clock: FakeClock) -> None:
    _open(breaker)
    clock.advance(10.0)
    with pytest.raises(KeyboardInterrupt), breaker.guard():
        raise KeyboardInterrupt
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.before_call() is True  # a new trial may go


def test_breaker_straggler_results_while_open_change_nothing(breaker: CircuitBreaker, clock: FakeClock) -> None:
    assert breaker.before_call() is False  # a slow call starts while closed
    _open(breaker)
    breaker.record_success(False)  # ...and ends after the breaker opened
    assert breaker.state is BreakerState.OPEN
    clock.advance(5.0)
    breaker.record_failure(False)
    clock.advance(5.0)
    assert _state(breaker) is BreakerState.HALF_OPEN  # the pause was not restarted


def test_breaker_reset_closes(breaker: CircuitBreaker) -> None:
    _open(breaker)
    breaker.reset()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.failures == 0


@pytest.mark.parametrize(("threshold", "timeout"), [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_breaker_invalid_config_raises(threshold: int, timeout: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=threshold, reset_timeout_s=timeout)


def test_breaker_threshold_one_opens_on_first_fault(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=1.0, clock=clock)
    _fail(breaker)
    assert breaker.state is BreakerState.OPEN


def test_breaker_concurrent_failures_are_all_counted() -> None:
    breaker = CircuitBreaker(failure_threshold=10**9, reset_timeout_s=1.0)
    def hammer() -> None:
        for _ in range(2000):
            breaker.record_failure()

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert breaker.failures == 16_000


def test_breaker_concurrent_half_open_admits_one_trial(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=1.0, clock=clock)
    breaker.record_failure()
    clock.advance(1.0)
    admitted: list[bool] = []
    barrier = threading.Barrier(16)

    def attempt() -> None:
        barrier.wait()
        with contextlib.suppress(CircuitOpenError):
            admitted.append(breaker.before_call())

    threads = [threading.Thread(target=attempt) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert admitted == [True]


def test_breaker_repr_shows_state(breaker: CircuitBreaker) -> None:
    assert "state='closed'" in repr(breaker)
