"""``soft_timeout`` / ``hard_timeout``: a caller stops waiting for a slow load (the stale value,
else ``LoaderTimeout``) and the load finishes in the background and stores its result.

Every loader here blocks on a ``threading.Event``: the timeouts are hit because the load
cannot finish until the test lets it, never because of how fast the machine is."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from typing import Any, cast

import pytest
from _support import HANG, CacheFactory, wait_for

from flask_fennec_cache import (
    MISSING,
    CacheAside,
    ConfigurationError,
    FennecCacheError,
    LoaderTimeout,
    RedisCache,
    cache,
)
from flask_fennec_cache.serializers import decode


class Gate:
    """A loader that says when it started and returns only once it is opened."""

    def __init__(self, value: Any = "new", error: Exception | None = None) -> None:
        self.value = value
        self.error = error
        self.started = threading.Event()
        self.opened = threading.Event()
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        self.started.set()
        assert self.opened.wait(HANG)
        if self.error is not None:
            raise self.error
        return self.value


def raw(backend: RedisCache, key: str) -> Any:
    data = backend.client.get(backend.prefix + key)
    return MISSING if data is None else decode(cast(bytes, data))


def stale(backend: RedisCache, key: str) -> bool:
    return backend.lookup(key) is MISSING and raw(backend, key) is not MISSING


def test_loader_timeout_is_a_fennec_error_and_a_timeout_error() -> None:
    assert issubclass(LoaderTimeout, FennecCacheError)
    assert issubclass(LoaderTimeout, TimeoutError)


def test_past_hard_timeout_without_stale_the_caller_gets_loader_timeout(
    backend: RedisCache,
) -> None:
    gate = Gate("loaded")
    aside = CacheAside(backend, ttl=300, hard_timeout=0.05)
    try:
        with pytest.raises(LoaderTimeout, match="hard_timeout"):
            aside.get("k", gate)
    finally:
        gate.opened.set()
    assert wait_for(lambda: backend.get("k") == "loaded", timeout=HANG)  # stored later
    assert aside.lookup("k", gate) == ("loaded", True, "k")
    assert gate.calls == 1


def test_past_soft_timeout_the_stale_value_is_served(backend: RedisCache) -> None:
    # Past its freshness, kept for the fail-safe only: a caller loads it, and waits for that
    # load at most soft_timeout (within stale_ttl it would be refreshed in the background).
    aside = CacheAside(backend, ttl=0.2, stale_if_error=300, soft_timeout=0.05)
    assert CacheAside(backend, ttl=0.2, stale_if_error=300).get("k", lambda: "old") == "old"
    assert wait_for(lambda: stale(backend, "k"), timeout=HANG)
    gate = Gate("new")
    try:
        assert aside.get("k", gate) == "old"
        assert gate.started.is_set()  # this caller ran the load, and stopped waiting for it
    finally:
        gate.opened.set()
    assert wait_for(lambda: backend.get("k") == "new", timeout=HANG)


def test_past_hard_timeout_a_fail_safe_value_is_served(backend: RedisCache) -> None:
    aside = CacheAside(backend, ttl=0.2, stale_if_error=300, hard_timeout=0.05)
    # Filled without the timeout: how fast a quick load is must not matter here.
    assert CacheAside(backend, ttl=0.2, stale_if_error=300).get("k", lambda: "old") == "old"
    assert wait_for(lambda: stale(backend, "k"), timeout=HANG)
    gate = Gate("new")
    try:
        assert aside.get("k", gate) == "old"
    finally:
        gate.opened.set()
    assert wait_for(lambda: backend.get("k") == "new", timeout=HANG)


def test_soft_timeout_without_a_stale_value_waits_for_the_load(backend: RedisCache) -> None:
    gate = Gate("loaded")
    aside = CacheAside(backend, ttl=300, soft_timeout=0.01)
    got: list[Any] = []
    caller = threading.Thread(target=lambda: got.append(aside.get("k", gate)))
    caller.start()
    try:
        assert gate.started.wait(HANG)
        assert caller.is_alive()  # the load cannot have finished: the caller still waits
    finally:
        gate.opened.set()
        caller.join(HANG)
    assert got == ["loaded"]


def test_a_failed_background_load_is_counted_and_logged(
    backend: RedisCache, caplog: pytest.LogCaptureFixture
) -> None:
    gate = Gate(error=OSError("the database went away"))
    aside = CacheAside(backend, ttl=300, hard_timeout=0.05)
    key = f"k-{uuid.uuid4().hex}"  # the log says each key once per 10 s, in every test
    backend.reset_stats()
    with caplog.at_level(logging.ERROR, logger="flask_fennec_cache"):
        try:
            with pytest.raises(LoaderTimeout):
                aside.get(key, gate)
        finally:
            gate.opened.set()
        assert wait_for(lambda: "the database went away" in caplog.text, timeout=HANG)
    assert key in caplog.text
    assert backend.get_stats()["errors"] >= 1
    assert wait_for(lambda: raw(backend, key) is MISSING, timeout=HANG)  # its lease is gone


def test_a_load_within_its_timeout_answers_as_usual(backend: RedisCache) -> None:
    aside = CacheAside(backend, ttl=300, soft_timeout=HANG, hard_timeout=HANG)
    assert aside.get("k", lambda: "quick") == "quick"
    with pytest.raises(KeyError):
        aside.get("other", lambda: cast("dict[str, str]", {})["missing"])


@pytest.mark.real
def test_a_waiter_for_another_process_s_load_stops_at_hard_timeout(
    real_caches: CacheFactory,
) -> None:
    here, there = real_caches(), real_caches()
    gate = Gate("loaded")
    loading = threading.Thread(target=lambda: CacheAside(here, ttl=300).get("k", gate))
    loading.start()
    try:
        assert gate.started.wait(HANG)
        with pytest.raises(LoaderTimeout):
            CacheAside(there, ttl=300, hard_timeout=0.05).get("k", lambda: "second load")
    finally:
        gate.opened.set()
        loading.join(HANG)
    assert there.get("k") == "loaded"


def test_coroutine_functions_time_out_too(backend: RedisCache) -> None:
    release = threading.Event()
    calls: list[int] = []

    @cache(ttl=300, backend=backend, hard_timeout=0.05)
    async def slow(n: int) -> int:
        calls.append(n)
        await asyncio.get_running_loop().run_in_executor(None, release.wait, HANG)
        return n * 10

    async def main() -> int:
        try:
            with pytest.raises(LoaderTimeout):
                await slow(4)
        finally:
            release.set()
        loop = asyncio.get_running_loop()
        stored = lambda: backend.get(slow.cache_key(4)) == 40  # noqa: E731
        assert await loop.run_in_executor(None, wait_for, stored, HANG)
        return await slow(4)

    assert asyncio.run(main()) == 40
    assert calls == [4]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"soft_timeout": 0}, "soft_timeout"),
        ({"hard_timeout": -1}, "hard_timeout"),
        ({"soft_timeout": 2, "hard_timeout": 1}, "soft_timeout"),
    ],
)
def test_bad_timeouts_are_configuration_errors(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        cache(ttl=10, **options)
