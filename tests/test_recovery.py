"""Recovery from a Redis outage (issue 14): one socket timeout per request at most, a
background prober that closes the breaker without any traffic, and invalidations that survive
the outage.

Tests on a real server run a private ``redis-server`` that they freeze with SIGSTOP and always
thaw in a ``finally``; the others use a fakeredis server that they disconnect. Assertions count
the commands that waited (timed out), never elapsed time; deadlines only bound the waits.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import fakeredis
import pytest
import redis
from _servers import RedisServer, RedisServerFactory
from _support import HANG, wait_for
from flask import Flask

from flask_fennec_cache import (
    CachedFunction,
    CacheUnavailable,
    FennecCache,
    RedisCache,
    WriteThrough,
    cache,
)
from flask_fennec_cache._guard import Guard
from flask_fennec_cache._recovery import Invalidations, PendingInvalidations, prober

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


# ==================================================================================
# Invalidations survive an outage (issue 14 item 4)
# ==================================================================================

#: Seconds the server stays frozen while the invalidations run.
FREEZE = 0.5


def test_invalidations_sent_during_a_freeze_are_applied_after_it_without_traffic(
    server: RedisServer, made: RedisCache
) -> None:
    control = server.client()
    prefix = made.prefix
    for key in ("gone", "kept", "page:1", "page:2", "written"):
        assert made.set(key, f"old {key}") is True
    assert made.set("tagged", "old tagged", tags=("news",)) is True
    news = control.get(made.tag_index.key("news"))
    assert news is not None
    seen: list[object] = []

    def outage() -> None:
        paused = time.monotonic()
        assert made.delete("gone") == 0  # waits one timeout: Redis did not get it
        assert made.clear("page:*") == 0
        assert made.invalidate_tags("news") is False
        saved = WriteThrough(made, ttl=300).set("written", "new", writer=lambda value: "saved")
        assert saved == "saved"  # the database was written; the cache could not be
        seen.extend(made.get(key) for key in ("gone", "page:1", "tagged", "written", "kept"))
        threading.Event().wait(max(0.0, FREEZE - (time.monotonic() - paused)))

    frozen(server, outage)
    assert seen == [None] * 5  # misses while frozen, never the old values

    # No call on `made` from here: its background prober applies them.
    names = [prefix + key for key in ("gone", "page:1", "page:2", "written")]
    assert wait_for(lambda: control.exists(*names) == 0, timeout=RECOVERY_DEADLINE)
    assert wait_for(
        lambda: control.get(made.tag_index.key("news")) != news, timeout=RECOVERY_DEADLINE
    )
    assert wait_for(lambda: not made.guard.pending.waiting, timeout=RECOVERY_DEADLINE)
    assert made.get("tagged") is None
    assert made.get("written") is None
    assert made.get("kept") == "old kept"  # nothing else was touched


@pytest.fixture
def fake_server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def flaky(fake_server: fakeredis.FakeServer) -> Iterator[RedisCache]:
    """A cache whose connection errors never open its breaker: the next command after an
    outage goes to Redis at once (the case where only the pending invalidations protect)."""
    made = RedisCache(
        prefix=f"r-{uuid.uuid4().hex[:8]}:", client=fakeredis.FakeRedis(server=fake_server),
        breaker_threshold=1_000_000, stats_flush_interval=3600,
    )  # fmt: skip
    try:
        yield made
    finally:
        made.close()


def server_keys(server: fakeredis.FakeServer, made: RedisCache) -> set[str]:
    found = fakeredis.FakeRedis(server=server).keys(made.prefix + "*")
    names = [n.decode() if isinstance(n, bytes) else n for n in found]
    return {n[len(made.prefix) :] for n in names if "__fennec__" not in n}


def test_a_read_after_the_outage_applies_them_first(
    fake_server: fakeredis.FakeServer, flaky: RedisCache
) -> None:
    for key in ("a", "b", "w"):
        flaky.set(key, f"old {key}")
    fake_server.connected = False
    assert flaky.try_delete("a") is None
    assert flaky.set("b", "new b") is False
    assert WriteThrough(flaky).set("w", "new w", writer=lambda value: None) is None
    assert flaky.guard.pending.waiting
    fake_server.connected = True
    # The very first read goes to Redis (the breaker never opened): it must not see them.
    assert flaky.get_many(["a", "b", "w"]) == {}
    assert flaky.get("a") is None and flaky.get("b") is None and flaky.get("w") is None
    assert server_keys(fake_server, flaky) == set()
    assert not flaky.guard.pending.waiting


def test_pending_invalidations_are_deduplicated(
    fake_server: fakeredis.FakeServer, flaky: RedisCache
) -> None:
    fake_server.connected = False
    for _ in range(3):
        flaky.delete("a", "b")
        flaky.invalidate_tags("t")
        flaky.clear("p:*")
        flaky.drop_group("view:index")
    assert flaky.guard.pending.kept() == {
        "keys": ["a", "b"], "tags": ["t"], "groups": ["view:index"], "patterns": ["p:*"],
        "everything": False,
    }  # fmt: skip
    fake_server.connected = True
    assert flaky.get("a") is None
    assert flaky.guard.pending.kept()["keys"] == []


def test_past_the_bound_the_whole_prefix_is_invalidated(
    fake_server: fakeredis.FakeServer, flaky: RedisCache
) -> None:
    flaky.guard.pending.limit = 3
    keys = [f"k{i}" for i in range(5)]
    for key in (*keys, "unrelated"):
        flaky.set(key, key)
    fake_server.connected = False
    for key in keys:
        flaky.delete(key)
    kept = flaky.guard.pending.kept()
    assert kept["everything"] is True and kept["keys"] == []
    assert flaky.get("unrelated") is None  # nothing is read until it is applied
    fake_server.connected = True
    assert flaky.get("unrelated") is None  # everything under the prefix is a miss ...
    assert server_keys(fake_server, flaky) == {*keys, "unrelated"}  # ... in one write, no walk
    assert flaky.codec.generation is not None and flaky.codec.generation.current > 0
    assert flaky.set("unrelated", "new") is True  # written under the new generation
    assert flaky.get("unrelated") == "new"
    assert flaky.get("k0") is None


def test_failing_closed_they_are_kept_too(fake_server: fakeredis.FakeServer) -> None:
    made = RedisCache(
        prefix=f"r-{uuid.uuid4().hex[:8]}:", client=fakeredis.FakeRedis(server=fake_server),
        breaker_threshold=1_000_000, fail_open=False, stats_flush_interval=3600,
    )  # fmt: skip
    try:
        made.set("a", 1)
        fake_server.connected = False
        with pytest.raises(CacheUnavailable):
            made.delete("a")
        assert made.guard.pending.kept()["keys"] == ["a"]
        fake_server.connected = True
        assert made.get("a") is None
        assert server_keys(fake_server, made) == set()
    finally:
        made.close()


def test_while_they_cannot_be_applied_reads_are_misses_never_stale(
    fake_server: fakeredis.FakeServer, flaky: RedisCache
) -> None:
    flaky.set("a", "old")
    flaky.set("b", "old")
    fake_server.connected = False
    flaky.delete("a")
    applied = flaky.guard.pending
    original = applied._apply
    assert original is not None
    blocked = threading.Event()
    release = threading.Event()

    def slow_delete(*keys: str) -> object:
        blocked.set()
        release.wait(RECOVERY_DEADLINE)
        return original.delete(*keys)

    # Whichever thread applies them (a reader or the prober) is held inside the deletion.
    applied._apply = Invalidations(
        slow_delete, original.tags, original.group, original.clear, original.everything
    )
    fake_server.connected = True
    reader = threading.Thread(target=flaky.get, args=("b",))
    reader.start()
    try:
        assert blocked.wait(RECOVERY_DEADLINE)
        # Another thread is applying them: what they concern is a miss meanwhile, the rest is
        # read as usual.
        assert flaky.get("a") is None
        assert flaky.get("b") == "old"
        assert flaky.set("a", "new") is False  # would be removed by the kept deletion
        assert flaky.set("c", "new") is True
        assert flaky.get("c") == "new"
    finally:
        release.set()
        reader.join(RECOVERY_DEADLINE)
    assert wait_for(lambda: not applied.waiting, timeout=RECOVERY_DEADLINE)
    assert flaky.get("b") == "old"
    assert flaky.get("a") is None


def test_a_closed_cache_is_no_longer_probed(fake_server: fakeredis.FakeServer) -> None:
    made = RedisCache(
        prefix=f"r-{uuid.uuid4().hex[:8]}:", client=fakeredis.FakeRedis(server=fake_server),
        breaker_threshold=1, breaker_cooldown=600, stats_flush_interval=3600,
    )  # fmt: skip
    fake_server.connected = False
    made.get("a")
    made.delete("a")
    assert prober.watching(made.guard) and prober.watching(made.guard.pending)
    made.close()
    assert not prober.watching(made.guard) and not prober.watching(made.guard.pending)


class _ClosedMidProbe:
    """A cache closed while the prober probes it: its probe fails in redis-py's own way."""

    def __init__(self) -> None:
        self.probed = threading.Event()

    def recovered(self) -> bool:
        return False

    def probe(self) -> None:
        prober.forget(self)  # what RedisCache.close() does first
        self.probed.set()
        raise AttributeError("'NoneType' object has no attribute 'feed'")


def test_a_cache_closed_during_its_probe_does_not_break_the_prober() -> None:
    closed = _ClosedMidProbe()
    prober.watch(closed)
    assert closed.probed.wait(HANG)
    assert wait_for(lambda: not prober.watching(closed), timeout=HANG)
    later = _ClosedMidProbe()
    prober.watch(later)  # the prober still runs: it probes the next one
    assert later.probed.wait(HANG)


def test_what_a_kept_invalidation_concerns_is_a_miss_the_rest_is_not(
    fake_server: fakeredis.FakeServer, flaky: RedisCache
) -> None:
    index = "__fennec__:view:{0123456789abcdef}:view:post:1"
    flaky.set("plain", "old")
    flaky.set("tagged", "old", tags=["t"])
    flaky.set("other-tag", "old", tags=["u"])
    flaky.set("view:{0123456789abcdef}:view:post:1|h/p", "old")
    flaky.set("p:1", "old")
    # Listed in the group's index, as the views list their entries.
    flaky.client.sadd(
        flaky.prefix + index, flaky.prefix + "view:{0123456789abcdef}:view:post:1|h/p"
    )
    fake_server.connected = False
    flaky.delete("plain")
    flaky.invalidate_tags("t")
    flaky.drop_group(index)
    flaky.clear("p:[0-9]")
    pending = flaky.guard.pending
    assert pending.covers(["plain"]) and pending.covers(["p:1"]) and not pending.covers(["p:x"])
    assert pending.covers(["view:{0123456789abcdef}:view:post:1|h/p"])
    assert not pending.covers(["view:{0123456789abcdef}:view:post:2|h/p"])
    assert pending.covers_tags(["t"]) and not pending.covers_tags(["u"])
    fake_server.connected = True
    # As when they cannot be applied yet (another thread applies them; a cluster node is down).
    settle = pending.settle
    pending.settle = lambda: False  # type: ignore[method-assign]
    try:
        assert flaky.get("plain") is None
        assert flaky.get("tagged") is None
        assert flaky.get("view:{0123456789abcdef}:view:post:1|h/p") is None
        assert flaky.get("p:1") is None
        assert flaky.get("other-tag") == "old"
        assert flaky.get_many(["plain", "other-tag", "p:1"]) == {"other-tag": "old"}
    finally:
        pending.settle = settle  # type: ignore[method-assign]
    assert flaky.get("other-tag") == "old"  # applies them
    assert not pending.waiting
    assert server_keys(fake_server, flaky) == {"tagged", "other-tag"}  # stale by its tag
    assert flaky.get("tagged") is None


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        ("a*", ["a", "abc"], ["ba"]),
        ("a?c", ["abc"], ["ac", "abbc"]),
        ("[ab]x", ["ax", "bx"], ["cx"]),
        ("[^ab]x", ["cx"], ["ax"]),
        ("[a-c]", ["b"], ["d"]),
        ("a\\*", ["a*"], ["ab"]),
        ("x.y", ["x.y"], ["xzy"]),
    ],
)
def test_kept_patterns_match_as_redis_globs_do(
    pattern: str, matching: list[str], not_matching: list[str]
) -> None:
    pending = PendingInvalidations(lambda: False)
    pending.clear(pattern)
    try:
        assert all(pending.covers([key]) for key in matching)
        assert not any(pending.covers([key]) for key in not_matching)
    finally:
        prober.forget(pending)


# The generation: an O(1) invalidation of the whole prefix, seen by every process


@pytest.fixture
def two_processes(server: RedisServer) -> Iterator[tuple[RedisCache, RedisCache]]:
    """Two caches of one prefix on one real server, as two processes would have them."""
    prefix = f"g-{uuid.uuid4().hex[:8]}:"
    made = [RedisCache(server.url, prefix=prefix, stats_flush_interval=3600) for _ in range(2)]
    try:
        yield made[0], made[1]
    finally:
        for each in made:
            each.close()


def test_a_new_generation_is_seen_by_other_processes_at_their_next_flush(
    two_processes: tuple[RedisCache, RedisCache],
) -> None:
    mine, other = two_processes
    mine.set("plain", "old")
    mine.set("kept", "old", stale_ttl=60)
    assert other.get("plain") == "old" and other.get("kept") == "old"
    assert mine.codec.generation is not None and other.codec.generation is not None
    assert mine.codec.generation.bump() is True
    assert mine.get("plain") is None and mine.get("kept") is None  # at once, here
    other.codec.generation.read_again()  # what the flushing thread does every round
    assert other.get("plain") is None and other.get("kept") is None
    other.set("plain", "new")
    other.set("kept", "new", stale_ttl=60)
    assert mine.get("plain") == "new" and mine.get("kept") == "new"
    # A process started after the bump learns it as soon as it starts counting.
    fresh = RedisCache(other.url, prefix=other.prefix, stats_flush_interval=3600)
    try:
        stamped = bytes(mine.client.get(mine.prefix + "plain"))  # type: ignore[arg-type]
        assert stamped.startswith(b"G")
        mine.client.set(mine.prefix + "planted", stamped.split(b"\n", 1)[1])  # no stamp
        fresh.get("unrelated")
        current = mine.codec.generation.current
        assert wait_for(
            lambda: (
                fresh.codec.generation is not None and fresh.codec.generation.current == current
            ),
            timeout=RECOVERY_DEADLINE,
        )
        assert fresh.get("planted") is None  # written without the current generation
        assert fresh.get("plain") == "new"
    finally:
        fresh.close()


def test_every_process_reads_the_generation_on_its_flushing_thread(server: RedisServer) -> None:
    prefix = f"g-{uuid.uuid4().hex[:8]}:"
    mine = RedisCache(server.url, prefix=prefix, stats_flush_interval=3600)
    other = RedisCache(server.url, prefix=prefix, stats_flush_interval=0.05)
    try:
        mine.set("k", "old")
        assert other.get("k") == "old"  # starts its flushing thread
        assert mine.codec.generation is not None and mine.codec.generation.bump()
        # No read waits for it: the flushing thread reads it, without any traffic.
        assert wait_for(lambda: other.get("k") is None, timeout=RECOVERY_DEADLINE)
    finally:
        mine.close()
        other.close()


def test_the_generation_never_goes_back_when_its_key_is_lost(
    two_processes: tuple[RedisCache, RedisCache],
) -> None:
    mine, other = two_processes
    generation = mine.codec.generation
    assert generation is not None
    generation.bump()
    first = generation.current
    mine.set("k", "v")
    mine.client.delete(generation.key)  # evicted, or removed by hand
    generation.read_again()
    assert generation.current == first and mine.get("k") == "v"
    generation.bump()
    assert generation.current > first and mine.get("k") is None


def test_a_refresh_stores_under_the_new_generation(
    two_processes: tuple[RedisCache, RedisCache],
) -> None:
    mine, _ = two_processes
    assert mine.codec.generation is not None
    mine.codec.generation.bump()
    loads = []

    @cache(ttl=0.2, stale_ttl=60, backend=mine)
    def value() -> int:
        loads.append(1)
        return len(loads)

    assert value() == 1
    # Past its freshness: served stale while refreshed (compare-and-set on its version).
    assert wait_for(lambda: value() == 2, timeout=RECOVERY_DEADLINE)
    assert value() == 2
