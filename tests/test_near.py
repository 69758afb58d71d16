"""The near cache: coherent per-process copies, checked against a real redis-server."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any, cast

import pytest
from _servers import RedisServer
from _support import AppFactory, backend_of, wait_for

from flask_fennec_cache import RedisCache
from flask_fennec_cache.near import NearCache


@pytest.fixture
def near(redis_server: RedisServer, prefix: str) -> Iterator[RedisCache]:
    cache = RedisCache(redis_server.url, prefix=prefix, near_cache=True)
    yield cache
    cache.close()


@pytest.fixture
def writer(redis_server: RedisServer, prefix: str) -> Iterator[RedisCache]:
    cache = RedisCache(redis_server.url, prefix=prefix)
    yield cache
    cache.close()


def near_of(cache: RedisCache) -> NearCache:
    assert cache._near is not None
    return cache._near


def test_a_second_read_is_served_from_the_near_cache(near: RedisCache, writer: RedisCache) -> None:
    writer.set("k", {"v": 1})
    assert near.get("k") == {"v": 1}
    before = near.get_stats()["near_hits"]
    assert near.get("k") == {"v": 1}
    assert near.get_stats()["near_hits"] == before + 1
    assert len(near_of(near)) == 1


def test_writes_deletes_and_raw_commands_elsewhere_are_seen_at_once(
    near: RedisCache, writer: RedisCache, redis_server: RedisServer, prefix: str
) -> None:
    writer.set("k", 1)
    assert near.get("k") == 1
    writer.set("k", 2)
    assert near.get("k") == 2
    redis_server.client().set(f"{prefix}k", b"j3")
    assert near.get("k") == 3
    writer.delete("k")
    assert near.get("k") is None
    writer.set("k", 4)
    assert near.get("k") == 4
    redis_server.client().flushall()
    # Redis 7.0 writes the flush-all push just after its FLUSHALL reply (key invalidations come
    # before the writer's reply), so this one may take a moment to arrive.
    assert wait_for(lambda: near.get("k") is None, timeout=5)


def test_this_process_reads_its_own_writes(near: RedisCache) -> None:
    near.set("k", "old")
    assert near.get("k") == "old"
    near.set("k", "new")
    assert near.get("k") == "new"
    near.delete("k")
    assert near.get("k") is None


def test_a_fill_raced_by_an_invalidation_is_not_stored(
    near: RedisCache, writer: RedisCache, prefix: str
) -> None:
    cache = near_of(near)
    writer.set("k", "old")
    near.get("k")  # connects the tracking connection
    name = f"{prefix}k".encode()
    cache.evict(name)
    ticket = cache.begin_fill(name)
    assert ticket is not None
    writer.set("k", "new")  # Redis pushes the invalidation before it acknowledges this write
    cache.finish_fill(name, ticket, b'j"old"', 60_000)
    assert cache.get(name) is None
    assert near.get("k") == "new"


def test_the_local_ttl_never_outlives_the_redis_ttl(near: RedisCache, writer: RedisCache) -> None:
    writer.set("short", 1, ttl=0.05)
    assert near.get("short") == 1
    entry = near_of(near)._entries[f"{near.prefix}short".encode()]
    assert entry[1] - near_of(near)._clock() <= 0.05


def test_the_lru_bound_holds(redis_server: RedisServer, prefix: str, writer: RedisCache) -> None:
    cache = RedisCache(redis_server.url, prefix=prefix, near_cache=True, near_cache_size=3)
    try:
        for i in range(10):
            writer.set(f"k{i}", i)
            assert cache.get(f"k{i}") == i
        assert len(near_of(cache)) == 3
    finally:
        cache.close()


def test_the_byte_bound_holds_and_its_count_follows_every_removal(
    redis_server: RedisServer, prefix: str, writer: RedisCache
) -> None:
    budget = 20_000
    cache = RedisCache(
        redis_server.url, prefix=prefix, near_cache=True, near_cache_max_bytes=budget
    )
    near = near_of(cache)
    try:
        value = {"pad": "x" * 700}  # about 1 KB held per entry with its key and overhead
        for i in range(40):
            writer.set(f"k{i}", value)
            assert cache.get(f"k{i}") == value
        assert 0 < near.bytes_held <= budget
        assert len(near) < 40  # the byte bound, not the entry bound (10,000), evicted
        held = list(near._entries)
        assert held[-1] == f"{prefix}k39".encode()  # the most recently read stay
        assert near.bytes_held == sum(size for _, _, size in near._entries.values())
        writer.delete(*(f"k{i}" for i in range(40)))  # invalidations from another process
        cache.get("k0")  # drains them
        assert (len(near), near.bytes_held) == (0, 0)
        writer.set("a", value)
        cache.get("a")
        assert near.bytes_held > 0
        cache.set("a", 1)  # this process's own write
        assert near.bytes_held == 0
    finally:
        cache.close()


def test_an_entry_over_a_tenth_of_the_byte_bound_is_always_read_from_redis(
    redis_server: RedisServer, prefix: str
) -> None:
    cache = RedisCache(
        redis_server.url, prefix=prefix, near_cache=True, near_cache_max_bytes=10_000,
        compression="none",
    )
    try:
        big = {"pad": "y" * 2_000}
        cache.set("big", big)  # stored uncompressed: about 2 KB, over a tenth of 10 KB
        before = cache.get_stats()["near_hits"]
        assert [cache.get("big") for _ in range(3)] == [big] * 3
        assert cache.get_stats()["near_hits"] == before
        assert len(near_of(cache)) == 0
    finally:
        cache.close()


def test_a_lost_tracking_connection_flushes_and_bypasses_then_recovers(
    near: RedisCache, writer: RedisCache, redis_server: RedisServer
) -> None:
    writer.set("k", 1)
    assert near.get("k") == 1
    assert near.get("k") == 1
    redis_server.kill()
    assert near.get("k") is None  # fail-open miss, not a stale near hit
    assert len(near_of(near)) == 0
    redis_server.restart()
    writer.set("k", 2)
    near_of(near)._retry_at = 0.0  # skip the one-second reconnect back-off
    assert near.get("k") == 2
    assert near_of(near).connected


def test_one_server_reads_do_nothing_but_the_poll(near: RedisCache) -> None:
    """No topology check on a single server: the class's _sync (one poll) serves reads."""
    cache = near_of(near)
    assert cache._masters is None
    assert "_sync" not in vars(cache)
    near.get("k")
    assert len(cache.tracked) == 1


def test_where_there_is_no_epoll_the_drain_uses_poll(
    redis_server: RedisServer, prefix: str, writer: RedisCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """macOS and the BSDs have no epoll: the near cache drains with poll() there, as coherent."""
    import select

    monkeypatch.delattr(select, "epoll")
    cache = RedisCache(redis_server.url, prefix=prefix, near_cache=True)
    try:
        writer.set("k", 1)
        assert [cache.get("k") for _ in range(2)] == [1, 1]
        assert not hasattr(near_of(cache)._poller, "close")  # a poll object, not an epoll one
        writer.set("k", 2)
        assert cache.get("k") == 2
        assert cache.get_stats()["near_hits"] >= 1
    finally:
        cache.close()


def test_a_forked_child_starts_empty(near: RedisCache, writer: RedisCache) -> None:
    writer.set("k", 1)
    near.get("k")
    cache = near_of(near)
    cache._after_fork()
    assert len(cache) == 0
    assert not cache.connected
    assert near.get("k") == 1  # reconnects on first use


def test_memory_urls_disable_it_with_a_warning(
    memory_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="flask_fennec_cache"):
        cache = RedisCache(memory_url, near_cache=True)
    assert cache._near is None
    assert "near cache disabled" in caplog.text
    cache.close()


WRITER_SCRIPT = textwrap.dedent(
    """
    import sys
    from flask_fennec_cache import RedisCache
    cache = RedisCache(sys.argv[1], prefix=sys.argv[2])
    for line in sys.stdin:
        key, value = line.split()
        cache.set(key, int(value))
        print("ok", flush=True)
    """
)


def stale_reads(near: RedisCache, url: str, keys: list[str], trials: int = 1000) -> int:
    """Run *trials* times: another process writes the next key of *keys* and acknowledges,
    then *near* reads it (and reads it again: a near hit, held until that key's next write).
    The number of reads that did not see the acknowledged write."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, url, near.prefix],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    stale = 0
    try:
        for trial in range(trials):
            key = keys[trial % len(keys)]
            proc.stdin.write(f"{key} {trial}\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "ok"
            if near.get(key) != trial:
                stale += 1
            near.get(key)
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
        proc.stdout.close()
    return stale


def test_no_stale_read_after_a_write_acknowledged_in_another_process(
    near: RedisCache, redis_server: RedisServer
) -> None:
    """1,000 trials: another process writes, acknowledges, then this process reads."""
    near_hits_before = near.get_stats()["near_hits"]
    assert stale_reads(near, redis_server.url, ["shared"]) == 0
    assert near.get_stats()["near_hits"] - near_hits_before >= 1000


def test_cached_views_are_near_hits_and_see_invalidations(
    redis_server: RedisServer, prefix: str, writer: RedisCache
) -> None:
    """Cached responses are immutable, so the near cache keeps them decoded; still coherent."""
    from flask import Flask

    from flask_fennec_cache import FennecCache
    from flask_fennec_cache.serializers import CachedResponse

    app = Flask(__name__)
    app.config.update(FENNEC_CACHE_URL=redis_server.url, FENNEC_CACHE_PREFIX=prefix,
                      FENNEC_CACHE_NEAR_CACHE=True)
    fennec = FennecCache(app)
    renders: list[int] = []

    @app.get("/page")
    @fennec.cache(ttl=60)
    def page() -> str:
        renders.append(1)
        return f"render {len(renders)}"

    client = app.test_client()
    backend = app.extensions["fennec_cache"]
    try:
        assert client.get("/page").headers["X-Cache"] == "MISS"
        before = backend.get_stats()["near_hits"]
        for _ in range(2):  # the first read fills the near cache, the second is a near hit
            hit = client.get("/page")
            assert (hit.headers["X-Cache"], hit.get_data(as_text=True)) == ("HIT", "render 1")
        assert backend.get_stats()["near_hits"] > before
        held = [cast(tuple[Any, Any], form) for form, _, _ in near_of(backend)._entries.values()]
        assert any(isinstance(argument, CachedResponse) for _, argument in held)
        writer.clear("view:*")  # another process drops the page
        again = client.get("/page")
        assert (again.headers["X-Cache"], again.get_data(as_text=True)) == ("MISS", "render 2")
    finally:
        backend.close()


def test_health_and_metrics_show_this_process_s_near_cache(
    redis_server: RedisServer, make_app: AppFactory
) -> None:
    app = make_app(FENNEC_CACHE_URL=redis_server.url, FENNEC_CACHE_NEAR_CACHE=True)
    backend = backend_of(app)
    backend.set("k", {"v": 1})
    assert [backend.get("k") for _ in range(2)] == [{"v": 1}] * 2
    client = app.test_client()
    near = client.get("/cache/health").get_json()["near_cache"]
    assert near["connected"] is True and near["entries"] == 1
    assert near["bytes"] == near_of(backend).bytes_held > 0
    assert near["max_bytes"] == 64 * 1024 * 1024 and near["max_entries"] == 10_000
    metrics = client.get("/cache/metrics").get_data(as_text=True)
    pid = os.getpid()
    assert f'fennec_cache_near_cache_entries{{pid="{pid}"}} 1' in metrics
    assert f'fennec_cache_near_cache_bytes{{pid="{pid}"}} {near["bytes"]}' in metrics


def test_without_a_near_cache_health_and_metrics_say_nothing_of_it(
    make_app: AppFactory,
) -> None:
    app = make_app()
    client = app.test_client()
    assert "near_cache" not in client.get("/cache/health").get_json()
    assert "near_cache" not in client.get("/cache/metrics").get_data(as_text=True)
