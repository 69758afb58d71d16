"""Leases and locks live in short slices renewed while their holder works (real Redis)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis
from _support import HANG, CacheFactory, wait_for

import flask_fennec_cache._flight as flight
import flask_fennec_cache.loading as loading
import flask_fennec_cache.locks as locks
from flask_fennec_cache import CacheAside, RedisCache
from flask_fennec_cache.locks import RedisLock

# A slice long enough that the keeper, renewing every third of it, keeps the lease alive through
# the scheduling stalls of a loaded 2-core machine (two thirds of a slice, 667 ms, of slack; at
# 0.3 s a 200 ms stall let another process take over).
SLICE = 1.0
#: The longest life a renewal gives: the keeper renews to one slice plus 1 ms (its rounding up,
#: so that a renewal near the holder's timeout never asks Redis for ``PX 0``).
RENEWED_MS = int(SLICE * 1000) + 1


@pytest.fixture(autouse=True)
def short_slices(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(flight, "LEASE_SLICE", SLICE)  # the keeper's slice and renewal pace
    monkeypatch.setattr(locks, "LEASE_SLICE", SLICE)
    monkeypatch.setattr(loading, "LEASE_SLICE", SLICE)
    yield


@pytest.fixture
def backend(real_caches: CacheFactory) -> RedisCache:
    return real_caches()


def pttl(backend: RedisCache, name: str) -> int:
    value = backend.client.pttl(backend.prefix + name)
    assert isinstance(value, int)
    return value


def test_a_slow_loader_keeps_its_short_lease_alive_and_nobody_takes_over(
    backend: RedisCache,
) -> None:
    """A loader running 5 slices keeps a lease that never has more than a slice to live."""
    release = threading.Event()
    loads: list[int] = []

    def slow() -> str:
        loads.append(1)
        release.wait(HANG)
        return "v"

    aside = CacheAside(backend, ttl=60, lock_timeout=30)
    holder = threading.Thread(target=aside.get, args=("k", slow))
    holder.start()
    try:
        leased = wait_for(
            lambda: (backend.client.get(backend.prefix + "k") or b"")[:1] == b"L", timeout=HANG
        )
        assert leased
        renewed_and_waited(backend, release, loads)
    finally:
        release.set()
        holder.join(HANG)
    assert backend.get("k") == "v"


def renewed_and_waited(backend: RedisCache, release: threading.Event, loads: list[int]) -> None:
    ttls = []
    for _ in range(3):  # three slices: without renewal the lease would be gone after one
        threading.Event().wait(SLICE)
        ttls.append(pttl(backend, "k"))
    # The longest the lease can have: read right after a renewal (the keeper's own thread may
    # or may not have renewed just before one of the reads above).
    backend.coordination.keeper.renew_all()
    ttls.append(pttl(backend, "k"))
    other = RedisCache(backend.url, prefix=backend.prefix)
    try:
        waiter_result: list[str] = []

        def other_load() -> str:
            loads.append(2)
            return "other load"

        waiter = threading.Thread(
            target=lambda: waiter_result.append(
                CacheAside(other, ttl=60, lock_timeout=30).get("k", other_load)
            )
        )
        waiter.start()
        threading.Event().wait(SLICE * 2)
        assert loads == [1], f"another process loaded during the holder's lease (ttls {ttls})"
        release.set()
        waiter.join(HANG)
        assert waiter_result == ["v"]
    finally:
        other.close()
    assert loads == [1]
    assert all(0 < ttl <= RENEWED_MS for ttl in ttls), ttls


def test_a_lease_its_holder_abandoned_is_taken_over_after_one_slice(backend: RedisCache) -> None:
    """A holder that died (or could not release after a failover) leaves a lease of one slice."""
    token = backend.coordination.acquire_lease("k", None, int(SLICE * 1000))
    assert token
    value = CacheAside(backend, ttl=60, lock_timeout=30).lookup("k", lambda: "taken over")
    assert value == ("taken over", False, "k")
    assert backend.get("k") == "taken over"


def test_locks_are_renewed_while_held_and_gone_after_release(backend: RedisCache) -> None:
    lock = RedisLock(backend, "__fennec__:write:k", timeout=30)
    assert lock.acquire()
    threading.Event().wait(SLICE * 3)
    assert 0 < pttl(backend, "__fennec__:write:k") <= RENEWED_MS
    backend.coordination.keeper.renew_all()  # the longest it can have: right after a renewal
    assert 0 < pttl(backend, "__fennec__:write:k") <= RENEWED_MS
    assert lock.release()
    assert pttl(backend, "__fennec__:write:k") == -2


def test_renewal_stops_at_the_holders_timeout(backend: RedisCache) -> None:
    lock = RedisLock(backend, "__fennec__:write:k", timeout=SLICE * 2)
    assert lock.acquire()
    assert wait_for(lambda: pttl(backend, "__fennec__:write:k") == -2, timeout=HANG)
    assert not lock.release()


def test_renewal_never_extends_someone_elses_lease(backend: RedisCache) -> None:
    keeper = backend.coordination.keeper
    handle = keeper.hold("k", b"Lmine", 30)
    try:
        backend.client.set(backend.prefix + "k", b"Ltheirs", px=int(SLICE * 1000))
        keeper.renew_all()
        assert pttl(backend, "k") <= SLICE * 1000
        assert wait_for(lambda: pttl(backend, "k") == -2, timeout=HANG)
    finally:
        # Not left renewing for 30 s: RedisCache.close() does not stop the keeper, whose next
        # renewal would open a connection after the teardown closed the pool (a socket that
        # garbage collection later reports as unclosed, in whatever test runs then).
        keeper.drop(handle)


def test_a_closed_cache_renews_nothing(real_caches: CacheFactory) -> None:
    """A renewal after close() would reopen a connection the cache gave up, and extend a lease
    nobody holds any more."""
    made = real_caches()
    plain = redis.Redis.from_url(made.url)
    try:
        plain.set(made.prefix + "k", b"Lmine", px=300)
        made.coordination.keeper.hold("k", b"Lmine", 30)
        made.close()
        made.coordination.keeper.renew_all()
        assert 0 < plain.pttl(made.prefix + "k") <= 300  # not renewed to a slice
    finally:
        plain.close()
