"""The near cache: coherent per-process copies, checked against a real redis-server."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis
from _servers import RedisServer
from _support import AppFactory, backend_of, settled, wait_for

from flask_fennec_cache import RedisCache
from flask_fennec_cache._near_store import NearStore
from flask_fennec_cache._topology import tracking_targets
from flask_fennec_cache._tracking import TrackingConnections, WatchedTrackingConnections
from flask_fennec_cache.near import TOPOLOGY_CHECK_INTERVAL, NearCache, TrackingTargets


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


class FakeClock:
    """A monotonic clock that moves only when told, counting its reads."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


def read_through(near: NearCache, client: redis.Redis, name: bytes) -> bytes | None:
    """*name*'s value from *near*, else from Redis (filling *near*) as the backend reads."""
    held = near.get(name)
    if held is not None:
        return cast(bytes, held)
    ticket = near.begin_fill(name)
    pipe = client.pipeline(transaction=False)
    pipe.get(name)
    pipe.pttl(name)
    data, ttl_ms = pipe.execute()
    if ticket is not None:
        if data is None:
            near.abandon_fill(name, ticket)
        else:
            near.finish_fill(name, ticket, data, int(ttl_ms), len(data))
    return cast("bytes | None", data)


def near_of(cache: RedisCache) -> NearCache:
    assert cache.reader.near is not None
    return cache.reader.near


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
    entry = near_of(near)._store.entry(f"{near.prefix}short".encode())
    assert entry is not None
    assert entry.expires - near_of(near)._clock() <= 0.05


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
        held = list(near._store)
        assert held[-1] == f"{prefix}k39".encode()  # the most recently read stay
        assert near.bytes_held == sum(entry.size for entry in near._store.entries())
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
        redis_server.url,
        prefix=prefix,
        near_cache=True,
        near_cache_max_bytes=10_000,
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
    near_of(near)._tracking.retry_now()  # skip the one-second reconnect back-off
    assert near.get("k") == 2
    assert near_of(near).connected


def test_one_server_reads_do_nothing_but_the_poll(
    near: RedisCache, redis_server: RedisServer, prefix: str
) -> None:
    """No topology check on a single server: a near hit is the poll and the entry's expiry."""
    cache = near_of(near)
    assert cache._tracking._masters is None
    assert type(cache._tracking) is TrackingConnections  # not the watched kind
    for part in (cache, cache._tracking):  # no method swapped in at runtime
        assert not set(vars(part)) & set(dir(type(part))), part
    near.get("k")
    assert len(cache.tracked) == 1

    client = redis_server.client()
    clock = FakeClock()
    targets = tracking_targets(client)
    assert not isinstance(targets, str)
    direct = NearCache(targets, prefix, 10, 60.0, clock=clock)
    try:
        name = f"{prefix}k".encode()
        client.set(name, b"v")
        assert read_through(direct, client, name) == b"v"
        before = clock.reads
        assert direct.get(name) == b"v"
        assert clock.reads - before == 1  # the entry's expiry; no masters' check
    finally:
        direct.close()


def test_a_watched_topology_compares_the_masters_at_fills_and_once_an_interval_on_reads(
    redis_server: RedisServer, prefix: str
) -> None:
    """With a masters callable (Sentinel, cluster) the check runs before every fill is stored
    and at most once every TOPOLOGY_CHECK_INTERVAL on reads (an injected clock, no sleep)."""
    client = redis_server.client()
    single = tracking_targets(client)
    assert not isinstance(single, str)
    clock = FakeClock()
    checks: list[float] = []
    reached = frozenset({("127.0.0.1", redis_server.port)})

    def masters() -> frozenset[tuple[str, int]]:
        checks.append(clock.now)
        return reached

    near = NearCache(TrackingTargets(single.connect, masters), prefix, 10, 60.0, clock=clock)
    assert isinstance(near._tracking, WatchedTrackingConnections)
    for part in (near, near._tracking):  # the watched sync is chosen without a method swap
        assert not set(vars(part)) & set(dir(type(part))), part
    try:
        name = f"{prefix}k".encode()
        client.set(name, b"v")
        assert read_through(near, client, name) == b"v"
        assert len(checks) == 1  # the fill's
        for _ in range(5):
            assert near.get(name) == b"v"
        assert len(checks) == 1  # within the interval: reads do not check
        clock.now += TOPOLOGY_CHECK_INTERVAL
        for _ in range(5):
            assert near.get(name) == b"v"
        assert len(checks) == 2  # one check for the new interval
        assert near.tracked == reached
    finally:
        near.close()


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
        tracking = near_of(cache)._tracking
        assert tracking.readiness == "poll"
        assert not hasattr(tracking._poller, "close")  # a poll object, not an epoll one
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
    assert cache.reader.near is None
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
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
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


TAG_WRITER_SCRIPT = textwrap.dedent(
    """
    import sys
    from flask_fennec_cache import RedisCache
    cache = RedisCache(sys.argv[1], prefix=sys.argv[2])
    for line in sys.stdin:
        assert cache.invalidate_tags(line.strip())
        print("ok", flush=True)
    """
)


def stale_tagged_reads(near: RedisCache, url: str, tags: list[str], trials: int = 1000) -> int:
    """Run *trials* times: another process invalidates the next tag of *tags* and
    acknowledges, then *near* calls a function cached under all of *tags* three times (a
    reload, then fills, then near hits until the next invalidation). The number of calls that
    were served an entry loaded before the acknowledged invalidation."""
    from flask_fennec_cache import cache

    loaded = {"trial": -1}

    @cache(ttl=600, tags=tuple(tags), backend=near)
    def tagged() -> int:
        return loaded["trial"]

    proc = subprocess.Popen(
        [sys.executable, "-c", TAG_WRITER_SCRIPT, url, near.prefix],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    stale = 0
    try:
        for trial in range(trials):
            proc.stdin.write(f"{tags[trial % len(tags)]}\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "ok"
            loaded["trial"] = trial
            stale += sum(tagged() != trial for _ in range(3))
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
        proc.stdout.close()
    return stale


def test_no_stale_tagged_read_after_invalidate_tags_acknowledged_in_another_process(
    near: RedisCache, redis_server: RedisServer
) -> None:
    """1,000 trials: another process invalidates a tag, acknowledges, then this process
    calls a function cached under it: never the entry of before, and near hits between."""
    near_hits_before = near.get_stats()["near_hits"]
    assert stale_tagged_reads(near, redis_server.url, ["t"]) == 0
    assert near.get_stats()["near_hits"] - near_hits_before >= 1000


def commands_run(server: RedisServer) -> dict[str, int]:
    """Commands the server has run so far, by name (but those this connection asks with)."""
    stats = server.client().info("commandstats")
    # Redis 6.0 counts CLIENT SETINFO, SETNAME, ... under one cmdstat_client, 7 per subcommand.
    asking = ("cmdstat_info", "cmdstat_hello", "cmdstat_client", "cmdstat_select")
    return {k: int(v["calls"]) for k, v in stats.items() if not k.startswith(asking)}


@pytest.fixture
def quiet_near(redis_server: RedisServer, prefix: str) -> Iterator[RedisCache]:
    """A near cache that sends nothing of its own (no statistics flush) during a test."""
    cache = RedisCache(redis_server.url, prefix=prefix, near_cache=True, stats_flush_interval=3600)
    yield settled(cache)
    cache.close()


@pytest.fixture
def quiet_writer(redis_server: RedisServer, prefix: str) -> Iterator[RedisCache]:
    """A writer that sends only its own writes during a test (see :func:`quiet_near`)."""
    cache = RedisCache(redis_server.url, prefix=prefix, stats_flush_interval=3600)
    yield settled(cache)
    cache.close()


def test_a_tagged_near_hit_sends_nothing_to_redis(
    quiet_near: RedisCache, redis_server: RedisServer
) -> None:
    from flask_fennec_cache import cache

    loads: list[int] = []

    @cache(ttl=600, tags=("users", "teams"), backend=quiet_near)
    def members() -> dict[str, list[int]]:
        loads.append(1)
        return {"ids": [1, 2]}

    assert [members() for _ in range(3)] == [{"ids": [1, 2]}] * 3  # a load, fills, a hit
    hits, before = quiet_near.get_stats()["near_hits"], commands_run(redis_server)
    for _ in range(50):
        got = members()
        assert got == {"ids": [1, 2]}
        got["ids"].append(3)  # each caller has its own copy
    assert commands_run(redis_server) == before
    assert quiet_near.get_stats()["near_hits"] - hits >= 50
    assert len(loads) == 1
    held = near_of(quiet_near)._store
    tag_keys = [quiet_near.tag_index.key(t).encode() for t in ("teams", "users")]
    assert all(held.entry(name) is not None for name in tag_keys)  # the versions, held here


def test_get_many_is_served_from_the_near_cache_and_sees_changes_elsewhere(
    quiet_near: RedisCache, quiet_writer: RedisCache, redis_server: RedisServer, prefix: str
) -> None:
    quiet_writer.set_many({"a": 1, "b": [2], "c": {"v": 3}})
    quiet_writer.set("tagged", "t", tags=("team",))
    redis_server.client().set(f"{prefix}lease", b"L" + b"0" * 32)  # a load in progress
    keys = ["a", "b", "c", "tagged", "lease", "absent"]
    expected = {"a": 1, "b": [2], "c": {"v": 3}, "tagged": "t"}
    assert quiet_near.get_many(keys) == expected  # read from Redis, filling the near cache
    hits, before = quiet_near.get_stats()["near_hits"], commands_run(redis_server)
    assert quiet_near.get_many(["a", "b", "c", "tagged"]) == expected
    assert commands_run(redis_server) == before  # every entry and tag version held here
    assert quiet_near.get_stats()["near_hits"] == hits + 1
    first = quiet_near.get_many(["b"])
    first["b"].append("changed")
    assert quiet_near.get_many(["b"]) == {"b": [2]}  # each caller has its own copy

    quiet_writer.set("a", "new")
    quiet_writer.delete("c")
    assert quiet_writer.invalidate_tags("team")
    assert quiet_near.get_many(keys) == {"a": "new", "b": [2]}
    assert quiet_near.get_many(["a", "a", "b"]) == {"a": "new", "b": [2]}


def test_an_own_invalidate_tags_drops_the_held_versions_at_once(quiet_near: RedisCache) -> None:
    from flask_fennec_cache import cache

    loads: list[int] = []

    @cache(ttl=600, tags=("t",), backend=quiet_near)
    def value() -> int:
        loads.append(1)
        return len(loads)

    assert [value() for _ in range(3)] == [1, 1, 1]
    name = quiet_near.tag_index.key("t").encode()
    assert near_of(quiet_near)._store.entry(name) is not None
    assert quiet_near.invalidate_tags("t")
    assert near_of(quiet_near)._store.entry(name) is None  # not waiting for Redis' push
    assert [value() for _ in range(3)] == [2, 2, 2]


def test_a_tag_version_fill_raced_by_an_invalidation_is_not_stored(
    quiet_near: RedisCache, writer: RedisCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The version is read, then another process bumps it (and is acknowledged), then the
    fill completes: the version read is not kept, so the entry of before is not served."""
    from flask_fennec_cache import cache

    loads: list[int] = []

    @cache(ttl=600, tags=("t",), backend=quiet_near)
    def value() -> int:
        loads.append(1)
        return len(loads)

    assert value() == 1
    near = near_of(quiet_near)
    near.flush()  # the next read fills the entry and the tag's version
    name = quiet_near.tag_index.key("t").encode()
    finish_fill = near.finish_fill
    raced: list[bytes] = []

    def bumped_first(key: bytes, *args: Any, **kwargs: Any) -> None:
        if key == name and not raced:
            raced.append(key)
            assert writer.invalidate_tags("t")  # Redis pushes before it acknowledges
        finish_fill(key, *args, **kwargs)

    monkeypatch.setattr(near, "finish_fill", bumped_first)
    assert value() == 1  # read before the bump: served, as a read concurrent with it may be
    assert raced and near._store.entry(name) is None
    assert [value() for _ in range(3)] == [2, 2, 2]


def test_a_plain_read_of_a_tagged_entry_checks_the_held_versions(
    quiet_near: RedisCache, quiet_writer: RedisCache, redis_server: RedisServer
) -> None:
    """``get`` learns an entry's tags from the entry: their versions come from the near cache
    too (filled at the first read), and an invalidation elsewhere is seen."""
    quiet_writer.set("k", {"v": 1}, tags=("a", "b"))
    assert quiet_near.get("k") == {"v": 1}  # fills the entry and the versions
    hits, before = quiet_near.get_stats()["near_hits"], commands_run(redis_server)
    assert [quiet_near.get("k") for _ in range(20)] == [{"v": 1}] * 20
    assert commands_run(redis_server) == before
    assert quiet_near.get_stats()["near_hits"] - hits == 20  # the versions are not counted
    assert quiet_writer.invalidate_tags("b")
    assert quiet_near.get("k") is None


def test_a_tag_without_a_version_is_a_miss_and_not_held(
    quiet_near: RedisCache, redis_server: RedisServer
) -> None:
    from flask_fennec_cache import cache

    loads: list[int] = []

    @cache(ttl=600, tags=("t",), backend=quiet_near)
    def value() -> int:
        loads.append(1)
        return len(loads)

    assert [value() for _ in range(3)] == [1, 1, 1]
    redis_server.client().delete(quiet_near.tag_index.key("t"))  # lost (evicted, say)
    assert value() == 2  # the entry carried a version that no longer exists: a miss
    assert [value() for _ in range(2)] == [2, 2]


def test_enveloped_near_hits_are_fresh_copies_of_the_whole_envelope(
    quiet_near: RedisCache, redis_server: RedisServer
) -> None:
    from flask_fennec_cache import cache

    @cache(ttl=600, stale_ttl=60, backend=quiet_near)
    def fresh() -> dict[str, list[int]]:
        return {"ids": [1]}

    @cache(ttl=600, beta=1.0, backend=quiet_near)
    def early() -> str:
        return "text"

    for function, expected in ((fresh, {"ids": [1]}), (early, "text")):
        assert [function() for _ in range(2)] == [expected] * 2
        hits, before = quiet_near.get_stats()["near_hits"], commands_run(redis_server)
        for _ in range(20):
            got = function()
            assert got == expected
            if isinstance(got, dict):
                got["ids"].append(2)
        assert commands_run(redis_server) == before
        assert quiet_near.get_stats()["near_hits"] - hits == 20


def test_the_envelope_redecoder_parses_the_metadata_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from flask_fennec_cache import _tags
    from flask_fennec_cache.serializers import Envelope, decode, encode, envelope_head, redecoder

    stored = Envelope({"a": [1]}, "0123456789abcdef", 1e10, 0.25, {"t": "fedcba9876543210"})
    data = envelope_head(stored) + encode(stored.value, "k")
    function, argument = redecoder(data, decode(data))
    with monkeypatch.context() as patched:  # a hit reads no metadata: it was read at the fill
        patched.setattr(_tags, "_json_decoder", None)
        first, second = function(argument), function(argument)
    assert first == second == stored == decode(data)
    assert first is not second and first.value is not second.value
    immutable = Envelope("text", "0123456789abcdef", 1e10)
    data = envelope_head(immutable) + encode("text", "k")
    function, argument = redecoder(data, decode(data))
    assert function(argument) == immutable  # frozen with an immutable value: handed as it is


def test_cached_views_are_near_hits_and_see_invalidations(
    redis_server: RedisServer, prefix: str, writer: RedisCache
) -> None:
    """Cached responses are immutable, so the near cache keeps them decoded; still coherent."""
    from flask import Flask

    from flask_fennec_cache import FennecCache
    from flask_fennec_cache.serializers import CachedResponse

    app = Flask(__name__)
    app.config.update(
        FENNEC_CACHE_URL=redis_server.url, FENNEC_CACHE_PREFIX=prefix, FENNEC_CACHE_NEAR_CACHE=True
    )
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
        held = [cast(tuple[Any, Any], entry.data) for entry in near_of(backend)._store.entries()]
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
    assert f'fennec_cache_near_cache_state{{pid="{pid}"}} 0' in metrics


def test_health_tells_a_near_cache_not_started_from_a_disconnected_one(
    redis_server: RedisServer, make_app: AppFactory
) -> None:
    app = make_app(FENNEC_CACHE_URL=redis_server.url, FENNEC_CACHE_NEAR_CACHE=True)
    backend = backend_of(app)
    client = app.test_client()

    def near_health() -> tuple[bool, str, str]:
        near = client.get("/cache/health").get_json()["near_cache"]
        metrics = client.get("/cache/metrics").get_data(as_text=True)
        gauge = re.search(r'^fennec_cache_near_cache_state\{pid="\d+"\} (\d)$', metrics, re.M)
        assert gauge is not None, metrics
        return near["connected"], near["state"], gauge[1]

    assert near_health() == (False, "not started", "1")  # a fresh worker: no read yet
    backend.get("k")
    assert near_health() == (True, "connected", "0")
    redis_server.kill()
    assert backend.get("k") is None  # the read finds the tracking connection broken
    assert near_health() == (False, "disconnected", "2")
    redis_server.restart()

    def reconnected() -> bool:  # once the breaker's cool-down from the outage has passed
        near_of(backend)._tracking.retry_now()
        backend.get("k")
        return near_health() == (True, "connected", "0")

    assert wait_for(reconnected, timeout=10)


def test_without_a_near_cache_health_and_metrics_say_nothing_of_it(
    make_app: AppFactory,
) -> None:
    app = make_app()
    client = app.test_client()
    assert "near_cache" not in client.get("/cache/health").get_json()
    assert "near_cache" not in client.get("/cache/metrics").get_data(as_text=True)


# ==================================================================================
# Without redis-py's internals: the fallbacks of the two private members read
# ==================================================================================


class Hiding:
    """A tracking connection with some attributes hidden, as if redis-py had renamed them."""

    def __init__(self, conn: Any, hidden: frozenset[str]) -> None:
        self._conn = conn
        self._hidden = hidden

    def __getattr__(self, name: str) -> Any:
        if name in self._hidden:
            raise AttributeError(name)
        return getattr(self._conn, name)


def hiding(client: redis.Redis, *names: str) -> TrackingTargets:
    """The tracking targets of *client*, their connections without *names*."""
    targets = tracking_targets(client)
    assert not isinstance(targets, str)

    def connect(refresh: bool) -> Any:
        return [Hiding(conn, frozenset(names)) for conn in targets.connect(refresh)]

    return TrackingTargets(connect, targets.masters)


def coherent_rounds(near: NearCache, client: redis.Redis, name: bytes, rounds: int) -> int:
    """Write *name* with *client* then read it through *near*, twice (the second a near hit
    until the next write), *rounds* times; the reads that missed the acknowledged write."""
    stale = 0
    for value in range(rounds):
        client.set(name, str(value).encode())
        stale += read_through(near, client, name) != str(value).encode()
        stale += read_through(near, client, name) != str(value).encode()
    return stale


def test_without_the_sockets_readiness_is_asked_of_each_connection(
    redis_server: RedisServer, prefix: str
) -> None:
    """No ``_sock`` (read for speed): the drain polls with the public ``can_read``, hits and
    stays coherent, and still sees a lost connection."""
    client = redis_server.client()
    near = NearCache(hiding(client, "_sock"), prefix, 100, 60.0)
    try:
        name = f"{prefix}k".encode()
        client.set(name, b"old")
        assert read_through(near, client, name) == b"old"
        assert near._tracking.readiness == "can_read"
        hits = near.hits
        assert read_through(near, client, name) == b"old"
        assert near.hits == hits + 1
        assert coherent_rounds(near, client, name, 300) == 0
        assert near.hits >= hits + 300
        redis_server.kill()
        assert near.get(name) is None and not near.connected and len(near) == 0
    finally:
        near.close()


def test_without_the_parser_every_invalidation_flushes_everything(
    redis_server: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No ``_parser`` to hand the invalidations to: a push's keys are unknown, so each one
    empties the near cache (said once in the log); reads stay coherent."""
    client = redis_server.client()
    with caplog.at_level(logging.WARNING, logger="flask_fennec_cache"):
        near = NearCache(hiding(client, "_parser"), prefix, 100, 60.0)
        try:
            one, other = f"{prefix}one".encode(), f"{prefix}other".encode()
            client.set(one, b"1")
            client.set(other, b"2")
            assert read_through(near, client, one) == b"1"
            assert read_through(near, client, other) == b"2"
            assert "every invalidation flushes the whole near cache" in caplog.text
            assert near._tracking.readiness == "epoll"
            hits = near.hits
            assert [near.get(one), near.get(other)] == [b"1", b"2"]
            assert near.hits == hits + 2
            client.set(one, b"1b")
            assert near.get(other) is None and len(near) == 0  # flushed, not just "one"
            assert read_through(near, client, one) == b"1b"
            assert coherent_rounds(near, client, one, 300) == 0
        finally:
            near.close()


def test_with_neither_the_sockets_nor_the_parser_it_stays_coherent(
    redis_server: RedisServer, prefix: str
) -> None:
    client = redis_server.client()
    near = NearCache(hiding(client, "_sock", "_parser"), prefix, 100, 60.0)
    try:
        name = f"{prefix}k".encode()
        assert coherent_rounds(near, client, name, 200) == 0
        assert near._tracking.readiness == "can_read"
        assert near.hits >= 200
    finally:
        near.close()


# ==================================================================================
# The store on its own (an injected clock, no server)
# ==================================================================================


def test_the_store_keeps_the_most_recently_used_within_its_entry_bound() -> None:
    store = NearStore(max_entries=3, max_bytes=1000, ttl=60.0, clock=FakeClock())
    for key in (b"a", b"b", b"c"):
        assert store.put(key, key.upper(), 10, None)
    assert store.get(b"a") == b"A"  # now the most recently used
    store.put(b"d", b"D", 10, None)
    assert list(store) == [b"c", b"a", b"d"]  # b, the least recently used, went
    assert (len(store), store.bytes_held) == (3, 30)


def test_the_store_keeps_within_its_byte_bound_and_refuses_a_tenth_of_it() -> None:
    store = NearStore(max_entries=100, max_bytes=1000, ttl=60.0, clock=FakeClock())
    for i in range(20):
        assert store.put(b"k%d" % i, i, 100, None)
    assert store.bytes_held == 1000 and list(store)[0] == b"k10"
    assert not store.put(b"k19", "large", 101, None)  # over a tenth: refused, old one dropped
    assert store.entry(b"k19") is None and store.bytes_held == 900
    store.put(b"k18", "smaller", 40, None)  # a replacement counts its new size only
    assert store.bytes_held == 840
    store.drop(b"k18")
    store.drop(b"absent")
    assert store.bytes_held == 800 == sum(entry.size for entry in store.entries())
    store.clear()
    assert (len(store), store.bytes_held) == (0, 0)


def test_the_store_s_ttl_is_the_shorter_of_its_own_and_the_given_one() -> None:
    clock = FakeClock()
    store = NearStore(max_entries=10, max_bytes=1000, ttl=30.0, clock=clock)
    store.put(b"short", 1, 1, 0.5)
    store.put(b"long", 2, 1, 3600.0)
    store.put(b"forever", 3, 1, None)
    lives = {}
    for key in (b"short", b"long", b"forever"):
        entry = store.entry(key)
        assert entry is not None
        lives[key] = entry.expires - clock.now
    assert lives == {b"short": 0.5, b"long": 30.0, b"forever": 30.0}
    clock.now += 0.5
    assert store.get(b"short") is None and store.entry(b"short") is None  # expired: dropped
    assert store.get(b"long") == 2
    clock.now += 29.5
    assert store.get(b"long") is None and store.get(b"forever") is None
    assert (len(store), store.bytes_held) == (0, 0)
