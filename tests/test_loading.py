"""Freshness against a real redis-server: stale-while-revalidate, XFetch early refresh, TTL
jitter, tags and negative caching."""

from __future__ import annotations

import functools
import itertools
import threading
import time
from typing import Any, cast

import pytest
from _servers import RedisServerFactory
from _support import HANG, CacheFactory, CallCounter, Counter, run_threads, settled, wait_for

from flask_fennec_cache import (
    MISSING,
    CacheAside,
    CacheLookup,
    ConfigurationError,
    RedisCache,
    cache,
)
from flask_fennec_cache.serializers import Envelope, decode


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n[loading] {line}")


def pttl(backend: RedisCache, key: str) -> int:
    return int(backend.client.pttl(backend.prefix + key))


def raw(backend: RedisCache, key: str) -> Any:
    """The decoded stored entry (lease, envelope, value), or MISSING when the key is absent."""
    data = backend.client.get(backend.prefix + key)
    return MISSING if data is None else decode(cast(bytes, data))


def soft_expired(backend: RedisCache, key: str) -> bool:
    """Plain reads miss an enveloped entry past its soft expiry while Redis still holds it."""
    return backend.lookup(key) is MISSING and raw(backend, key) is not MISSING


# -- stale-while-revalidate -----------------------------------------------------------------------


def test_after_expiry_every_reader_gets_stale_at_once_and_one_load_refreshes_in_background(
    real_caches: CacheFactory,
) -> None:
    backend = real_caches()
    aside = CacheAside(backend, ttl=0.2, stale_ttl=60)
    assert aside.get("k", lambda: "v1") == "v1"
    assert wait_for(lambda: soft_expired(backend, "k"), timeout=HANG)
    backend.reset_stats()

    readers = 20
    loads = Counter()
    returned = Counter()
    others_done = threading.Event()
    loader_saw_others_done: list[bool] = []

    def loader() -> str:
        loads.bump()
        # The refresh cannot finish before every reader has returned: had any waited for it
        # (the one that found it stale first included), this would deadlock (and time out).
        loader_saw_others_done.append(others_done.wait(10))
        return "v2"

    def read(_: int) -> Any:
        lookup = aside.lookup("k", loader)
        if returned.bump() == readers:
            others_done.set()
        return lookup

    results = run_threads(readers, read)
    assert results == [("v1", True, "k")] * readers  # nobody waited for the refresh
    assert wait_for(lambda: backend.get("k") == "v2", timeout=HANG)  # the background load's
    assert loads.calls == 1
    assert loader_saw_others_done == [True]
    stats = backend.get_stats()
    assert stats["stale_hits"] == readers


def test_stale_entry_lives_ttl_plus_stale_ttl(cache_factory: CacheFactory) -> None:
    backend = cache_factory(ttl_jitter=0)
    CacheAside(backend, ttl=100, stale_ttl=50).get("k", lambda: "v")
    assert 149_000 <= pttl(backend, "k") <= 150_000
    entry = raw(backend, "k")
    assert isinstance(entry, Envelope)
    assert entry.fresh_until is not None
    assert 99 <= entry.fresh_until - time.time() <= 100.001  # stored to the millisecond


def test_past_the_stale_window_it_is_an_ordinary_miss(real_caches: CacheFactory) -> None:
    backend = real_caches()
    aside = CacheAside(backend, ttl=0.1, stale_ttl=0.1)
    aside.get("k", lambda: "v1")
    assert wait_for(lambda: raw(backend, "k") is MISSING, timeout=HANG)
    assert aside.lookup("k", lambda: "v2") == ("v2", False, "k")


def test_refresh_never_overwrites_a_newer_write(real_caches: CacheFactory) -> None:
    backend = real_caches()
    aside = CacheAside(backend, ttl=0.1, stale_ttl=60)
    aside.get("k", lambda: "v1")
    assert wait_for(lambda: soft_expired(backend, "k"), timeout=HANG)
    gate = threading.Event()
    loading = threading.Event()

    def slow() -> str:
        loading.set()
        gate.wait(HANG)
        return "refreshed from an old read"

    thread = threading.Thread(target=lambda: aside.get("k", slow))
    thread.start()
    assert loading.wait(HANG)
    backend.set("k", "written meanwhile", ttl=60)
    gate.set()
    thread.join(HANG)
    assert backend.get("k") == "written meanwhile"


def test_refresh_never_resurrects_a_deleted_key(real_caches: CacheFactory) -> None:
    backend = real_caches()
    aside = CacheAside(backend, ttl=0.1, stale_ttl=60)
    aside.get("k", lambda: "v1")
    assert wait_for(lambda: soft_expired(backend, "k"), timeout=HANG)
    gate = threading.Event()
    loading = threading.Event()

    def slow() -> str:
        loading.set()
        gate.wait(HANG)
        return "refreshed from an old read"

    thread = threading.Thread(target=lambda: aside.get("k", slow))
    thread.start()
    assert loading.wait(HANG)
    assert backend.delete("k") == 1
    gate.set()
    thread.join(HANG)
    assert raw(backend, "k") is MISSING


def test_explicit_set_with_stale_ttl_is_served_stale_to_loaders(real_caches: CacheFactory) -> None:
    backend = real_caches()
    backend.set("k", "v1", ttl=0.1, stale_ttl=60)
    assert wait_for(lambda: soft_expired(backend, "k"), timeout=HANG)
    assert backend.get("k") is None  # a plain read never serves a stale value
    gate = threading.Event()
    loading = threading.Event()

    def slow() -> str:
        loading.set()
        gate.wait(HANG)
        return "v2"

    refresher = threading.Thread(target=lambda: CacheAside(backend, ttl=60).get("k", slow))
    refresher.start()
    try:
        assert loading.wait(HANG)
        lookup: CacheLookup[str] = CacheAside(backend, ttl=60).lookup(
            "k", lambda: pytest.fail("no second load")
        )
        assert lookup == ("v1", True, "k")
    finally:
        gate.set()
        refresher.join(HANG)
    assert backend.get("k") == "v2"


# -- XFetch: no burst of loads at expiry ----------------------------------------------------------


class HotKey:
    """Several threads read one key continuously; record every loader call."""

    def __init__(self, aside: CacheAside, threads: int, seconds: float) -> None:
        self.aside = aside
        self.threads = threads
        self.seconds = seconds
        self._lock = threading.Lock()
        self.running = 0
        self.max_running = 0
        self.starts: list[float] = []
        self.reads = 0

    def loader(self) -> int:
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.starts.append(time.monotonic())
            generation = len(self.starts)
        time.sleep(0.01)
        with self._lock:
            self.running -= 1
        return generation

    def run(self) -> HotKey:
        stop = threading.Event()
        errors: list[BaseException] = []

        def read() -> None:
            count = 0
            try:
                while not stop.is_set():
                    self.aside.get("hot", self.loader)
                    count += 1
            except BaseException as exc:
                errors.append(exc)
            with self._lock:
                self.reads += count

        threads = [threading.Thread(target=read) for _ in range(self.threads)]
        for thread in threads:
            thread.start()
        time.sleep(self.seconds)
        stop.set()
        for thread in threads:
            thread.join(HANG)
        if errors:
            raise errors[0]
        return self

    def bursts(self, window: float) -> list[int]:
        """Sizes of groups of loads that started within *window* of the group's first."""
        sizes: list[int] = []
        first = None
        for start in self.starts:
            if first is None or start - first > window:
                first = start
                sizes.append(0)
            sizes[-1] += 1
        return sizes


def test_an_early_refresh_that_outlasts_the_ttl_keeps_the_entry_for_other_readers(
    real_caches: CacheFactory,
) -> None:
    """XFetch without stale_ttl: had the entry expired under a running refresh, a reader would
    find the key gone and load a second time; it is kept, served stale, until the refresh
    stores its value."""
    backend = real_caches(ttl_jitter=0)
    # Long enough that a stalled machine still reads the refreshed value within its life.
    ttl = 1.5
    aside = CacheAside(backend, ttl=ttl, beta=1e9, lock_timeout=5.0)  # every read refreshes
    loads = Counter()
    release = threading.Event()

    def first() -> str:
        time.sleep(0.02)  # a load time, which XFetch scales
        return "v1"

    def slow_refresh() -> str:
        loads.bump()
        release.wait(HANG)
        return "v2"

    assert aside.get("k", first) == "v1"
    refresher = threading.Thread(target=aside.get, args=("k", slow_refresh))
    refresher.start()
    assert wait_for(lambda: loads.calls == 1, timeout=HANG)
    time.sleep(ttl + 0.1)  # past the entry's freshness and its original life in Redis
    assert pttl(backend, "k") > 0
    assert aside.lookup("k", slow_refresh) == ("v1", True, "k")  # served stale, not loaded
    release.set()
    refresher.join(HANG)
    assert wait_for(lambda: backend.get("k") == "v2", timeout=HANG)  # stored in the background
    assert loads.calls == 1
    assert aside.get("k", slow_refresh) == "v2"
    assert backend.get_stats()["stale_hits"] >= 1


def test_a_value_refreshed_early_is_never_given_a_shorter_life(real_caches: CacheFactory) -> None:
    """Keeping an entry through its refresh only ever lengthens its life in Redis."""
    backend = real_caches(ttl_jitter=0)
    aside = CacheAside(backend, ttl=60, stale_ttl=600, beta=1e9, lock_timeout=1.0)

    def first() -> str:
        time.sleep(0.01)  # a load time, which XFetch scales
        return "v1"

    seen: list[int] = []

    def refresh() -> str:
        seen.append(pttl(backend, "k"))
        return "v2"

    assert aside.get("k", first) == "v1"
    before = pttl(backend, "k")
    assert aside.get("k", refresh) in ("v1", "v2")
    assert wait_for(lambda: seen, timeout=HANG)  # the refresh runs in the background
    assert seen[0] > before - 5_000  # not cut down to lock_timeout


def test_xfetch_hot_key_never_bursts_at_expiry(
    real_caches: CacheFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    ttl = 0.4
    backend = real_caches(ttl_jitter=0)
    hot = HotKey(CacheAside(backend, ttl=ttl, beta=1.0), threads=6, seconds=2.0).run()
    gaps = [b - a for a, b in itertools.pairwise(hot.starts)]
    report(
        capsys,
        f"XFetch beta=1, ttl {ttl}s, 6 threads, {hot.reads} reads: {len(hot.starts)} "
        f"loads, at most {hot.max_running} at once, bursts {hot.bursts(ttl / 4)}, gaps between "
        f"loads {', '.join(f'{g * 1000:.0f}' for g in gaps)} ms",
    )
    assert hot.max_running == 1
    assert max(hot.bursts(ttl / 4)) <= 2


def test_stale_while_revalidate_hot_key_never_bursts_at_expiry(
    real_caches: CacheFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    ttl = 0.4
    backend = real_caches(ttl_jitter=0)
    hot = HotKey(CacheAside(backend, ttl=ttl, stale_ttl=10), threads=6, seconds=2.0).run()
    report(
        capsys,
        f"stale_ttl, ttl {ttl}s, 6 threads, {hot.reads} reads: {len(hot.starts)} "
        f"loads, at most {hot.max_running} at once, bursts {hot.bursts(ttl / 4)}",
    )
    assert hot.max_running == 1
    assert max(hot.bursts(ttl / 4)) <= 2


def test_the_burst_detector_sees_the_burst_of_an_unprotected_key(
    real_caches: CacheFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Control: without single flight (lock=False) every reader loads at expiry."""
    ttl = 0.4
    backend = real_caches(ttl_jitter=0)
    hot = HotKey(CacheAside(backend, ttl=ttl, lock=False), threads=6, seconds=1.3).run()
    report(
        capsys,
        f"control lock=False: {len(hot.starts)} loads, at most {hot.max_running} at "
        f"once, bursts {hot.bursts(ttl / 4)}",
    )
    assert hot.max_running > 1
    assert max(hot.bursts(ttl / 4)) > 2


# -- TTL jitter -----------------------------------------------------------------------------------


def test_ttl_jitter_spreads_loader_fills(cache_factory: CacheFactory) -> None:
    backend = cache_factory(ttl_jitter=0.1)
    aside = CacheAside(backend, ttl=100)
    started = time.monotonic()
    for i in range(200):
        aside.get(f"k{i}", functools.partial(int, i))
    pipe = backend.client.pipeline(transaction=False)
    for i in range(200):
        pipe.pttl(backend.prefix + f"k{i}")
    ttls = pipe.execute()
    elapsed_ms = (time.monotonic() - started) * 1000 + 1  # PTTLs tick down while we fill
    assert all(90_000 - elapsed_ms <= t <= 100_000 for t in ttls), (min(ttls), max(ttls))
    assert len(set(ttls)) > 100
    assert max(ttls) - min(ttls) > 5_000  # spread over the 10 s window, not bunched


def test_explicit_set_ttl_is_exact(cache_factory: CacheFactory) -> None:
    backend = cache_factory(ttl_jitter=0.1)
    for i in range(20):
        backend.set(f"k{i}", i, ttl=100)
    assert all(pttl(backend, f"k{i}") >= 99_000 for i in range(20))


def test_no_jitter_when_disabled(cache_factory: CacheFactory) -> None:
    backend = cache_factory(ttl_jitter=0)
    aside = CacheAside(backend, ttl=100)
    for i in range(20):
        aside.get(f"k{i}", functools.partial(int, i))
    assert all(pttl(backend, f"k{i}") >= 99_000 for i in range(20))


# -- tags -----------------------------------------------------------------------------------------


def test_invalidate_tags_drops_decorated_and_set_entries(cache_factory: CacheFactory) -> None:
    backend = cache_factory()
    calls = Counter()

    @cache(ttl=60, backend=backend, key="user:{uid}", tags=("users",))
    def user(uid: int) -> dict[str, int]:
        return {"uid": uid, "call": calls.bump()}

    assert user.lookup(1).hit is False
    assert user.lookup(1).hit is True
    backend.set("profile:1", "p1", ttl=60, tags=["users"])
    backend.set("order:1", "o1", ttl=60, tags=["orders"])
    backend.set("both:1", "b1", ttl=60, tags=["users", "orders"])
    assert backend.get("profile:1") == "p1"

    assert backend.invalidate_tags("users") is True
    assert backend.get("profile:1") is None
    assert backend.get("both:1") is None
    assert backend.get("order:1") == "o1"  # another tag is untouched
    assert backend.get_many(["profile:1", "order:1", "both:1"]) == {"order:1": "o1"}
    again = user.lookup(1)
    assert again.hit is False and again.value == {"uid": 1, "call": 2}
    assert user.lookup(1).hit is True  # refilled under the new tag version


def test_invalidating_10000_tagged_keys_is_one_round_trip(
    redis_server_factory: RedisServerFactory,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = redis_server_factory()
    # Generous socket timeout: on a loaded machine one of the 10,000 writes can outlast the
    # default 0.25 s, and fail-open skips it (this test counts round trips, not latency).
    backend = RedisCache(server.url, prefix=prefix, stats_flush_interval=3600, socket_timeout=10)
    settled(backend)  # its statistics thread sends nothing more
    try:
        started = time.perf_counter()
        for i in range(10_000):
            backend.set(f"item:{i}", i, ttl=600, tags=["items"])
        filled = time.perf_counter() - started
        admin = server.client()
        assert admin.dbsize() > 10_000

        def commandstats() -> dict[str, int]:
            stats = admin.info("commandstats")
            return {name: int(v["calls"]) for name, v in stats.items() if name != "cmdstat_info"}

        counter = CallCounter().install(backend, monkeypatch)
        before = commandstats()
        assert backend.invalidate_tags("items") is True
        after = commandstats()
        delta = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
        assert counter.round_trips == 1
        assert delta == {"cmdstat_set": 1}, delta  # one SET at the server, whatever the keys
        monkeypatch.undo()
        assert backend.get_many([f"item:{i}" for i in range(10_000)]) == {}
        report(
            capsys,
            f"10,000 tagged keys (filled in {filled:.2f}s): invalidate_tags = "
            f"{counter.round_trips} round trip, server commands {delta}",
        )
    finally:
        backend.close()


def test_tag_invalidation_racing_a_loader_leaves_no_stale_entry(
    cache_factory: CacheFactory,
) -> None:
    """The loader reads the database, then the database changes and the tag is invalidated,
    then the loader stores: its entry carries the tag version read before it loaded, so it is
    a miss."""
    backend = cache_factory()
    database = {"user:1": "old"}
    gate = threading.Event()
    loading = threading.Event()
    aside = CacheAside(backend, ttl=60, tags=("users",))

    def slow() -> str:
        value = database["user:1"]
        loading.set()
        gate.wait(HANG)
        return value

    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(aside.get("user:1", slow)))
    thread.start()
    assert loading.wait(HANG)
    database["user:1"] = "new"
    backend.invalidate_tags("users")
    gate.set()
    thread.join(HANG)
    assert out == ["old"]  # that call began before the write: it may return the old value
    assert backend.get("user:1") is None
    assert aside.get("user:1", lambda: database["user:1"]) == "new"


def test_tag_invalidation_racing_a_decorated_loader(cache_factory: CacheFactory) -> None:
    backend = cache_factory()
    database = {"name": "old"}
    gate = threading.Event()
    loading = threading.Event()

    @cache(ttl=60, backend=backend, key="user:{uid}", tags=("users",))
    def user(uid: int) -> str:
        value = database["name"]
        loading.set()
        gate.wait(HANG)
        return value

    thread = threading.Thread(target=user, args=(1,))
    thread.start()
    assert loading.wait(HANG)
    database["name"] = "new"
    backend.invalidate_tags("users")
    gate.set()
    thread.join(HANG)
    assert user.lookup(1) == ("new", False, "user:1")


def tag_keys(backend: RedisCache, tag: str) -> list[bytes]:
    return list(backend.client.scan_iter(match=f"{backend.prefix}__fennec__:*:{tag}"))


def test_evicted_tag_key_makes_entries_misses_and_never_revives_them(
    cache_factory: CacheFactory,
) -> None:
    backend = cache_factory()
    calls = Counter()

    @cache(ttl=60, backend=backend, key="user:{uid}", tags=("users",))
    def user(uid: int) -> int:
        return calls.bump()

    assert user(1) == 1
    backend.set("profile:1", "p1", ttl=60, tags=["users"])
    keys = tag_keys(backend, "users")
    assert len(keys) == 1
    backend.client.delete(*keys)  # as if Redis evicted the tag's version

    assert backend.get("profile:1") is None
    assert user.lookup(1) == (2, False, "user:1")  # reloaded under a brand-new version
    assert len(tag_keys(backend, "users")) == 1
    assert backend.get("profile:1") is None  # the new version does not revive the old entry
    assert user.lookup(1) == (2, True, "user:1")


def test_untagged_write_through_value_is_not_dropped_by_tags(cache_factory: CacheFactory) -> None:
    """Documented limit: only entries written with tags carry them."""
    backend = cache_factory()
    backend.set("plain", "v", ttl=60)
    backend.invalidate_tags("users")
    assert backend.get("plain") == "v"


# -- negative caching -----------------------------------------------------------------------------


def test_none_is_cached_for_none_ttl_and_values_for_ttl(cache_factory: CacheFactory) -> None:
    backend = cache_factory()  # default jitter 0.1: TTLs land in [0.9 * ttl, ttl]
    aside = CacheAside(backend, ttl=100, cache_none=True, none_ttl=5)
    loads = Counter()

    def missing() -> None:
        loads.bump()
        return None

    assert aside.lookup("absent", missing) == (None, False, "absent")
    assert 4_000 <= pttl(backend, "absent") <= 5_000  # [0.9, 1] x none_ttl, minus elapsed (<0.5 s)
    assert aside.lookup("absent", missing) == (None, True, "absent")
    assert loads.calls == 1
    assert aside.get("present", lambda: "here") == "here"
    assert 89_000 <= pttl(backend, "present") <= 100_000


def test_decorator_none_ttl(cache_factory: CacheFactory) -> None:
    backend = cache_factory(ttl_jitter=0)
    calls = Counter()

    @cache(ttl=100, backend=backend, key="user:{uid}", cache_none=True, none_ttl=3)
    def user(uid: int) -> str | None:
        calls.bump()
        return None if uid == 0 else f"user {uid}"

    assert user.lookup(0) == (None, False, "user:0")
    assert user.lookup(0) == (None, True, "user:0")
    assert user(7) == "user 7"
    assert calls.calls == 2
    assert 2_000 < pttl(backend, "user:0") <= 3_000
    assert 99_000 < pttl(backend, "user:7") <= 100_000


def test_none_is_not_cached_without_cache_none(cache_factory: CacheFactory) -> None:
    backend = cache_factory()
    aside = CacheAside(backend, ttl=100, none_ttl=5)
    loads = Counter()

    def missing() -> None:
        loads.bump()
        return None

    aside.get("absent", missing)
    aside.get("absent", missing)
    assert loads.calls == 2
    assert backend.client.exists(backend.prefix + "absent") == 0


def test_negative_entry_expires_after_none_ttl(real_caches: CacheFactory) -> None:
    backend = real_caches()
    aside = CacheAside(backend, ttl=100, cache_none=True, none_ttl=0.2)
    aside.get("absent", lambda: None)
    assert wait_for(lambda: raw(backend, "absent") is MISSING, timeout=HANG)
    assert aside.lookup("absent", lambda: "now here") == ("now here", False, "absent")
    assert 89_000 <= pttl(backend, "absent") <= 100_000


def test_cached_view_entries_carry_their_tags(real_caches: CacheFactory) -> None:
    from flask import Flask

    backend = real_caches()
    app = Flask(__name__)
    calls = Counter()

    @app.get("/users")
    @cache(ttl=60, backend=backend, tags=("users",))
    def users() -> str:
        return f"users v{calls.bump()}"

    client = app.test_client()
    assert client.get("/users").headers["X-Cache"] == "MISS"
    assert client.get("/users").headers["X-Cache"] == "HIT"
    backend.invalidate_tags("users")
    response = client.get("/users")
    assert response.headers["X-Cache"] == "MISS", "invalidate_tags left a tagged view cached"
    assert response.get_data() == b"users v2"


# -- option validation (no server) ----------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"ttl": 0},
        {"none_ttl": -1},
        {"stale_ttl": True},
        {"ttl": float("inf")},
        {"stale_ttl": float("nan")},
        {"ttl": "60"},
        {"lock_timeout": 0},
        {"lock_timeout": float("inf")},
        {"beta": -0.5},
        {"tags": "users"},
    ],
)
def test_bad_freshness_options_are_refused(fake_backend: RedisCache, options: Any) -> None:
    with pytest.raises(ConfigurationError):
        CacheAside(fake_backend, **options)
    with pytest.raises(ConfigurationError):
        cache(backend=fake_backend, **options)


@pytest.mark.parametrize("jitter", [-0.1, 1, 1.5])
def test_ttl_jitter_must_be_a_fraction(memory_url: str, jitter: float) -> None:
    with pytest.raises(ConfigurationError):
        RedisCache(memory_url, ttl_jitter=jitter)
