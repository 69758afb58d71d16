"""Connecting can fail in ways that are not redis-py errors; fail-open still sees an outage.

A host name the resolver cannot encode raises ``UnicodeError`` from ``socket.getaddrinfo``
(not an ``OSError``), a certificate file removed after startup ``FileNotFoundError``: neither
may reach a page as a 500 in fail-open mode, nor escape untyped in fail-closed mode. The
resolver is replaced here by one that fails like that for every name (the URL check refuses
the names it can tell are bad, so only the resolver can make such a failure).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _servers import RedisServer
from _support import new_app
from flask import Flask

from flask_fennec_cache import CacheUnavailable, FennecCache, RedisCache, cache

URLS = [
    "redis://cache.example:6379/0",
    "rediss://cache.example:6379/0",
    "redis+sentinel://sentinel.example:26379/svc/0",
    "redis+cluster://node.example:7000/",
]
QUIET = 3600.0  # seconds between stats flushes: none during a test


def failing_lookup(*args: Any, **kwargs: Any) -> Any:
    raise UnicodeError("encoding with 'idna' codec failed (UnicodeError: label too long)")


@pytest.fixture
def broken_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", failing_lookup)


@pytest.fixture
def caches() -> Iterator[list[RedisCache]]:
    made: list[RedisCache] = []
    yield made
    for each in made:
        each.close()


@pytest.mark.usefixtures("broken_resolver")
@pytest.mark.parametrize("url", URLS)
def test_a_failing_name_lookup_is_an_outage_in_fail_open_mode(
    url: str, caches: list[RedisCache]
) -> None:
    made = RedisCache(url, connect_timeout=0.05, stats_flush_interval=QUIET)
    caches.append(made)
    assert made.get("k", default="fallback") == "fallback"
    assert made.set("k", 1) is False
    assert made.delete("k") == 0
    health = made.health()
    assert health["status"] == "unhealthy" and "UnicodeError" in health["error"]
    assert made.get_stats()["errors"] >= 3

    @cache(ttl=60, backend=made)
    def load(n: int) -> int:
        return n * 2

    assert load(21) == 42


@pytest.mark.usefixtures("broken_resolver")
@pytest.mark.parametrize("url", URLS)
def test_a_failing_name_lookup_is_cache_unavailable_in_fail_closed_mode(
    url: str, caches: list[RedisCache]
) -> None:
    made = RedisCache(url, connect_timeout=0.05, fail_open=False, stats_flush_interval=QUIET)
    caches.append(made)
    with pytest.raises(CacheUnavailable, match="UnicodeError"):
        made.get("k")


@pytest.fixture
def dns_broken_app(broken_resolver: None, memory_url: str) -> Iterator[Flask]:
    app = new_app(
        memory_url,
        FENNEC_CACHE_URL="redis://cache.example:6379/0",
        FENNEC_CACHE_CONNECT_TIMEOUT=0.05,
        FENNEC_CACHE_STATS_FLUSH_INTERVAL=QUIET,
        FENNEC_CACHE_ADMIN_URL_PREFIX="/cache",
    )
    fennec = FennecCache(app)

    @app.get("/users/<int:user_id>")
    @fennec.cache(ttl=60)
    def user(user_id: int) -> dict[str, Any]:
        return {"id": user_id}

    @app.get("/broken")
    @fennec.cache(ttl=60)
    def broken() -> str:
        raise LookupError("a bug in the view")

    yield app
    app.extensions["fennec_cache"].close()


def test_a_view_answers_from_its_loader_when_connecting_fails_oddly(dns_broken_app: Flask) -> None:
    client = dns_broken_app.test_client()
    for _ in range(2):
        reply = client.get("/users/7")
        assert reply.status_code == 200 and reply.get_json() == {"id": 7}
    health = client.get("/cache/health")
    assert health.status_code == 503 and "UnicodeError" in health.get_json()["error"]
    stats = client.get("/cache/stats")
    assert stats.status_code == 200 and stats.get_json()["shared"] is False


def test_a_bug_in_the_view_is_not_swallowed(dns_broken_app: Flask) -> None:
    dns_broken_app.testing = True  # exceptions propagate to the test client
    with pytest.raises(LookupError, match="a bug in the view"):
        dns_broken_app.test_client().get("/broken")


def test_a_certificate_file_removed_after_startup_is_an_outage(
    redis_server: RedisServer, tmp_path: Path, caches: list[RedisCache]
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    made = RedisCache(
        f"rediss://127.0.0.1:{redis_server.port}/0", tls_ca_certs=str(ca),
        stats_flush_interval=QUIET,
    )  # fmt: skip
    caches.append(made)
    ca.unlink()
    assert made.get("k") is None
    health = made.health()
    assert health["status"] == "unhealthy" and "No such file" in health["error"]
