"""Turn a cache URL into a redis-py client with timeouts and retries suited to a cache."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from .errors import ConfigurationError

__all__ = ["SCHEMES", "check_url", "make_client"]

SCHEMES = ("redis", "rediss", "unix", "memory")

_memory_servers: dict[str, Any] = {}
_memory_lock = threading.Lock()


def check_url(url: str) -> str:
    """*url* if its scheme is one we can use; ConfigurationError otherwise."""
    scheme = urlsplit(url).scheme if isinstance(url, str) else ""
    if scheme not in SCHEMES:
        raise ConfigurationError(
            f"cache URL {url!r}: unsupported scheme {scheme!r}; use one of "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    return url


def make_client(
    url: str,
    *,
    socket_timeout: float,
    connect_timeout: float,
    max_connections: int,
    health_check_interval: int,
    tls_ca_certs: str | None = None,
    tls_certfile: str | None = None,
    tls_keyfile: str | None = None,
) -> redis.Redis:
    """A client for *url*; raises ConfigurationError for a URL it cannot use."""
    scheme = urlsplit(check_url(url)).scheme
    if scheme == "memory":
        return _memory_client(url)
    # One quick retry for a connection that went stale in the pool; a timeout is not retried,
    # because a cache must not double the wait on a slow server.
    tls: dict[str, Any] = {}
    if scheme == "rediss":
        tls = {
            name: value
            for name, value in (
                ("ssl_ca_certs", tls_ca_certs),
                ("ssl_certfile", tls_certfile),
                ("ssl_keyfile", tls_keyfile),
            )
            if value
        }
    elif tls_ca_certs or tls_certfile or tls_keyfile:
        raise ConfigurationError(f"TLS files are set but the cache URL {url!r} is not rediss://")
    retry = Retry(ExponentialBackoff(cap=0.05, base=0.005), retries=1,
                  supported_errors=(redis.ConnectionError,))
    try:
        return redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            max_connections=max_connections,
            health_check_interval=health_check_interval,
            retry=retry,
            **tls,
        )
    except ValueError as exc:
        raise ConfigurationError(f"cache URL {url!r}: {exc}") from exc


def _memory_client(url: str) -> redis.Redis:
    """A fakeredis client; clients of the same ``memory://name`` in one process share a server."""
    import fakeredis

    name = url[len("memory://"):].strip("/")
    with _memory_lock:
        server = _memory_servers.get(name)
        if server is None:
            server = _memory_servers[name] = fakeredis.FakeServer()
    client: redis.Redis = fakeredis.FakeRedis(server=server)
    return client
