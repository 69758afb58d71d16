"""A decorated function's ``.refresh(*args, **kwargs)``: load now, store through a lease, return."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any, cast

import pytest
from _servers import find_free_port
from _support import HANG, CacheFactory
from flask import Flask

from flask_fennec_cache import (
    MISSING,
    CacheResult,
    FennecCache,
    FennecCacheError,
    RedisCache,
    cache,
)
from flask_fennec_cache.serializers import Lease, decode


def raw(backend: RedisCache, key: str) -> Any:
    data = backend.client.get(backend.prefix + key)
    return MISSING if data is None else decode(cast(bytes, data))


def test_refresh_reloads_a_cached_entry_and_returns_the_new_value(backend: RedisCache) -> None:
    source = {"price": 10}

    @cache(ttl=300, backend=backend)
    def price(item: str) -> int:
        return source["price"]

    assert price("a") == 10
    source["price"] = 12
    assert price("a") == 10  # cached
    assert price.refresh("a") == 12
    assert price.lookup("a") == (12, True, price.cache_key("a"))
    assert price.refresh(item="a") == 12  # keyword spelling: the same entry


def test_refresh_fills_an_empty_entry_and_keeps_the_policy(backend: RedisCache) -> None:
    @cache(ttl=300, backend=backend, stale_ttl=60, tags=("t",))
    def tagged(n: int) -> int:
        return n + 1

    assert tagged.refresh(1) == 2
    assert tagged.lookup(1).hit
    assert int(backend.client.pttl(backend.prefix + tagged.cache_key(1))) > 300_000  # + stale
    backend.invalidate_tags("t")
    assert not tagged.lookup(1).hit


def test_a_bound_method_refreshes_its_own_instance_s_entry(backend: RedisCache) -> None:
    class Account:
        def __init__(self, name: str) -> None:
            self.name = name
            self.balance = 1

        def __repr__(self) -> str:
            return f"Account({self.name!r})"

        @cache(ttl=300, backend=backend)
        def total(self, scale: int) -> int:
            return self.balance * scale

    alice, bob = Account("alice"), Account("bob")
    assert (alice.total(10), bob.total(10)) == (10, 10)
    alice.balance = bob.balance = 5
    assert alice.total.refresh(10) == 50
    assert (alice.total(10), bob.total(10)) == (50, 10)


def test_coroutine_functions_and_methods_refresh_with_a_coroutine(backend: RedisCache) -> None:
    source = {"n": 1}

    @cache(ttl=300, backend=backend)
    async def count(kind: str) -> int:
        return source["n"]

    class Repo:
        def __repr__(self) -> str:
            return "Repo()"

        @cache(ttl=300, backend=backend)
        async def size(self) -> int:
            return source["n"] * 100

    async def main() -> list[int]:
        repo = Repo()
        first = [await count("x"), await repo.size()]
        source["n"] = 2
        refreshed = [await count.refresh("x"), await repo.size.refresh()]
        return [*first, *refreshed, await count("x"), await repo.size()]

    assert asyncio.run(main()) == [1, 100, 2, 200, 2, 200]


@pytest.mark.real
def test_a_write_during_the_refresh_wins_and_readers_wait_for_it(
    real_caches: CacheFactory,
) -> None:
    here, there = real_caches(), real_caches()  # two processes
    loading, release = threading.Event(), threading.Event()

    @cache(ttl=300, backend=here, key="item:{n}")
    def slow(n: int) -> str:
        loading.set()
        assert release.wait(HANG)
        return "refreshed"

    @cache(ttl=300, backend=there, key="item:{n}")
    def elsewhere(n: int) -> str:
        return "loaded elsewhere"

    here.set("item:1", "old")
    results: list[str] = []
    refresher = threading.Thread(target=lambda: results.append(slow.refresh(1)))
    refresher.start()
    try:
        assert loading.wait(HANG)
        assert isinstance(raw(here, "item:1"), Lease)  # the old value is no longer served
        reader_got: list[str] = []
        reader = threading.Thread(target=lambda: reader_got.append(elsewhere(1)))
        reader.start()
        release.set()
        refresher.join(HANG)
        reader.join(HANG)
    finally:
        release.set()
    assert results == ["refreshed"]
    assert reader_got == ["refreshed"]  # waited on the lease, got the new value

    loading.clear()
    release.clear()
    refresher = threading.Thread(target=lambda: results.append(slow.refresh(1)))
    refresher.start()
    try:
        assert loading.wait(HANG)
        there.set("item:1", "written meanwhile")
    finally:
        release.set()
        refresher.join(HANG)
    assert results == ["refreshed", "refreshed"]
    assert here.get("item:1") == "written meanwhile"


def test_a_delete_during_the_refresh_wins(backend: RedisCache) -> None:
    loading, release = threading.Event(), threading.Event()

    @cache(ttl=300, backend=backend)
    def slow() -> str:
        loading.set()
        assert release.wait(HANG)
        return "refreshed"

    refresher = threading.Thread(target=slow.refresh)
    refresher.start()
    try:
        assert loading.wait(HANG)
        backend.delete(slow.cache_key())
    finally:
        release.set()
        refresher.join(HANG)
    assert raw(backend, slow.cache_key()) is MISSING


def test_a_refresh_that_says_store_false_drops_the_old_entry(backend: RedisCache) -> None:
    answers = iter([CacheResult("v1"), CacheResult("partial", store=False)])

    @cache(ttl=300, backend=backend)
    def flaky() -> CacheResult[str]:
        return next(answers)

    assert flaky() == "v1"
    assert flaky.refresh() == "partial"
    assert raw(backend, flaky.cache_key()) is MISSING


def test_refresh_answers_when_redis_is_down() -> None:
    down = RedisCache(f"redis://127.0.0.1:{find_free_port()}/0", prefix="down:")
    try:

        @cache(ttl=300, backend=down)
        def answer() -> int:
            return 42

        assert answer.refresh() == 42
    finally:
        down.close()


def test_refresh_honours_unless(backend: RedisCache) -> None:
    @cache(ttl=300, backend=backend, unless=lambda: True)
    def bypassed() -> int:
        return 1

    assert bypassed.refresh() == 1
    assert raw(backend, bypassed.cache_key()) is MISSING


def test_a_view_cannot_be_refreshed(memory_url: str) -> None:
    app = Flask(f"refresh_{uuid.uuid4().hex[:8]}")
    app.config.update(TESTING=True, FENNEC_CACHE_URL=memory_url)
    FennecCache(app)

    @app.get("/p/<int:n>")
    @cache(ttl=60)
    def page(n: int) -> str:
        return str(n)

    with app.app_context(), pytest.raises(FennecCacheError, match="invalidate"):
        page.refresh(n=1)
    app.extensions["fennec_cache"].close()
