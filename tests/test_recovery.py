"""Recovery from a Redis outage (issue 14): one socket timeout per request at most, and a
background prober that closes the breaker without any traffic.

Every test runs a private ``redis-server`` that it freezes with SIGSTOP and always thaws in a
``finally``. Assertions count the commands that waited (timed out), never elapsed time.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from _servers import RedisServer, RedisServerFactory
from _support import wait_for
from flask import Flask

from flask_fennec_cache import CachedFunction, FennecCache, RedisCache, cache
from flask_fennec_cache._guard import Guard
from flask_fennec_cache._recovery import prober

pytestmark = pytest.mark.real

CALLS = 6
#: Deadline (not a measurement) for the background prober to close the breaker.
RECOVERY_DEADLINE = 10.0


class WaitCounter:
    """Counts, per thread, the commands of one cache that waited a whole timeout."""

    def __init__(self, guard: Guard, monkeypatch: pytest.MonkeyPatch) -> None:
        self.by_thread: dict[int, int] = {}
        self._lock = threading.Lock()
        failed = guard.failed

        def counting(exc: redis.RedisError, op: str) -> None:
            if isinstance(exc, redis.TimeoutError):
                with self._lock:
                    ident = threading.get_ident()
                    self.by_thread[ident] = self.by_thread.get(ident, 0) + 1
            failed(exc, op)

        monkeypatch.setattr(guard, "failed", counting)

    def of_this_thread(self) -> int:
        return self.by_thread.get(threading.get_ident(), 0)


@pytest.fixture
def server(redis_server_factory: RedisServerFactory) -> RedisServer:
    return redis_server_factory()


@pytest.fixture
def made(server: RedisServer) -> Iterator[RedisCache]:
    # A short cool-down, so that several cool-downs pass within one test.
    made = RedisCache(server.url, prefix=f"r-{uuid.uuid4().hex[:8]}:", breaker_cooldown=0.2)
    try:
        yield made
    finally:
        made.close()


def parts(backend: RedisCache | None, count: int = CALLS) -> list[CachedFunction[[], int]]:
    """*count* cached functions, each with its own key (one cached call each)."""

    def part(index: int) -> CachedFunction[[], int]:
        @cache(ttl=600, backend=backend, key=f"part:{index}")
        def load() -> int:
            return index

        return load

    return [part(index) for index in range(count)]


def frozen(server: RedisServer, during: Callable[[], None]) -> None:
    server.pause()
    try:
        during()
    finally:
        server.resume()


def test_six_cached_calls_during_a_freeze_wait_on_one_timeout(
    server: RedisServer, made: RedisCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = parts(made)
    assert [call.lookup().hit for call in calls] == [False] * CALLS  # filled
    assert [call.lookup().hit for call in calls] == [True] * CALLS
    waits = WaitCounter(made.guard, monkeypatch)
    answers: list[int] = []
    frozen(server, lambda: answers.extend(call() for call in calls))
    assert answers == list(range(CALLS))  # every loader answered
    assert waits.of_this_thread() == 1


def test_after_one_timeout_no_thread_of_the_process_waits_again_in_that_outage(
    server: RedisServer, made: RedisCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = parts(made)
    for call in calls:
        call()
    waits = WaitCounter(made.guard, monkeypatch)

    def requests() -> None:
        for call in calls:
            call()
        for _ in range(3):
            # Past the cool-down: the breaker is half-open, but only the prober probes.
            threading.Event().wait(made.guard.breaker.cooldown * 2)
            threads = [threading.Thread(target=lambda: [call() for call in calls])]
            threads.append(threading.Thread(target=lambda: [call() for call in calls]))
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            for call in calls:
                call()

    frozen(server, requests)
    assert sum(waits.by_thread.values()) == 1


def test_a_request_with_six_cached_calls_pays_one_timeout(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = Flask(__name__)
    app.config.update(FENNEC_CACHE_URL=server.url, FENNEC_CACHE_PREFIX=f"r-{uuid.uuid4().hex[:8]}:")
    FennecCache(app)
    calls = parts(None)

    @app.get("/page")
    def page() -> dict[str, int]:
        return {"hits": sum(call.lookup().hit for call in calls)}

    client = app.test_client()
    assert client.get("/page").json == {"hits": 0}
    assert client.get("/page").json == {"hits": CALLS}
    backend: RedisCache = app.extensions["fennec_cache"]
    waits = WaitCounter(backend.guard, monkeypatch)
    replies: list[int] = []
    try:
        frozen(server, lambda: replies.extend(client.get("/page").status_code for _ in range(2)))
        assert replies == [200, 200]
        assert waits.of_this_thread() == 1
    finally:
        backend.close()


def test_the_prober_closes_the_breaker_without_any_traffic(
    server: RedisServer, made: RedisCache
) -> None:
    calls = parts(made, 1)
    calls[0]()

    def outage() -> None:
        calls[0]()
        assert made.breaker_state != "closed"

    frozen(server, outage)
    assert wait_for(lambda: made.breaker_state == "closed", timeout=RECOVERY_DEADLINE)
    assert wait_for(lambda: not prober.watching(made.guard), timeout=RECOVERY_DEADLINE)
    assert calls[0].lookup().hit


def test_the_prober_keeps_the_breaker_open_while_the_server_is_frozen(
    server: RedisServer, made: RedisCache
) -> None:
    calls = parts(made, 1)
    calls[0]()

    def outage() -> None:
        calls[0]()
        # Several cool-downs: each probe times out and opens the breaker again.
        assert not wait_for(lambda: made.breaker_state == "closed", timeout=1.0)
        assert prober.watching(made.guard)

    frozen(server, outage)
    assert wait_for(lambda: made.breaker_state == "closed", timeout=RECOVERY_DEADLINE)
