"""Redis' own health (``INFO``): in ``health()``, in the metrics, on the dashboard and in the
startup log; the rates, the warnings, and servers that refuse ``INFO``. Real servers only."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest
from _servers import RedisServer, RedisServerFactory, redis_server_version
from _support import HANG, AppFactory, CacheFactory, backend_of, new_app, wait_for
from flask import Flask
from test_metrics import Scrape
from werkzeug.serving import make_server

from flask_fennec_cache import FennecCache, RedisCache
from flask_fennec_cache._prometheus import render_redis
from flask_fennec_cache._redis_info import UNKNOWN, RedisInfo, RedisState, read_servers

pytestmark = pytest.mark.real

MIB = 1024 * 1024
LOGGER = "flask_fennec_cache"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Reads:
    """The cache's shared (hits, misses) as the trend sees them, set by the test."""

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0

    def add(self, hits: int, misses: int) -> None:
        self.hits += hits
        self.misses += misses

    def __call__(self) -> tuple[int, int]:
        return self.hits, self.misses


@pytest.fixture
def caches(prefix: str) -> Iterator[list[RedisCache]]:
    made: list[RedisCache] = []
    yield made
    for cache in made:
        cache.close()


#: Pub/Sub channel rules ("&*") are 6.2+; before, every user may use every channel.
ALL_CHANNELS = ["*"] if redis_server_version() >= (6, 2) else []


def cache_on(caches: list[RedisCache], url: str, **options: Any) -> RedisCache:
    made = RedisCache(url, prefix=f"ri-{uuid.uuid4().hex[:8]}:", **options)
    caches.append(made)
    return made


def info_calls(observer: Any) -> int:
    """How many INFO commands the server ran (this one not yet counted)."""
    stats = observer.info("commandstats").get("cmdstat_info", {"calls": 0})
    return int(stats["calls"])


def fill(server: RedisServer, megabytes: int) -> None:
    """Write about *megabytes* MiB of values of 16 KiB, each with a TTL (on a full server:
    evictions; under volatile-lru, of these keys only)."""
    value = b"x" * (16 * 1024)
    with server.client() as writer:
        pipe = writer.pipeline(transaction=False)
        for n in range(megabytes * 64):
            pipe.set(f"filler:{uuid.uuid4().hex}:{n}", value, ex=3600)
        pipe.execute()


def evicted(server: RedisServer) -> int:
    with server.client() as observer:
        return int(observer.info("stats")["evicted_keys"])


def tiny_lru(redis_server_factory: RedisServerFactory) -> RedisServer:
    return redis_server_factory(["--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"])


# ==================================================================================
# health()
# ==================================================================================


def test_health_reports_memory_against_a_maxmemory_set_with_config_set(
    redis_server_factory: RedisServerFactory, caches: list[RedisCache]
) -> None:
    server = redis_server_factory()
    control = server.client()
    control.config_set("maxmemory", str(64 * MIB))
    control.config_set("maxmemory-policy", "allkeys-lru")
    cache = cache_on(caches, server.url)
    cache.set("k", "v")

    report = cache.health()
    section = report["redis"]
    assert report["status"] == "healthy" and report["warnings"] == []
    assert section["available"] is True
    assert section["maxmemory_bytes"] == 64 * MIB
    assert section["maxmemory_policy"] == "allkeys-lru"
    used = section["used_memory_bytes"]
    assert 0 < used < 64 * MIB
    assert section["used_memory_percent"] == round(100 * used / (64 * MIB), 2)
    assert section["connected_clients"] >= 2  # the control client and the cache's
    assert section["evicted_keys"] == 0 and section["expired_keys"] == 0
    assert section["role"] == "master"
    # One sample so far: no rate yet, and never a 0 that was not measured.
    assert section["evicted_keys_per_second"] == UNKNOWN
    assert section["expired_keys_per_second"] == UNKNOWN
    assert "rates_over_seconds" not in section


def test_without_a_maxmemory_there_is_no_percentage_and_no_warning(
    redis_server_factory: RedisServerFactory, caches: list[RedisCache]
) -> None:
    section_and_warnings = cache_on(caches, redis_server_factory().url).health()
    section = section_and_warnings["redis"]
    assert section["maxmemory_bytes"] == 0 and "used_memory_percent" not in section
    assert section["maxmemory_policy"] == "noeviction"  # Redis' default: it never applies
    assert section_and_warnings["warnings"] == []


def test_noeviction_under_a_maxmemory_is_a_warning(
    redis_server_factory: RedisServerFactory, caches: list[RedisCache]
) -> None:
    server = redis_server_factory()
    server.client().config_set("maxmemory", str(100 * MIB))
    cache = cache_on(caches, server.url)
    (warning,) = cache.health()["warnings"]
    assert "maxmemory-policy is noeviction" in warning
    assert "100.0 MiB" in warning and "refuses every write" in warning
    assert "allkeys-lru" in warning  # what to do about it
    assert cache.health()["status"] == "healthy"  # a warning, not an outage

    server.client().config_set("maxmemory-policy", "allkeys-lfu")
    assert wait_for(lambda: cache.health()["warnings"] == [], timeout=HANG)  # next sample


def test_evictions_are_counted_after_filling_a_tiny_maxmemory(
    redis_server_factory: RedisServerFactory, caches: list[RedisCache]
) -> None:
    server = tiny_lru(redis_server_factory)
    cache = cache_on(caches, server.url)
    clock = Clock()
    info = RedisInfo(cache.guard, "unused", reads=Reads(), clock=clock)
    first = info.state().as_dict()
    assert first["evicted_keys"] == 0 and first["evicted_keys_per_second"] == UNKNOWN

    fill(server, 8)
    low = evicted(server)
    clock.now += 2.0
    second = info.state().as_dict()
    # (Redis may go on evicting as it frees memory: bounded by what was seen around ours.)
    assert 0 < low <= second["evicted_keys"] <= evicted(server)
    assert second["rates_over_seconds"] == 2.0
    assert second["evicted_keys_per_second"] == round(second["evicted_keys"] / 2.0, 2)
    assert second["expired_keys_per_second"] == 0.0  # measured: nothing expired
    assert second["maxmemory_policy"] == "allkeys-lru" and "used_memory_percent" in second


def test_a_counter_that_went_back_has_an_unknown_rate_not_a_negative_one(
    redis_server_factory: RedisServerFactory, caches: list[RedisCache]
) -> None:
    server = tiny_lru(redis_server_factory)
    clock = Clock()
    info = RedisInfo(cache_on(caches, server.url).guard, "unused", reads=Reads(), clock=clock)
    fill(server, 8)
    info.state()
    server.client().config_resetstat()  # as after a restart of Redis
    clock.now += 1.0
    section = info.state().as_dict()
    assert section["evicted_keys"] == 0
    assert section["evicted_keys_per_second"] == UNKNOWN


def test_one_info_per_second_however_many_callers(
    redis_server_factory: RedisServerFactory, caches: list[RedisCache]
) -> None:
    server = redis_server_factory()
    observer = server.client()
    cache = cache_on(caches, server.url)
    clock = Clock()
    cache.monitor.redis_info = RedisInfo(cache.guard, "unused", reads=Reads(), clock=clock)
    before = info_calls(observer)
    start = threading.Barrier(16)

    def poll() -> None:
        start.wait(HANG)
        for _ in range(5):
            cache.health()

    threads = [threading.Thread(target=poll) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG)
    assert info_calls(observer) - before - 1 == 1  # 80 health reports, one INFO (-1: ours)
    clock.now += 0.99
    cache.health()
    assert info_calls(observer) - before - 2 == 1
    clock.now += 0.01
    cache.health()
    assert info_calls(observer) - before - 3 == 2


def test_an_unreachable_redis_is_not_asked_and_says_why(
    redis_server_factory: RedisServerFactory, caches: list[RedisCache]
) -> None:
    server = redis_server_factory()
    cache = cache_on(caches, server.url, socket_timeout=0.5, connect_timeout=0.5)
    assert cache.health()["redis"]["available"] is True
    server.kill()
    report = cache.health()
    assert report["status"] == "unhealthy"
    assert report["redis"] == {
        "available": False,
        "reason": "Redis does not answer, so INFO was not asked",
    }


def test_memory_url_has_no_figures_and_says_why(memory_url: str) -> None:
    cache = RedisCache(memory_url)
    try:
        section = cache.health()["redis"]
    finally:
        cache.close()
    assert section["available"] is False and "in this process" in section["reason"]


# ==================================================================================
# Servers that refuse INFO
# ==================================================================================


def test_an_acl_without_info_leaves_the_figures_out_and_says_why(
    redis_server_factory: RedisServerFactory, caches: list[RedisCache], make_app: AppFactory
) -> None:
    server = redis_server_factory(["--maxmemory", "10mb"])  # noeviction: it cannot be seen
    server.client().acl_setuser(
        "app", enabled=True, passwords=["+app-password"], keys=["*"], channels=ALL_CHANNELS,
        commands=["+@all", "-info"],
    )  # fmt: skip
    url = f"redis://app:app-password@127.0.0.1:{server.port}/0"
    cache = cache_on(caches, url)
    assert cache.set("k", "v") and cache.get("k") == "v"  # the cache itself works
    report = cache.health()
    assert report["status"] == "healthy" and report["warnings"] == []
    section = report["redis"]
    assert section["available"] is False and set(section) == {"available", "reason"}
    assert "no permissions to run the 'info' command" in section["reason"]
    assert "ACL" in section["reason"] and "+info" in section["reason"]
    assert cache.get_stats()["errors"] == 0  # a refused INFO is not a cache error

    app = make_app(FENNEC_CACHE_URL=url)
    text = app.test_client().get("/cache/metrics").get_data(as_text=True)
    scrape = Scrape(text)
    assert scrape["fennec_cache_redis_info_available"] == 0
    assert not [name for name in scrape.types if name.startswith("fennec_cache_redis_used")]


class RenamedInfo:
    """A client of a real server on which INFO has another name (``rename-command``): its
    ``info`` sends ``INFO`` under a name the server does not know, as such a client does."""

    def __init__(self, server: RedisServer) -> None:
        self._client: Any = server.client()

    def info(self) -> Any:
        return self._client.execute_command(f"INFO-{uuid.uuid4().hex[:6]}")


def test_a_renamed_info_command_leaves_the_figures_out_and_says_why(
    redis_server_factory: RedisServerFactory,
) -> None:
    (reason,) = read_servers(RenamedInfo(redis_server_factory())).values()
    assert isinstance(reason, str)
    assert "disabled or renamed" in reason and "unknown command" in reason


# ==================================================================================
# The eviction trend
# ==================================================================================


def test_evictions_while_the_hit_rate_falls_are_a_warning(
    redis_server_factory: RedisServerFactory, caches: list[RedisCache],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    server = tiny_lru(redis_server_factory)
    clock, reads = Clock(), Reads()
    info = RedisInfo(cache_on(caches, server.url).guard, "unused", reads=reads, clock=clock)

    def step(seconds: float, hits: int, misses: int, megabytes: int) -> RedisState:
        fill(server, megabytes)
        reads.add(hits, misses)
        clock.now += seconds
        return info.state()

    assert info.state().warnings == ()
    assert step(10, 90, 10, 8).warnings == ()  # one interval: nothing to compare yet
    state = step(10, 50, 50, 8)  # evicting in both intervals, hit rate 90 % -> 50 %
    (warning,) = state.warnings
    assert "evicting keys" in warning and "from 90.0 % to 50.0 %" in warning
    assert "over the last 10 s" in warning
    assert logged_warnings(caplog) == [f"{warning}."]  # logged once, as it starts

    # Samples closer than 10 s apart do not move the trend: the verdict stays.
    assert step(1, 0, 0, 0).warnings == (warning,)
    assert len(logged_warnings(caplog)) == 1  # not logged again for the same trend
    # The hit rate recovers (50 % then 95 %) while Redis still evicts: no warning.
    assert step(9, 95, 5, 8).warnings == ()


def test_a_falling_hit_rate_without_evictions_is_no_warning(
    redis_server_factory: RedisServerFactory, caches: list[RedisCache]
) -> None:
    server = tiny_lru(redis_server_factory)
    clock, reads = Clock(), Reads()
    info = RedisInfo(cache_on(caches, server.url).guard, "unused", reads=reads, clock=clock)
    info.state()
    for hits, misses in ((90, 10), (10, 90)):
        reads.add(hits, misses)
        clock.now += 10
        state = info.state()
    assert state.warnings == ()
    assert state.as_dict()["evicted_keys_per_second"] == 0.0


def test_evictions_in_the_last_interval_only_are_no_warning(
    redis_server_factory: RedisServerFactory, caches: list[RedisCache]
) -> None:
    """One burst of evictions is not evictions "climbing": both intervals must evict."""
    server = tiny_lru(redis_server_factory)
    clock, reads = Clock(), Reads()
    info = RedisInfo(cache_on(caches, server.url).guard, "unused", reads=reads, clock=clock)
    info.state()
    for hits, misses, megabytes in ((90, 10, 0), (10, 90, 8)):  # 90 % then 10 %
        fill(server, megabytes)
        reads.add(hits, misses)
        clock.now += 10
        state = info.state()
    assert state.as_dict()["evicted_keys"] > 0
    assert state.warnings == ()


def test_few_reads_are_no_hit_rate_to_compare(
    redis_server_factory: RedisServerFactory, caches: list[RedisCache]
) -> None:
    server = tiny_lru(redis_server_factory)
    clock, reads = Clock(), Reads()
    info = RedisInfo(cache_on(caches, server.url).guard, "unused", reads=reads, clock=clock)
    info.state()
    for hits, misses in ((9, 0), (0, 9)):  # 100 % then 0 %, but 9 reads each
        fill(server, 8)
        reads.add(hits, misses)
        clock.now += 10
        state = info.state()
    assert state.warnings == ()


def test_the_trend_uses_the_shared_hit_counters(
    redis_server_factory: RedisServerFactory, caches: list[RedisCache]
) -> None:
    """Without an injected source, the hit rate is the cache's shared hits and misses.
    (volatile-lru: the fillers are evicted, never the counters, which have no TTL.)"""
    server = redis_server_factory(["--maxmemory", "4mb", "--maxmemory-policy", "volatile-lru"])
    cache = cache_on(caches, server.url)
    clock = Clock()
    info = RedisInfo(cache.guard, cache.prefix + "__fennec__:stats", clock=clock)
    info.state()
    for hits, misses in ((45, 5), (10, 40)):
        cache.set("hot", "v")
        for n in range(hits):
            assert cache.get("hot") == "v", n
        for n in range(misses):
            assert cache.get(f"cold:{n}:{uuid.uuid4().hex}") is None
        cache.shared_counters()  # flushes this process's counts
        fill(server, 8)
        clock.now += 10
        state = info.state()
    (warning,) = state.warnings
    assert "from 90.0 % to 20.0 %" in warning


# ==================================================================================
# Topologies
# ==================================================================================


def test_a_cluster_reports_each_primary_and_their_sum(cluster_caches: CacheFactory) -> None:
    cache = cluster_caches()
    cache.set("k", "v")
    section = cache.health()["redis"]
    assert section["available"] is True
    nodes = section["nodes"]
    assert len(nodes) == 3 and all(re.fullmatch(r"127\.0\.0\.1:\d+", n) for n in nodes)
    assert all(node["role"] == "master" for node in nodes.values())
    for field in ("used_memory_bytes", "connected_clients", "evicted_keys", "expired_keys"):
        assert section[field] == sum(node[field] for node in nodes.values()), field
    assert section["maxmemory_bytes"] == 0  # the test cluster has no limit
    assert section["maxmemory_policy"] == nodes[next(iter(nodes))]["maxmemory_policy"]
    assert section["evicted_keys_per_second"] == UNKNOWN

    scrape = Scrape(render_redis(cache.monitor.redis_info.state()))
    for name in nodes:
        assert scrape[f'fennec_cache_redis_used_memory_bytes{{node="{name}"}}'] > 0
        assert scrape[f'fennec_cache_redis_connected_clients{{node="{name}"}}'] >= 1
    assert "fennec_cache_redis_used_memory_bytes" not in scrape.samples  # no unlabelled sum


def test_a_primary_whose_breaker_is_open_is_not_asked(cluster_caches: CacheFactory) -> None:
    cache = cluster_caches(breaker_cooldown=3600.0)
    assert cache.set("k", "v")
    assert cache.guard.nodes is not None
    names = sorted(cache.health()["redis"]["nodes"])
    cache.guard.nodes.breaker(names[0]).timed_out()  # opens it at once
    info = RedisInfo(cache.guard, "unused", reads=Reads())
    section = info.state().as_dict()
    assert section["nodes"][names[0]] == {
        "available": False,
        "reason": "not asked: its circuit breaker is open",
    }
    assert all(section["nodes"][name]["role"] == "master" for name in names[1:])
    assert section["connected_clients"] == sum(
        section["nodes"][name]["connected_clients"] for name in names[1:]
    )
    (warning,) = info.state().warnings
    assert warning.startswith(f"Redis {names[0]}: not asked") and "leave it out" in warning


def test_sentinel_reports_the_master(sentinel_topology: Any, caches: list[RedisCache]) -> None:
    section = cache_on(caches, sentinel_topology.url).health()["redis"]
    assert section["available"] is True and section["role"] == "master"
    assert "nodes" not in section


# ==================================================================================
# Prometheus
# ==================================================================================


def test_the_metrics_parse_and_carry_the_figures(
    redis_server_factory: RedisServerFactory, make_app: AppFactory
) -> None:
    server = tiny_lru(redis_server_factory)
    fill(server, 8)
    app = make_app(FENNEC_CACHE_URL=server.url)
    response = app.test_client().get("/cache/metrics")
    scrape = Scrape(response.get_data(as_text=True))
    assert scrape["fennec_cache_up"] == 1
    assert scrape["fennec_cache_redis_info_available"] == 1
    assert scrape["fennec_cache_redis_maxmemory_bytes"] == 4 * MIB
    assert 0 < scrape["fennec_cache_redis_used_memory_bytes"]
    assert scrape["fennec_cache_redis_evicted_keys_total"] > 0
    assert scrape.types["fennec_cache_redis_evicted_keys_total"] == "counter"
    assert scrape.types["fennec_cache_redis_expired_keys_total"] == "counter"
    assert scrape.types["fennec_cache_redis_used_memory_bytes"] == "gauge"
    assert scrape["fennec_cache_redis_connected_clients"] >= 1
    assert scrape['fennec_cache_redis_maxmemory_policy{policy="allkeys-lru"}'] == 1
    assert not [name for name in scrape.samples if 'pid="' in name and "_redis_" in name]


def test_a_dead_redis_scrape_reports_no_figures(
    redis_server_factory: RedisServerFactory, make_app: AppFactory
) -> None:
    server = redis_server_factory()
    app = make_app(FENNEC_CACHE_URL=server.url, FENNEC_CACHE_SOCKET_TIMEOUT=0.5)
    assert (
        Scrape(app.test_client().get("/cache/metrics").get_data(as_text=True))[
            "fennec_cache_redis_info_available"
        ]
        == 1
    )
    server.kill()
    scrape = Scrape(app.test_client().get("/cache/metrics").get_data(as_text=True))
    assert scrape["fennec_cache_up"] == 0
    assert scrape["fennec_cache_redis_info_available"] == 0
    assert "fennec_cache_redis_evicted_keys_total" not in scrape.samples  # absent, not 0


# ==================================================================================
# The startup log
# ==================================================================================


def logged_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING
    ]


def start_app(memory_url: str, url: str, apps: list[Flask]) -> Flask:
    app = new_app(memory_url, FENNEC_CACHE_URL=url, FENNEC_CACHE_STATS_FLUSH_INTERVAL=3600.0)
    apps.append(app)
    FennecCache(app)
    return app


@pytest.fixture
def apps() -> Iterator[list[Flask]]:
    made: list[Flask] = []
    yield made
    for app in made:
        backend_of(app).close()


def test_noeviction_is_one_warning_in_the_startup_log(
    redis_server_factory: RedisServerFactory, memory_url: str, apps: list[Flask],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    server = redis_server_factory(["--maxmemory", "10mb", "--maxmemory-policy", "noeviction"])
    observer = server.client()
    before = int(observer.info("stats")["total_connections_received"])
    app = start_app(memory_url, server.url, apps)
    (warning,) = logged_warnings(caplog)
    assert warning.startswith(f"FENNEC_CACHE_URL {server.url}: ")
    assert "maxmemory-policy is noeviction" in warning and "10.0 MiB" in warning
    # The probe's one connection, closed: nothing for forked workers to inherit.
    assert int(observer.info("stats")["total_connections_received"]) == before + 1
    assert observer.info("clients")["connected_clients"] == 1
    assert backend_of(app).client.connection_pool._created_connections == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--maxmemory", "10mb", "--maxmemory-policy", "allkeys-lru"],
        [],  # no maxmemory: the default noeviction never refuses a write
    ],
    ids=["allkeys-lru", "no-maxmemory"],
)
def test_an_evicting_or_unlimited_redis_is_quiet_at_startup(
    redis_server_factory: RedisServerFactory, memory_url: str, apps: list[Flask],
    caplog: pytest.LogCaptureFixture, args: list[str],
) -> None:  # fmt: skip
    start_app(memory_url, redis_server_factory(args).url, apps)
    assert logged_warnings(caplog) == []


def test_a_refused_info_at_startup_is_quiet(
    redis_server_factory: RedisServerFactory, memory_url: str, apps: list[Flask],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    server = redis_server_factory(["--maxmemory", "10mb"])
    server.client().acl_setuser(
        "app", enabled=True, passwords=["+pw-for-app"], keys=["*"], commands=["+@all", "-info"]
    )
    start_app(memory_url, f"redis://app:pw-for-app@127.0.0.1:{server.port}/0", apps)
    assert logged_warnings(caplog) == []


def test_without_figures_only_the_availability_gauge_is_rendered() -> None:
    """``memory://``, a refused INFO, an unreachable Redis: one gauge at 0, and it parses."""
    scrape = Scrape(render_redis(RedisState("refused")))
    assert scrape.samples == {"fennec_cache_redis_info_available": 0}


# ==================================================================================
# The dashboard's Redis panel (headless Chromium, as tests/test_dashboard.py)
# ==================================================================================

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - depends on the machine
        _unavailable("playwright is not installed: pip install -e '.[test]'")
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _unavailable(f"{CHROMIUM} not found: apt-get install chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} [CI is set, so this is an error, not a skip]", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def served(app: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="redis-panel-test-server")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(HANG)
        server.server_close()


def open_dashboard(browser: Any, base: str) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{base}/cache/?interval=250")
    return page, errors


def test_the_panel_shows_memory_policy_rates_and_the_noeviction_warning(
    redis_server_factory: RedisServerFactory, make_app: AppFactory, browser: Any
) -> None:
    from playwright.sync_api import expect

    server = redis_server_factory(["--maxmemory", "10mb", "--maxmemory-policy", "noeviction"])
    app = make_app(FENNEC_CACHE_URL=server.url)
    with served(app) as base:
        page, errors = open_dashboard(browser, base)
        expect(page.locator("#redis-policy")).to_have_text("noeviction", timeout=HANG * 1000)
        expect(page.locator("#redis-memory")).to_have_text(
            re.compile(r" of 10\.0 MiB \([\d.]+ %\)$")
        )
        expect(page.locator("#redis-memory-meter")).to_be_visible()
        expect(page.locator("#redis-warnings li")).to_have_count(1)
        expect(page.locator("#redis-warnings li")).to_contain_text("maxmemory-policy is noeviction")
        # The worker's second sample (a second later) turns "unknown" into a measured rate.
        expect(page.locator("#redis-evicted")).to_have_text("0.0", timeout=HANG * 1000)
        expect(page.locator("#redis-expired")).to_have_text("0.0")
        expect(page.locator("#redis-clients")).to_have_text(re.compile(r"^[1-9]\d*$"))
        expect(page.locator("#redis-unavailable")).to_be_hidden()
        expect(page.locator("#redis-nodes")).to_be_hidden()

        server.client().config_set("maxmemory-policy", "allkeys-lru")
        expect(page.locator("#redis-policy")).to_have_text("allkeys-lru", timeout=HANG * 1000)
        expect(page.locator("#redis-warnings li")).to_have_count(0)
        assert errors == []
        page.close()


def test_the_panel_says_why_the_figures_are_left_out(
    redis_server_factory: RedisServerFactory, make_app: AppFactory, browser: Any
) -> None:
    from playwright.sync_api import expect

    server = redis_server_factory()
    server.client().acl_setuser(
        "app", enabled=True, passwords=["+app-password"], keys=["*"], channels=ALL_CHANNELS,
        commands=["+@all", "-info"],
    )  # fmt: skip
    app = make_app(FENNEC_CACHE_URL=f"redis://app:app-password@127.0.0.1:{server.port}/0")
    with served(app) as base:
        page, errors = open_dashboard(browser, base)
        expect(page.locator("#health-status")).to_have_text("healthy", timeout=HANG * 1000)
        unavailable = page.locator("#redis-unavailable")
        expect(unavailable).to_be_visible()
        expect(unavailable).to_contain_text("figures left out: INFO refused by the server's ACL")
        expect(page.locator("#redis-figures")).to_be_hidden()
        assert errors == []
        page.close()


def test_the_panel_lists_each_primary_of_a_cluster(
    redis_cluster: Any, make_app: AppFactory, browser: Any
) -> None:
    from playwright.sync_api import expect

    app = make_app(FENNEC_CACHE_URL=redis_cluster.url)
    with served(app) as base:
        page, errors = open_dashboard(browser, base)
        rows = page.locator("#redis-nodes-body tr")
        expect(rows).to_have_count(3, timeout=HANG * 1000)
        expect(rows.first).to_contain_text(re.compile(r"^127\.0\.0\.1:\d+"))
        expect(page.locator("#redis-scope")).to_have_text("every primary, summed")
        assert errors == []
        page.close()
