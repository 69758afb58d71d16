"""Shared pytest fixtures: real Redis servers and topologies, caches on them, Flask apps.

Real redis-server processes (tests/_servers.py)

    redis_server_session   session   one shared server for the whole run
    redis_server           function  the shared server, alive, resumed and flushed
    redis_server_factory   function  make(extra_args=[...]) -> private RedisServer

  Tests using any of them (directly or through other fixtures) get the ``real`` marker.
  Without redis-server they are skipped, or fail when $CI is non-empty.

Caches (test_backend, test_decorators, test_admin, ...; helpers in tests/_support.py)

    prefix          function  a unique key prefix ("t-<hex>:")
    memory_url      function  a unique memory:// URL (a private in-process fakeredis)
    cache_factory   function  make(prefix=None, **options) -> RedisCache, all on ONE server;
                              parametrised over "fake" (memory://) and "real" (redis_server,
                              marked ``real``); every cache it made is closed at teardown
    backend         function  cache_factory() with the test's prefix
    fake_backend    function  a RedisCache on a private memory:// server (not parametrised)
    real_caches     function  make(prefix=None, **options) -> RedisCache on the shared real
                              server (redis_server), default prefix unique per test; every
                              cache it made is closed at teardown (test_locks, test_loading,
                              test_races)

Topologies (test_cluster, test_sentinel; tests/_topology.py): real multi-node Redis

    redis_cluster_session  session   RedisClusterTopology: 3 masters + 1 replica each,
                                     password-protected
    redis_cluster          function  the shared cluster, healed first if a test killed a node
    cluster_caches         function  make(prefix=None, **options) -> RedisCache on the cluster
                                     URL; closed at teardown
    sentinel_session       session   SentinelTopology: master, replica, 3 sentinels (quorum 2)
    sentinel_topology      function  the shared Sentinel setup, checked ready (do not break it)
    sentinel_factory       function  make() -> a private SentinelTopology, stopped at teardown
                                     (for failover tests, which break it)

  Without redis-server/redis-cli, or when a topology cannot start, these skip (fail on CI).
  Modules using them mark themselves ``real``.

Flask apps (test_admin, test_metrics, test_cli, ...)

    make_app   function  make(**config) -> a Flask app with FennecCache on a private memory://
                         server, a unique prefix and the admin blueprint at /cache; every
                         backend it made is closed at teardown

Hypothesis: with $CI set, every property test runs the same examples each time (derandomize)
and keeps no example database; locally, examples are random and failures are remembered in
.hypothesis/. Example counts are set per test (kept modest).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import pytest
from _servers import (
    RedisServer,
    RedisServerError,
    RedisServerFactory,
    redis_server_binary,
    stop_all,
)
from _support import AppFactory, CacheFactory, Factory, backend_of, new_app
from _topology import (
    RedisClusterTopology,
    SentinelTopology,
    TopologyError,
    topology_tools_missing,
)
from flask import Flask
from hypothesis import settings as hypothesis_settings

from flask_fennec_cache import FennecCache, RedisCache
from flask_fennec_cache._recovery import prober

hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

REAL_SERVER_FIXTURES = frozenset({"redis_server_session", "redis_server", "redis_server_factory"})
MISSING_SERVER_MESSAGE = (
    "redis-server not found on PATH: install it (apt-get install redis-server)"
    " to run the real-server tests"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs a real redis-server with ``real``."""
    for item in items:
        if REAL_SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real)


def _unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it on CI where real-server tests must always run."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} [CI is set, so this is an error, not a skip]", pytrace=False)
    pytest.skip(reason)


def _start_server(extra_args: Sequence[str] = ()) -> RedisServer:
    """Start a server, turning a missing binary or a failed start into skip/fail."""
    if redis_server_binary() is None:
        _unavailable(MISSING_SERVER_MESSAGE)
    try:
        return RedisServer(extra_args).start()
    except RedisServerError as error:
        _unavailable(f"redis-server could not start: {error}")


def _start_topology(start: Callable[[], Any], what: str) -> Any:
    """Start a topology, turning missing tools or a failed start into skip/fail."""
    missing = topology_tools_missing()
    if missing is not None:
        _unavailable(missing)
    try:
        return start()
    except (TopologyError, RedisServerError) as error:
        _unavailable(f"{what} could not start: {error}")


# -- real redis-server processes ------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server_session() -> Iterator[RedisServer]:
    """One redis-server shared by the whole run; prefer ``redis_server`` in tests."""
    server = _start_server()
    yield server
    server.stop()


@pytest.fixture
def redis_server(redis_server_session: RedisServer) -> Iterator[RedisServer]:
    """The shared server, restarted/resumed if a previous test broke it, and empty.

    Tests may kill, pause or restart it; the port stays the same. Server settings
    changed with CONFIG SET are *not* reset: use ``redis_server_factory`` for those.
    """
    try:
        redis_server_session.ensure_running()
    except RedisServerError as error:
        _unavailable(f"redis-server could not restart: {error}")
    redis_server_session.flushall()
    yield redis_server_session
    redis_server_session.close_clients()


@pytest.fixture
def redis_server_factory() -> Iterator[RedisServerFactory]:
    """Start private servers, e.g. ``make(["--maxmemory", "1mb"])``; all stopped at teardown."""
    servers: list[RedisServer] = []

    def make(extra_args: Sequence[str] = ()) -> RedisServer:
        server = _start_server(extra_args)
        servers.append(server)
        return server

    yield make
    stop_all(servers)


# -- caches ------------------------------------------------------------------------------------


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def memory_url() -> str:
    return f"memory://test-{uuid.uuid4().hex}"


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.real)])
def cache_factory(
    request: pytest.FixtureRequest, prefix: str, memory_url: str
) -> Iterator[CacheFactory]:
    if request.param == "real":
        server: RedisServer = request.getfixturevalue("redis_server")
        factory = Factory("real", server.url, prefix)
    else:
        factory = Factory("fake", memory_url, prefix)
    yield factory
    factory.close_all()


@pytest.fixture
def backend(cache_factory: CacheFactory) -> RedisCache:
    return cache_factory()


@pytest.fixture
def fake_backend(memory_url: str, prefix: str) -> Iterator[RedisCache]:
    made = RedisCache(memory_url, prefix=prefix)
    yield made
    made.close()


@pytest.fixture
def real_caches(redis_server: RedisServer, prefix: str) -> Iterator[CacheFactory]:
    factory = Factory("real", redis_server.url, prefix)
    yield factory
    factory.close_all()


# -- topologies --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_cluster_session() -> Iterator[RedisClusterTopology]:
    topology = _start_topology(lambda: RedisClusterTopology().start(), "Redis Cluster")
    yield topology
    topology.stop()


@pytest.fixture
def redis_cluster(redis_cluster_session: RedisClusterTopology) -> RedisClusterTopology:
    topology = redis_cluster_session
    if not all(s.is_running() and not s.paused for s in topology.servers):
        try:
            topology.heal()
        except (TopologyError, RedisServerError) as error:
            _unavailable(f"Redis Cluster could not be healed: {error}")
    return topology


@pytest.fixture
def cluster_caches(redis_cluster: RedisClusterTopology, prefix: str) -> Iterator[CacheFactory]:
    factory = Factory("cluster", redis_cluster.url, prefix)
    yield factory
    factory.close_all()


@pytest.fixture(scope="session")
def sentinel_session() -> Iterator[SentinelTopology]:
    topology = _start_topology(lambda: SentinelTopology().start(), "Sentinel topology")
    yield topology
    topology.stop()


@pytest.fixture
def sentinel_topology(sentinel_session: SentinelTopology) -> SentinelTopology:
    try:
        sentinel_session.wait_ready(timeout=5.0)
    except (TopologyError, RedisServerError) as error:
        _unavailable(f"Sentinel topology is not ready: {error}")
    return sentinel_session


@pytest.fixture
def sentinel_factory() -> Iterator[Callable[[], SentinelTopology]]:
    made: list[SentinelTopology] = []

    def make() -> SentinelTopology:
        topology: SentinelTopology = _start_topology(
            lambda: SentinelTopology().start(), "Sentinel topology"
        )
        made.append(topology)
        return topology

    yield make
    for topology in made:
        topology.stop()


# -- Flask apps --------------------------------------------------------------------------------


@pytest.fixture
def make_app(memory_url: str) -> Iterator[AppFactory]:
    made: list[Flask] = []

    def make(**config: Any) -> Flask:
        app = new_app(memory_url, **{"FENNEC_CACHE_ADMIN_URL_PREFIX": "/cache", **config})
        FennecCache(app)
        made.append(app)
        return app

    yield make
    for app in made:
        backend_of(app).close()


@pytest.fixture(autouse=True)
def _quiet_background_probes(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Property tests run with no background prober: redis-py's cluster client draws from the
    global ``random`` (a shuffle of the seed nodes when it rediscovers the slot map, as the
    prober makes it do for caches earlier tests left behind), which hypothesis forbids while
    it generates data."""
    if getattr(request.function, "is_hypothesis_test", False):
        prober.stop()
        monkeypatch.setattr(prober, "watch", lambda target: None)
