"""Turn a cache URL into a redis-py client with timeouts and retries suited to a cache."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from .errors import ConfigurationError

__all__ = ["SCHEMES", "backend_name", "make_client"]

SCHEMES = ("redis", "rediss", "unix", "memory")

_memory_servers: dict[str, Any] = {}
_memory_lock = threading.Lock()


def backend_name(url: str) -> str:
    """``"memory"`` for the in-process server, ``"redis"`` otherwise."""
    return "memory" if url.startswith("memory:") else "redis"


def make_client(
    url: str,
    *,
    socket_timeout: float,
    connect_timeout: float,
    max_connections: int,
    health_check_interval: int,
) -> redis.Redis:
    """A client for *url*; raises ConfigurationError for a URL it cannot use."""
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise ConfigurationError(
            f"cache URL {url!r}: unsupported scheme {scheme!r}; use one of "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    if scheme == "memory":
        return _memory_client(url)
    # One quick retry for a connection that went stale in the pool; a timeout is not retried,
    # because a cache must not double the wait on a slow server.
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
