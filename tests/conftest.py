"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import NoReturn

import pytest
from _servers import (
    RedisServer,
    RedisServerError,
    RedisServerFactory,
    redis_server_binary,
    stop_all,
)

# ==================================================================================
# Real redis-server fixtures
#
#   redis_server_session  session  one shared server for the whole run
#   redis_server          function the shared server, alive, resumed and flushed
#   redis_server_factory  function make(extra_args=[...]) -> private RedisServer
#
# Tests using any of them (directly or through other fixtures) get the ``real``
# marker. Without redis-server they are skipped, or fail when $CI is non-empty.
# ==================================================================================

REAL_SERVER_FIXTURES = frozenset({"redis_server_session", "redis_server", "redis_server_factory"})
MISSING_SERVER_MESSAGE = (
    "redis-server not found on PATH: install it (apt-get install redis-server)"
    " to run the real-server tests"
)


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs a real redis-server with ``real``."""
    for item in items:
        if REAL_SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real)


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


# ==================================================================================
# End of real redis-server fixtures
# ==================================================================================
