"""``stale_if_error``: a load that raises (a view answering 5xx) serves the stale value, retried
at most about once a second per key across processes; counted, logged once per key."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
from _support import HANG, CacheFactory, wait_for
from flask import Flask

from flask_fennec_cache import (
    MISSING,
    CacheAside,
    ConfigurationError,
    FennecCache,
    RedisCache,
    cache,
)
from flask_fennec_cache import loading as loading_module
from flask_fennec_cache._ratelog import RateLimitedLog
from flask_fennec_cache.serializers import decode


class DatabaseDown(Exception):
    pass


class Source:
    """A loader that answers its value until it is told to fail."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.failing = False
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        if self.failing:
            raise DatabaseDown("connection refused")
        return self.value


def raw(backend: RedisCache, key: str) -> Any:
    data = backend.client.get(backend.prefix + key)
    return MISSING if data is None else decode(cast(bytes, data))


def stale(backend: RedisCache, key: str) -> bool:
    """Past its freshness (plain reads miss it) while Redis still holds it."""
    return backend.lookup(key) is MISSING and raw(backend, key) is not MISSING


def throttle(backend: RedisCache, key: str) -> str:
    return f"{backend.prefix}__fennec__:retry:{key}"


def allow_retry(backend: RedisCache, key: str) -> None:
    """Let the next caller try the loader again (as once the second of the last try is over)."""
    backend.client.delete(throttle(backend, key))


@pytest.fixture
def quiet_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The fail-safe log's clock, held still (so its 10 s window is not a race)."""
    now = [0.0]
    monkeypatch.setattr(loading_module, "_log", RateLimitedLog(clock=lambda: now[0]))
    return now


def test_a_load_that_raises_serves_the_stale_value(backend: RedisCache) -> None:
    source = Source("v1")
    aside = CacheAside(backend, ttl=0.2, stale_if_error=300)
    assert aside.get("k", source) == "v1"
    assert int(backend.client.pttl(backend.prefix + "k")) > 200_000  # kept for the fail-safe
    assert wait_for(lambda: stale(backend, "k"), timeout=HANG)
    source.failing = True
    backend.reset_stats()
    assert aside.lookup("k", source) == ("v1", True, "k")
    assert source.calls == 2
    stats = backend.get_stats()
    assert (stats["fail_safe_hits"], stats["hits"]) == (1, 1)
    assert stale(backend, "k")  # still kept for the next failure

    allow_retry(backend, "k")
    source.failing = False
    source.value = "v2"
    assert aside.lookup("k", source) == ("v2", False, "k")
    assert backend.get("k") == "v2"


def test_without_a_stale_value_the_exception_propagates(backend: RedisCache) -> None:
    source = Source("v")
    source.failing = True
    aside = CacheAside(backend, ttl=60, stale_if_error=300)
    with pytest.raises(DatabaseDown):
        aside.get("never-filled", source)
    assert raw(backend, "never-filled") is MISSING


def test_a_value_older_than_stale_if_error_is_not_served(backend: RedisCache) -> None:
    source = Source("v1")
    aside = CacheAside(backend, ttl=0.1, stale_if_error=0.2)
    assert aside.get("k", source) == "v1"
    assert wait_for(lambda: raw(backend, "k") is MISSING, timeout=HANG)  # Redis dropped it
    source.failing = True
    with pytest.raises(DatabaseDown):
        aside.get("k", source)


def test_a_fresh_value_is_served_without_a_load(backend: RedisCache) -> None:
    source = Source("v1")
    aside = CacheAside(backend, ttl=300, stale_if_error=300)
    assert aside.get("k", source) == "v1"
    source.failing = True
    assert aside.get("k", source) == "v1"
    assert source.calls == 1


@pytest.mark.real
def test_the_retry_is_throttled_across_processes(
    real_caches: CacheFactory, quiet_clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    here, there = real_caches(), real_caches()  # two processes on one Redis
    source = Source({"id": 1})

    @cache(ttl=0.2, backend=here, key="user:{n}", stale_if_error=300)
    def user_here(n: int) -> Any:
        return source(n)

    @cache(ttl=0.2, backend=there, key="user:{n}", stale_if_error=300)
    def user_there(n: int) -> Any:
        return source(n)

    assert user_here(1) == {"id": 1}
    assert wait_for(lambda: stale(here, "user:1"), timeout=HANG)
    source.failing = True
    here.reset_stats()
    with caplog.at_level(logging.WARNING, logger="flask_fennec_cache"):
        assert user_here(1) == {"id": 1}
        assert source.calls == 2
        # The try took this second's slot in Redis: one short key, gone by itself.
        assert 0 < int(here.client.pttl(throttle(here, "user:1"))) <= 1000
        here.client.pexpire(throttle(here, "user:1"), 60_000)  # hold "this second" still
        for _ in range(5):
            assert user_there(1) == {"id": 1}  # another process: stale, no load
            assert user_here(1) == {"id": 1}
        assert source.calls == 2
        allow_retry(here, "user:1")
        assert user_there(1) == {"id": 1}  # the next second: one more try, failing too
        assert source.calls == 3
    here.get_stats()  # sends this cache's counts now rather than within the second
    assert there.get_stats()["fail_safe_hits"] == 12  # shared by both processes
    warnings = [r for r in caplog.records if "user:1" in r.getMessage()]
    assert len(warnings) == 1  # once per key per 10 s (both caches log in this process)
    assert "DatabaseDown: connection refused" in warnings[0].getMessage()

    source.failing = False
    source.value = {"id": 1, "name": "back"}
    allow_retry(here, "user:1")
    assert user_there(1) == {"id": 1, "name": "back"}
    assert user_here.lookup(1).value == {"id": 1, "name": "back"}
    assert user_here.lookup(1).hit


def test_a_failed_refresh_in_the_stale_window_keeps_the_stale_value(backend: RedisCache) -> None:
    source = Source("v1")
    aside = CacheAside(backend, ttl=0.2, stale_ttl=120, stale_if_error=300)
    assert aside.get("k", source) == "v1"
    assert int(backend.client.pttl(backend.prefix + "k")) > 200_000  # the longer of the two
    assert wait_for(lambda: stale(backend, "k"), timeout=HANG)
    source.failing = True
    backend.reset_stats()
    assert aside.get("k", source) == "v1"  # served stale; the refresh runs in the background
    assert wait_for(lambda: source.calls == 2, timeout=HANG)
    assert wait_for(lambda: backend.get_stats()["fail_safe_hits"] == 1, timeout=HANG)
    assert backend.get_stats()["hits"] == 1  # the one reader, not the background refresh
    backend.client.pexpire(throttle(backend, "k"), 60_000)  # hold "this second" still
    assert aside.get("k", source) == "v1"  # throttled: a plain stale serve, no refresh
    assert source.calls == 2


def test_coroutine_functions_are_fail_safe(backend: RedisCache) -> None:
    source = Source(7)

    @cache(ttl=0.2, backend=backend, stale_if_error=300)
    async def score(n: int) -> int:
        return cast(int, source(n))

    assert asyncio.run(score(1)) == 7
    assert wait_for(lambda: stale(backend, score.cache_key(1)), timeout=HANG)
    source.failing = True
    assert asyncio.run(score(1)) == 7


@pytest.mark.parametrize("value", [0, -1, float("nan"), "10", True])
def test_a_bad_stale_if_error_is_a_configuration_error(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="stale_if_error"):
        cache(ttl=10, stale_if_error=value)
    with pytest.raises(ConfigurationError, match="stale_if_error"):
        CacheAside(cast(RedisCache, None), ttl=10, stale_if_error=value)


# -- views -------------------------------------------------------------------------------------


@pytest.fixture
def view_app(cache_factory: CacheFactory) -> Iterator[Flask]:
    app = Flask(f"fail_safe_{uuid.uuid4().hex[:8]}")
    app.config.update(
        TESTING=True,
        FENNEC_CACHE_URL=cache_factory.url,
        FENNEC_CACHE_PREFIX=f"fs-{uuid.uuid4().hex[:8]}:",
    )
    FennecCache(app)
    yield app
    app.extensions["fennec_cache"].close()


def view_keys(backend: RedisCache) -> list[str]:
    names = (name.decode() for name in backend.client.scan_iter(match=backend.prefix + "*"))
    return [n[len(backend.prefix) :] for n in names if "__fennec__:" not in n]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_view_answering_5xx_serves_its_stale_response(view_app: Flask, status: int) -> None:
    backend: RedisCache = view_app.extensions["fennec_cache"]
    answer: dict[str, Any] = {"status": 200, "body": "the catalogue"}

    @view_app.get("/catalogue/<int:page>")
    @cache(ttl=0.2, stale_if_error=300)
    def catalogue(page: int) -> Any:
        return answer["body"], answer["status"]

    client = view_app.test_client()
    assert client.get("/catalogue/1").headers["X-Cache"] == "MISS"
    [key] = view_keys(backend)
    assert wait_for(lambda: stale(backend, key), timeout=HANG)
    answer.update(status=status, body="upstream down")
    served = client.get("/catalogue/1")
    assert (served.status_code, served.text, served.headers["X-Cache"]) == (
        200,
        "the catalogue",
        "HIT",
    )
    assert backend.get_stats()["fail_safe_hits"] == 1

    # Without a stale response the error is answered as it is, and not stored.
    failed = client.get("/catalogue/2")
    assert (failed.status_code, failed.text, failed.headers["X-Cache"]) == (
        status,
        "upstream down",
        "BYPASS",
    )
    assert failed.headers["X-Cache-Bypass"] == "status"
    assert view_keys(backend) == [key]


def test_a_view_s_other_errors_are_not_replaced(view_app: Flask) -> None:
    backend: RedisCache = view_app.extensions["fennec_cache"]
    answer: dict[str, Any] = {"status": 200}

    @view_app.get("/item")
    @cache(ttl=0.2, stale_if_error=300)
    def item() -> Any:
        return "an item", answer["status"]

    client = view_app.test_client()
    assert client.get("/item").status_code == 200
    [key] = view_keys(backend)
    assert wait_for(lambda: stale(backend, key), timeout=HANG)
    answer["status"] = 404  # the item is gone: that is an answer, not a failure
    assert client.get("/item").status_code == 404


@pytest.mark.real
def test_concurrent_callers_in_the_fail_safe_window_make_one_load(
    real_caches: CacheFactory,
) -> None:
    here, there = real_caches(), real_caches()
    assert CacheAside(here, ttl=0.2, stale_if_error=300).get("k", lambda: "v1") == "v1"
    assert wait_for(lambda: stale(here, "k"), timeout=HANG)
    started, opened = threading.Event(), threading.Event()
    calls: list[int] = []

    def failing_slowly() -> str:
        calls.append(1)
        started.set()
        assert opened.wait(HANG)
        raise DatabaseDown("connection refused")

    got: list[str] = []

    def read(backend: RedisCache) -> None:
        got.append(CacheAside(backend, ttl=0.2, stale_if_error=300).get("k", failing_slowly))

    leader = threading.Thread(target=read, args=(here,))
    leader.start()
    assert started.wait(HANG)
    here.client.pexpire(throttle(here, "k"), 60_000)  # the whole test is within "this second"
    others = [threading.Thread(target=read, args=(b,)) for b in (here, here, there, there)]
    for thread in others:
        thread.start()
    opened.set()
    for thread in (leader, *others):
        thread.join(HANG)
    assert got == ["v1"] * 5  # same process: shared the load; the other: waited, then stale
    assert calls == [1]
