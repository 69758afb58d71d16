"""Tests for the real redis-server helpers and fixtures themselves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis
from _servers import (
    SERVER_ENV,
    RedisServer,
    RedisServerError,
    RedisServerFactory,
    redis_server_binary,
)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_shared_server_answers(redis_server: RedisServer, request: pytest.FixtureRequest) -> None:
    assert redis_server.client().ping()
    assert redis_server.cli("PING") == "PONG"
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert request.node.get_closest_marker("real") is not None


def test_cli_plants_values_for_the_client(redis_server: RedisServer) -> None:
    assert redis_server.cli("SET", "planted", "value") == "OK"
    assert redis_server.client().get("planted") == b"value"


def test_tests_without_servers_are_not_marked(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("real") is None


def test_factory_servers_are_private(
    redis_server: RedisServer, redis_server_factory: RedisServerFactory
) -> None:
    small = redis_server_factory(["--maxmemory", "1mb", "--maxmemory-policy", "noeviction"])
    other = redis_server_factory()
    assert len({redis_server.port, small.port, other.port}) == 3
    assert small.client().config_get("maxmemory") == {"maxmemory": "1048576"}


def test_requirepass_is_used_by_cli_and_client(redis_server_factory: RedisServerFactory) -> None:
    server = redis_server_factory(["--requirepass", "s3cret"])
    assert server.cli("SET", "k", "v") == "OK"
    assert server.client().get("k") == b"v"
    with pytest.raises(redis.AuthenticationError):
        server.client(password=None).get("k")


def test_kill_and_restart_on_the_same_port(redis_server_factory: RedisServerFactory) -> None:
    server = redis_server_factory()
    client = server.client()
    client.set("k", "v")
    port, pid = server.port, server.pid
    server.kill()
    with pytest.raises(redis.ConnectionError):
        client.get("k")
    server.restart()
    assert (server.port, server.pid != pid) == (port, True)
    assert client.get("k") is None  # nothing is persisted


def test_pause_and_resume(redis_server_factory: RedisServerFactory) -> None:
    server = redis_server_factory()
    client = server.client(socket_timeout=0.2)
    server.pause()
    with pytest.raises(redis.TimeoutError):
        client.ping()
    server.resume()
    assert client.ping()


def test_shared_server_heals_after_kill_and_pause(redis_server: RedisServer) -> None:
    port = redis_server.port
    redis_server.kill()
    redis_server.ensure_running()
    redis_server.pause()
    redis_server.ensure_running()
    assert redis_server.port == port
    assert redis_server.client(socket_timeout=1).ping()


@pytest.mark.parametrize("paused", [False, True])
def test_stop_leaves_nothing_behind(redis_server_factory: RedisServerFactory, paused: bool) -> None:
    server = redis_server_factory()
    pid = server.pid
    tmpdir = Path(server.cli("CONFIG", "GET", "dir").splitlines()[1])
    assert pid is not None and _process_exists(pid) and tmpdir.is_dir()
    if paused:
        server.pause()
    server.stop()
    assert not _process_exists(pid)
    assert not tmpdir.exists()
    assert not server.is_running()


@pytest.mark.parametrize("ci", ["", "true"])
def test_missing_binary_skips_or_fails_on_ci(
    redis_server_factory: RedisServerFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    ci: str,
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(SERVER_ENV, raising=False)
    monkeypatch.setenv("CI", ci)
    outcome = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(outcome, match="redis-server not found on PATH"):
        redis_server_factory()


def test_server_binary_from_the_environment(
    redis_server_factory: RedisServerFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """$FENNEC_TEST_REDIS_SERVER (e.g. Redis 6.0 from .ci/redis6) starts every test server."""
    real = redis_server_binary()
    assert real is not None
    marker = tmp_path / "used"
    wrapper = tmp_path / "my-redis-server"
    wrapper.write_text(f'#!/bin/sh\ntouch "{marker}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv(SERVER_ENV, str(wrapper))
    assert redis_server_factory().client().ping()
    assert marker.exists()


def test_server_binary_from_the_environment_must_exist(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(SERVER_ENV, str(tmp_path / "missing"))
    with pytest.raises(RedisServerError, match=SERVER_ENV):
        redis_server_binary()
