"""Single-flight loading and leases, against a real redis-server (threads and processes).

Numbers printed here (waiter latencies) are for the reader; nothing asserts on wall-clock time
except generous deadlines that only detect a hang.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

import pytest
import redis
from _servers import RedisServer, find_free_port
from _support import HANG, CacheFactory, Counter, run_threads, wait_for

from flask_fennec_cache import MISSING, CacheAside, RedisCache, WriteThrough, cache, loading
from flask_fennec_cache.serializers import Lease, decode

SPAWN = multiprocessing.get_context("spawn")


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n[locks] {line}")


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def raw(backend: RedisCache, key: str) -> Any:
    """The decoded stored entry (lease, envelope, value), or MISSING when the key is absent."""
    data = backend.client.get(backend.prefix + key)
    return MISSING if data is None else decode(cast(bytes, data))


# -- stampede: threads ----------------------------------------------------------------------------


def lag_line(label: str, lags: list[float]) -> str:
    """Waiter latency past the moment the loader returned (what single flight adds)."""
    return (
        f"{label}: waiters got the value p50 {percentile(lags, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(lags, 0.99) * 1000:.1f} ms, max {max(lags) * 1000:.1f} ms "
        "after the 200 ms loader returned"
    )


def test_fifty_threads_one_cold_key_one_load(
    real_caches: CacheFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = real_caches()
    backend.ping()
    aside = CacheAside(backend, ttl=60)
    loads = Counter()
    loaded_at: list[float] = []

    def loader() -> dict[str, int]:
        loads.bump()
        time.sleep(0.2)
        loaded_at.append(time.perf_counter())
        return {"answer": 42}

    results = run_threads(50, lambda i: (aside.lookup("cold", loader), time.perf_counter()))
    assert loads.calls == 1
    assert all(lookup.value == {"answer": 42} for lookup, _ in results)
    assert sorted(lookup.hit for lookup, _ in results) == [False] + [True] * 49
    lags = [done - loaded_at[0] for lookup, done in results if lookup.hit]
    report(capsys, lag_line("50 threads, one RedisCache (in-process single flight)", lags))


def test_fifty_caches_one_cold_key_one_load_through_the_lease(
    real_caches: CacheFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each thread has its own RedisCache (no in-process coalescing): only the lease protects."""
    backends = [real_caches() for _ in range(50)]
    for each in backends:
        each.ping()
    loads = Counter()
    loaded_at: list[float] = []

    def loader() -> str:
        loads.bump()
        time.sleep(0.2)
        loaded_at.append(time.perf_counter())
        return "value"

    results = run_threads(
        50,
        lambda i: (CacheAside(backends[i], ttl=60).lookup("cold", loader), time.perf_counter()),
    )
    assert loads.calls == 1
    assert all(lookup.value == "value" for lookup, _ in results)
    lags = sorted(done - loaded_at[0] for _, done in results)[1:]  # all but the loader's own
    report(capsys, lag_line("50 RedisCaches in threads (lease polling)", lags))


def test_lease_waiter_in_another_process_reports_hit(real_caches: CacheFactory) -> None:
    """The smallest case of the above: B waits on A's lease and gets A's value, so hit=True."""
    first, second = real_caches(), real_caches()
    gate = threading.Event()
    loading = threading.Event()

    def slow_loader() -> str:
        loading.set()
        gate.wait(HANG)
        return "from A"

    holder = threading.Thread(target=lambda: CacheAside(first, ttl=60).get("k", slow_loader))
    holder.start()
    assert loading.wait(HANG)
    waiter_result: list[Any] = []
    waiter = threading.Thread(
        target=lambda: waiter_result.append(
            CacheAside(second, ttl=60).lookup("k", lambda: pytest.fail("B must not load"))
        )
    )
    waiter.start()
    time.sleep(0.05)
    gate.set()
    holder.join(HANG)
    waiter.join(HANG)
    assert waiter_result and waiter_result[0].value == "from A"
    assert waiter_result[0].hit is True


# -- stampede: processes --------------------------------------------------------------------------


def stampede_process(
    url: str, prefix: str, counter_key: str, threads: int, ready: Any, results: Any
) -> None:
    """Child process: its own RedisCache; *threads* threads miss one key at once."""
    backend = RedisCache(url, prefix=prefix)
    counter = redis.Redis.from_url(url)
    backend.ping()
    counter.ping()

    def loader() -> dict[str, int]:
        counter.incr(counter_key)
        time.sleep(0.2)
        counter.set(counter_key + ":done", repr(time.time()))
        return {"answer": 42}

    out: list[tuple[Any, bool, float]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads + 1)

    def body() -> None:
        barrier.wait()
        lookup = CacheAside(backend, ttl=60).lookup("cold", loader)
        with lock:
            out.append((lookup.value, lookup.hit, time.time()))

    workers = [threading.Thread(target=body) for _ in range(threads)]
    for worker in workers:
        worker.start()
    ready.wait()  # every process is ready: go
    barrier.wait()
    for worker in workers:
        worker.join()
    results.put(out)
    backend.close()
    counter.close()


def test_processes_and_threads_one_cold_key_one_load(
    redis_server: RedisServer, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    processes, threads = 4, 10
    counter_key = f"loads-{uuid.uuid4().hex}"  # outside the prefix: the test's own counter
    ready = SPAWN.Barrier(processes + 1)
    results = SPAWN.Queue()
    children = [
        SPAWN.Process(
            target=stampede_process,
            args=(redis_server.url, prefix, counter_key, threads, ready, results),
        )
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    try:
        ready.wait(HANG)
        outcomes: list[tuple[Any, bool, float]] = []
        for _ in children:
            outcomes.extend(results.get(timeout=HANG))
        for child in children:
            child.join(HANG)
            assert child.exitcode == 0
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
                child.join()
    client = redis_server.client()
    assert int(client.get(counter_key) or 0) == 1
    assert len(outcomes) == processes * threads
    assert all(value == {"answer": 42} for value, _, _ in outcomes)
    loaded_at = float(client.get(counter_key + ":done") or 0)
    lags = sorted(done - loaded_at for _, _, done in outcomes)[1:]
    misses = sum(1 for _, hit, _ in outcomes if not hit)
    report(
        capsys,
        lag_line(f"{processes} processes x {threads} threads", lags)
        + f"; calls reporting hit=False: {misses} (see test_lease_waiter_*_reports_hit)",
    )


# -- holder death ---------------------------------------------------------------------------------


def hold_lease_and_hang(url: str, prefix: str, key: str, started_key: str) -> None:
    """Child process: take the key's lease, announce it, then hang in the loader."""
    backend = RedisCache(url, prefix=prefix)
    announce = redis.Redis.from_url(url)

    def loader() -> str:
        announce.set(started_key, "1")
        time.sleep(3600)
        return "never"

    CacheAside(backend, ttl=60, lock_timeout=0.5).get(key, loader)


def test_holder_killed_mid_load_a_waiter_takes_over(
    redis_server: RedisServer, real_caches: CacheFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = real_caches()
    started_key = f"started-{uuid.uuid4().hex}"
    client = redis_server.client()
    child = SPAWN.Process(
        target=hold_lease_and_hang, args=(redis_server.url, backend.prefix, "k", started_key)
    )
    child.start()
    try:
        assert wait_for(lambda: client.get(started_key), timeout=HANG), "child never loaded"
        assert isinstance(raw(backend, "k"), Lease)
        time.sleep(0.1)  # the waiters arrive well after the lease was taken
        loads = Counter()

        def loader() -> str:
            loads.bump()
            return "taken over"

        aside = CacheAside(backend, ttl=60, lock_timeout=0.5)
        waiters: list[Any] = []

        def wait() -> None:
            waiters.append(timed(lambda: aside.lookup("k", loader)))

        threads = [threading.Thread(target=wait) for _ in range(5)]
        for thread in threads:
            thread.start()
        time.sleep(0.05)
        child.kill()
        child.join(HANG)
        for thread in threads:
            thread.join(HANG)
            assert not thread.is_alive(), "a waiter waited forever for a dead holder"
    finally:
        if child.is_alive():
            child.kill()
            child.join()
    assert [lookup.value for lookup, _ in waiters] == ["taken over"] * 5
    assert loads.calls == 1
    assert backend.get("k") == "taken over"  # the takeover went through a new lease and stored
    report(
        capsys,
        "holder SIGKILLed mid-load (lock_timeout 0.5 s): waiters returned after "
        + ", ".join(f"{s * 1000:.0f}" for _, s in sorted(waiters, key=lambda w: w[1]))
        + " ms",
    )


def test_dead_holder_lease_expires_and_is_taken_over(cache_factory: CacheFactory) -> None:
    """A lease left by a dead holder (written here by hand) blocks for at most its expiry."""
    backend = cache_factory()
    backend.client.set(backend.prefix + "k", b"L" + b"0" * 32, px=300)
    lookup = CacheAside(backend, ttl=60, lock_timeout=2).lookup("k", lambda: "fresh")
    assert lookup == ("fresh", False, "k")
    assert backend.get("k") == "fresh"


def test_dead_holder_waiters_arriving_with_the_lease_still_elect_one_loader(
    real_caches: CacheFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """The usual stampede: the holder takes the lease and the waiters arrive a few ms later;
    the holder dies (SIGKILL, gunicorn worker timeout). When the lease expires one waiter must
    take it over and store; the others must get its value, not all load at once."""
    backends = [real_caches() for _ in range(10)]
    for each in backends:
        each.ping()
    backends[0].client.set(backends[0].prefix + "k", b"L" + b"0" * 32, px=500)  # dead holder
    loads = Counter()

    def loader() -> str:
        loads.bump()
        time.sleep(0.05)
        return "v"

    results = run_threads(
        10, lambda i: CacheAside(backends[i], ttl=60, lock_timeout=0.5).lookup("k", loader)
    )
    report(
        capsys,
        f"dead holder, 10 co-arriving waiters: {loads.calls} loads, "
        f"stored afterwards: {backends[0].get('k')!r}",
    )
    assert all(lookup.value == "v" for lookup in results)
    assert loads.calls == 1
    assert backends[0].get("k") == "v"


def test_a_waiter_held_back_past_its_deadline_waits_for_the_one_that_took_over(
    cache_factory: CacheFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dead holder's lease expires; this waiter reads the free key, then the scheduler
    holds it back past its deadline while another waiter takes the key. Losing that race means
    a new holder: the waiter waits for its value instead of loading a second time."""
    waiter, rival = cache_factory(), cache_factory()
    waiter.client.set(waiter.prefix + "k", b"L" + b"0" * 32, px=400)  # dead holder
    release = threading.Event()
    rivals: list[threading.Thread] = []
    real_read = loading._read

    def held_back_read(*args: Any) -> Any:
        entry, current = real_read(*args)
        if entry is MISSING and not rivals:
            rival_thread = threading.Thread(
                target=CacheAside(rival, ttl=60).lookup,
                args=("k", lambda: release.wait(HANG) and "rival's"),
            )
            rivals.append(rival_thread)
            rival_thread.start()
            assert wait_for(lambda: isinstance(raw(rival, "k"), Lease), timeout=HANG)
            time.sleep(0.6)  # past this waiter's deadline (lock_timeout 0.4 s + polls)
            release.set()
        return entry, current

    monkeypatch.setattr(loading, "_read", held_back_read)
    loads = Counter()

    def load() -> str:
        loads.bump()
        return "waiter's"

    try:
        lookup = CacheAside(waiter, ttl=60, lock_timeout=0.4).lookup("k", load)
    finally:
        release.set()
        for thread in rivals:
            thread.join(HANG)
    assert rivals, "the waiter never read the free key"
    assert lookup.value == "rival's"
    assert lookup.hit is True
    assert loads.calls == 0


def test_waiter_gives_up_after_lock_timeout_and_loads_without_storing(
    real_caches: CacheFactory,
) -> None:
    """A live holder slower than the waiter's lock_timeout: the waiter loads, stores nothing."""
    holder, waiter = real_caches(), real_caches()
    gate = threading.Event()
    loading = threading.Event()

    def slow() -> str:
        loading.set()
        gate.wait(HANG)
        return "holder"

    thread = threading.Thread(target=lambda: CacheAside(holder, lock_timeout=HANG).get("k", slow))
    thread.start()
    try:
        assert loading.wait(HANG)
        lookup = CacheAside(waiter, lock_timeout=0.2).lookup("k", lambda: "waiter")
        assert lookup.value == "waiter"
        assert lookup.hit is False
        assert isinstance(raw(holder, "k"), Lease)  # the holder's lease is untouched
    finally:
        gate.set()
        thread.join(HANG)
    assert holder.get("k") == "holder"


# -- leases: a write during a load wins -----------------------------------------------------------


def blocked_load(
    backend: RedisCache, key: str, loaded: str, **options: Any
) -> tuple[threading.Thread, threading.Event, list[Any]]:
    """Start a lookup whose loader returns *loaded* once the returned event is set."""
    gate = threading.Event()
    loading = threading.Event()
    out: list[Any] = []

    def loader() -> str:
        loading.set()
        gate.wait(HANG)
        return loaded

    thread = threading.Thread(
        target=lambda: out.append(CacheAside(backend, ttl=60, **options).lookup(key, loader))
    )
    thread.start()
    assert loading.wait(HANG)
    return thread, gate, out


def finish(thread: threading.Thread, gate: threading.Event) -> None:
    gate.set()
    thread.join(HANG)
    assert not thread.is_alive()


def test_lease_placeholder_reads_as_a_miss(cache_factory: CacheFactory) -> None:
    backend = cache_factory()
    thread, gate, _ = blocked_load(backend, "k", "v")
    try:
        assert isinstance(raw(backend, "k"), Lease)
        assert backend.get("k") is None
        assert backend.lookup("k") is MISSING
        assert backend.get_many(["k"]) == {}
    finally:
        finish(thread, gate)
    assert backend.get("k") == "v"


def test_set_during_a_load_wins(cache_factory: CacheFactory) -> None:
    backend = cache_factory()
    thread, gate, out = blocked_load(backend, "k", "old from the loader")
    backend.set("k", "newer", ttl=60)
    finish(thread, gate)
    assert out[0].value == "old from the loader"  # the caller gets what it loaded...
    assert backend.get("k") == "newer"  # ...but it does not overwrite the newer write


def test_delete_during_a_load_wins(cache_factory: CacheFactory) -> None:
    backend = cache_factory()
    thread, gate, _ = blocked_load(backend, "k", "old from the loader")
    assert backend.delete("k") == 1  # removes the lease placeholder
    finish(thread, gate)
    assert backend.lookup("k") is MISSING
    assert backend.client.exists(backend.prefix + "k") == 0


def test_write_through_during_a_load_wins(cache_factory: CacheFactory) -> None:
    backend = cache_factory()
    record: dict[str, str] = {"k": "old"}
    thread, gate, _ = blocked_load(backend, "k", "old")
    WriteThrough(backend, ttl=60).set("k", "new", writer=lambda v: record.update(k=v))
    finish(thread, gate)
    assert backend.get("k") == record["k"] == "new"


def test_decorator_invalidate_during_a_load_wins(cache_factory: CacheFactory) -> None:
    backend = cache_factory()
    gate = threading.Event()
    loading = threading.Event()
    source = {"user": "old"}

    @cache(ttl=60, backend=backend, key="user:{uid}")
    def user(uid: int) -> str:
        value = source["user"]
        loading.set()
        gate.wait(HANG)
        return value

    thread = threading.Thread(target=user, args=(1,))
    thread.start()
    assert loading.wait(HANG)
    source["user"] = "new"
    assert user.invalidate(1) is True
    finish(thread, gate)
    assert backend.lookup("user:1") is MISSING
    assert user(1) == "new"


def test_loader_slower_than_its_lease_never_overwrites_the_next_holder(
    real_caches: CacheFactory,
) -> None:
    """The lease expires under a slow loader; a second caller takes a new lease and stores.
    The first loader's late value lands nowhere (its lease token is gone)."""
    first, second = real_caches(), real_caches()
    thread, gate, _ = blocked_load(first, "k", "late", lock_timeout=0.2)
    assert wait_for(lambda: not isinstance(raw(first, "k"), Lease), timeout=HANG)
    assert CacheAside(second, ttl=60, lock_timeout=0.2).get("k", lambda: "second") == "second"
    finish(thread, gate)
    assert first.get("k") == "second"


def test_loader_slower_than_its_lease_stores_nothing(real_caches: CacheFactory) -> None:
    backend = real_caches()
    thread, gate, out = blocked_load(backend, "k", "late", lock_timeout=0.2)
    assert wait_for(lambda: raw(backend, "k") is MISSING, timeout=HANG)
    finish(thread, gate)
    assert out[0].value == "late"
    assert backend.lookup("k") is MISSING


def test_loader_raising_releases_the_lease(cache_factory: CacheFactory) -> None:
    backend = cache_factory()

    def boom() -> str:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        CacheAside(backend, ttl=60).get("k", boom)
    assert raw(backend, "k") is MISSING  # no lease left to make the next caller wait
    assert CacheAside(backend, ttl=60, lock_timeout=HANG).lookup("k", lambda: "ok").value == "ok"


def test_none_not_cached_releases_the_lease(cache_factory: CacheFactory) -> None:
    backend = cache_factory()
    assert CacheAside(backend, ttl=60).get("k", lambda: None) is None
    assert raw(backend, "k") is MISSING


# -- lock=False -----------------------------------------------------------------------------------


def test_lock_false_every_miss_loads_only_the_lease_holder_stores(
    cache_factory: CacheFactory,
) -> None:
    backend = cache_factory()
    loads = Counter()
    gate = threading.Event()
    holder_loading = threading.Event()

    def holder_loader() -> str:
        loads.bump()
        holder_loading.set()
        gate.wait(HANG)
        return "holder"

    out: list[Any] = []
    thread = threading.Thread(
        target=lambda: out.append(
            CacheAside(backend, ttl=60, lock=False).lookup("k", holder_loader)
        )
    )
    thread.start()
    assert holder_loading.wait(HANG)
    try:
        # A second miss in the same process does not wait (no single flight): it loads too...
        def other_loader() -> str:
            loads.bump()
            return "other"

        lookup = CacheAside(backend, ttl=60, lock=False).lookup("k", other_loader)
        assert lookup == ("other", False, "k")
        # ...but does not store: the holder's lease is still there.
        assert isinstance(raw(backend, "k"), Lease)
    finally:
        finish(thread, gate)
    assert loads.calls == 2
    assert out[0] == ("holder", False, "k")
    assert backend.get("k") == "holder"


def test_lock_false_concurrent_misses_all_load(real_caches: CacheFactory) -> None:
    backend = real_caches()
    loads = Counter()
    barrier = threading.Barrier(5)

    def loader() -> int:
        n = loads.bump()
        barrier.wait(HANG)  # all five are loading at once
        return n

    results = run_threads(5, lambda i: CacheAside(backend, ttl=60, lock=False).lookup("k", loader))
    assert loads.calls == 5
    assert all(not lookup.hit for lookup in results)
    assert backend.get("k") in {lookup.value for lookup in results}


# -- Redis down: fail-open ------------------------------------------------------------------------


def test_redis_down_everybody_loads_but_threads_still_coalesce(prefix: str) -> None:
    dead = RedisCache(f"redis://127.0.0.1:{find_free_port()}/0", prefix=prefix)
    try:
        loads = Counter()

        def loader() -> str:
            loads.bump()
            time.sleep(0.5)  # nothing is stored: a thread arriving after this would load again
            return "v"

        results = run_threads(10, lambda i: CacheAside(dead, ttl=60).lookup("k", loader))
        assert all(lookup.value == "v" for lookup in results)
        assert loads.calls == 1  # in-process single flight needs no Redis
        unlocked = run_threads(5, lambda i: CacheAside(dead, lock=False).lookup("k", loader))
        assert all(lookup.value == "v" for lookup in unlocked)
        assert loads.calls == 6
    finally:
        dead.close()


# -- unreadable entries ---------------------------------------------------------------------------


def test_unreadable_entry_is_replaced_by_the_next_load(
    real_caches: CacheFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """An entry the cache cannot decode (written by another format, or signed with a rotated
    pickle key) is a miss; the next load must replace it rather than wait for a lease that can
    never be taken."""
    old = real_caches(serializer="pickle", secret_key="old-secret-0123456789")
    new = real_caches(serializer="pickle", secret_key="new-secret-0123456789")
    old.set("k", "signed with the old key", ttl=60)
    aside = CacheAside(new, ttl=60, lock_timeout=0.3)
    lookup, seconds = timed(lambda: aside.lookup("k", lambda: 1))
    report(
        capsys, f"unreadable entry: first lookup took {seconds * 1000:.0f} ms (lock_timeout 300 ms)"
    )
    assert lookup.value == 1
    assert new.get("k") == 1, "the unreadable entry was not replaced: every call waits"


# -- cached Flask views ---------------------------------------------------------------------------


def test_cached_view_fifty_concurrent_cold_requests_run_the_view_once(
    real_caches: CacheFactory,
) -> None:
    """The issue's acceptance case: ``@cache`` on a view, 50 concurrent cold requests."""
    from flask import Flask

    backend = real_caches()
    app = Flask(__name__)
    calls = Counter()

    @app.get("/report")
    @cache(ttl=60, backend=backend)
    def report_view() -> str:
        calls.bump()
        time.sleep(0.2)
        return "the report"

    def get(_: int) -> tuple[int, bytes]:
        response = app.test_client().get("/report")
        return response.status_code, response.get_data()

    results = run_threads(50, get)
    assert results == [(200, b"the report")] * 50
    assert calls.calls == 1, f"the view ran {calls.calls} times for one cold key"


def test_cached_view_clear_during_a_slow_render_wins(real_caches: CacheFactory) -> None:
    """A response rendered from old data must not be stored over an invalidation that happened
    while it was being rendered (the lease rule, for views)."""
    from flask import Flask

    backend = real_caches()
    app = Flask(__name__)
    database = {"title": "old"}
    gate = threading.Event()
    rendering = threading.Event()

    @app.get("/page")
    @cache(ttl=60, backend=backend)
    def page() -> str:
        title = database["title"]
        rendering.set()
        gate.wait(HANG)
        return title

    thread = threading.Thread(target=lambda: app.test_client().get("/page"))
    thread.start()
    assert rendering.wait(HANG)
    database["title"] = "new"
    backend.clear()
    finish(thread, gate)
    assert app.test_client().get("/page").get_data() == b"new"
