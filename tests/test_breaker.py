"""The circuit breaker, driven by an injected clock (no sleeping)."""

from __future__ import annotations

import threading

import pytest

from flask_fennec_cache._breaker import CircuitBreaker


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
    return CircuitBreaker(threshold=3, cooldown=10.0, clock=clock)


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.threshold):
        breaker.failure()


def test_starts_closed_and_allows(breaker: CircuitBreaker) -> None:
    assert breaker.state == "closed"
    assert breaker.allow() is True


def test_opens_after_threshold_consecutive_failures(breaker: CircuitBreaker) -> None:
    breaker.failure()
    breaker.failure()
    assert breaker.state == "closed"
    assert breaker.allow() is True
    breaker.failure()
    assert breaker.state == "open"
    assert breaker.allow() is False


def test_a_success_resets_the_failure_count(breaker: CircuitBreaker) -> None:
    for _ in range(5):
        breaker.failure()
        breaker.failure()
        breaker.success()
    assert breaker.state == "closed"
    assert breaker.allow() is True


def test_stays_open_for_the_whole_cooldown(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(9.99)
    assert breaker.state == "open"
    assert breaker.allow() is False


def test_after_the_cooldown_exactly_one_probe_is_allowed(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    trip(breaker)
    clock.advance(10.0)
    assert breaker.state == "half-open"
    assert breaker.allow() is True
    assert breaker.allow() is False
    assert breaker.allow() is False


def test_a_successful_probe_closes(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(10.0)
    assert breaker.allow() is True
    breaker.success()
    assert breaker.state == "closed"
    assert all(breaker.allow() for _ in range(5))
    breaker.failure()
    assert breaker.state == "closed"  # the count started again from zero


def test_a_failed_probe_reopens_for_another_cooldown(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    trip(breaker)
    clock.advance(10.0)
    assert breaker.allow() is True
    breaker.failure()  # a single failure is enough while not closed
    assert breaker.state == "open"
    assert breaker.allow() is False
    clock.advance(9.0)
    assert breaker.allow() is False
    clock.advance(1.0)
    assert breaker.allow() is True


def test_a_probe_that_never_reports_expires(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(10.0)
    assert breaker.allow() is True
    clock.advance(5.0)
    assert breaker.allow() is False
    clock.advance(5.0)
    assert breaker.allow() is True


def test_threshold_one_opens_on_the_first_failure(clock: FakeClock) -> None:
    breaker = CircuitBreaker(threshold=1, cooldown=1.0, clock=clock)
    breaker.failure()
    assert breaker.state == "open"


def test_concurrent_callers_get_one_probe(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(10.0)
    results: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def call() -> None:
        start.wait()
        allowed = breaker.allow()
        with lock:
            results.append(allowed)

    threads = [threading.Thread(target=call) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 1


def test_after_fork_keeps_state_with_a_fresh_lock(breaker: CircuitBreaker) -> None:
    trip(breaker)
    old_lock = breaker._lock
    old_lock.acquire()  # as if another thread held it at fork time
    try:
        breaker._after_fork()
        assert breaker._lock is not old_lock
        breaker.failure()  # would deadlock on the inherited lock
        assert breaker.state == "open"
    finally:
        old_lock.release()


def test_a_timeout_opens_at_once(breaker: CircuitBreaker) -> None:
    breaker.timed_out()
    assert breaker.state == "open"
    assert breaker.allow() is False


def test_after_a_timeout_no_caller_is_the_probe(breaker: CircuitBreaker, clock: FakeClock) -> None:
    breaker.timed_out()
    clock.advance(10.0)
    assert breaker.state == "half-open"
    assert breaker.allow() is False  # a caller would wait on a server that may still be frozen
    assert breaker.allow_probe() is True  # the background prober's turn
    assert breaker.allow_probe() is False  # one probe per cool-down
    breaker.failure()  # its probe failed: open for another cool-down, callers still kept out
    clock.advance(10.0)
    assert breaker.allow() is False
    assert breaker.allow_probe() is True
    breaker.success()
    assert breaker.state == "closed"
    assert breaker.allow() is True


def test_refused_connections_still_need_the_threshold_and_let_callers_probe(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    breaker.failure()
    assert breaker.state == "closed"
    trip(breaker)
    clock.advance(10.0)
    assert breaker.allow() is True  # a refused connection answers at once: a caller may probe


def test_a_caller_probe_that_times_out_leaves_the_probing_to_the_prober(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    trip(breaker)
    clock.advance(10.0)
    assert breaker.allow() is True
    breaker.timed_out()
    clock.advance(10.0)
    assert breaker.allow() is False
    assert breaker.allow_probe() is True
