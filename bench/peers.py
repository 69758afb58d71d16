"""The four implementations compared, each behind the same small interface.

Every peer memoises a function of one string argument in Redis. The key, the serialisation and
what happens on a miss or an error are each library's own: that is what is measured.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "PEERS",
    "DogpilePeer",
    "FennecPeer",
    "FlaskCachingPeer",
    "Loader",
    "Peer",
    "RawPeer",
    "Setup",
    "calling",
    "make_peers",
    "missing_peers",
    "named",
    "returning",
]

Loader = Callable[[str], Any]

# How a peer's Redis client is configured:
#   "tuned": from the URL, with short timeouts and no retries (what a careful user sets for a cache)
#   "url":   from the URL with the library's defaults (redis-py: 5 s timeouts, no retries: a
#            client built by ``from_url`` gets a connection pool whose connections do not retry)
#   "host":  host and port with the library's defaults (``redis.Redis(host=...)``: 5 s timeouts
#            and 10 retries with exponential backoff up to 1 s, redis-py 6+)
Setup = Literal["tuned", "url", "host"]

TUNED_TIMEOUT: Final = 0.25

OURS: Final = "fennec"
OURS_NEAR: Final = "fennec_near"
RAW: Final = "raw"
FLASK_CACHING: Final = "flask_caching"
DOGPILE: Final = "dogpile"
PEERS: Final = (OURS, RAW, FLASK_CACHING, DOGPILE)
LABELS: Final = {
    OURS: "flask-fennec-cache",
    OURS_NEAR: "flask-fennec-cache + near cache",
    RAW: "raw redis-py",
    FLASK_CACHING: "Flask-Caching",
    DOGPILE: "dogpile.cache",
}


def missing_peers() -> list[str]:
    """The peer distributions that are not installed (they come with the ``bench`` extra)."""
    missing = []
    for module, dist in (("flask_caching", "Flask-Caching"), ("dogpile.cache", "dogpile.cache")):
        try:
            __import__(module)
        except ImportError:
            missing.append(dist)
    return missing


def named(name: str, func: Loader) -> Loader:
    """Give *func* a unique name: every library builds its keys from the function's name."""
    func.__name__ = name
    func.__qualname__ = name
    return func


def returning(name: str, value: Any) -> Loader:
    """A loader named *name* that returns *value* at once.

    The value is held by a closure, not a default argument: libraries that key on every
    parameter (ours does, defaults included) would otherwise hash the value on each call.
    """

    def load(arg: str) -> Any:
        return value

    return named(name, load)


def calling(cached: Loader, arg: str) -> Callable[[int], Any]:
    """``cached(arg)`` as a timing loop's call (which passes a counter, ignored here)."""

    def call(_i: int) -> Any:
        return cached(arg)

    return call


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


def _tuned_options() -> dict[str, Any]:
    return {
        "socket_timeout": TUNED_TIMEOUT,
        "socket_connect_timeout": TUNED_TIMEOUT,
        "retry": _no_retry(),
    }


class Peer:
    """One caching library configured against one Redis URL."""

    name: str = ""

    def memoize(self, func: Loader, ttl: int) -> Loader:
        """*func* cached for *ttl* seconds, called as ``cached(arg)``."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""

    @property
    def label(self) -> str:
        return LABELS[self.name]


class FennecPeer(Peer):
    """Ours: ``@cache(ttl=..., backend=RedisCache(url))`` with the library's defaults.

    With *near_cache*, the backend also keeps a coherent in-process copy (``near_cache=True``).
    """

    def __init__(
        self, url: str, prefix: str = "bench:fennec:", *, near_cache: bool = False
    ) -> None:
        from flask_fennec_cache import RedisCache

        self.name = OURS_NEAR if near_cache else OURS
        self.backend = RedisCache(url, prefix=prefix, near_cache=near_cache)

    def memoize(self, func: Loader, ttl: int) -> Loader:
        from flask_fennec_cache import cache

        cached: Loader = cache(ttl=ttl, backend=self.backend)(func)
        return cached

    def close(self) -> None:
        self.backend.close()


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


class RawPeer(Peer):
    """Hand-written cache-aside with redis-py: ``GET`` + ``json.loads``; on a miss ``SET``.

    No locking, no namespacing beyond a key prefix: the baseline every ratio is taken against.
    With *catch_errors*, a Redis error makes it call the loader instead of raising.
    """

    name = RAW

    def __init__(self, url: str, *, setup: Setup = "tuned", catch_errors: bool = False) -> None:
        if setup == "tuned":
            self.client = redis.Redis.from_url(url, **_tuned_options())
        elif setup == "url":
            self.client = redis.Redis.from_url(url)
        else:
            host, port = _host_port(url)
            self.client = redis.Redis(host=host, port=port)
        self.catch_errors = catch_errors

    def memoize(self, func: Loader, ttl: int) -> Loader:
        client = self.client
        head = f"bench:raw:{func.__name__}:"
        loads, dumps = json.loads, json.dumps
        catch = (redis.RedisError,) if self.catch_errors else ()

        def cached(arg: str) -> Any:
            key = head + arg
            try:
                data = client.get(key)
            except catch:
                return func(arg)
            if data is not None:
                return loads(data)
            value = func(arg)
            try:
                client.set(key, dumps(value, separators=(",", ":")), ex=ttl)
            except catch:
                pass
            return value

        return cached

    def close(self) -> None:
        self.client.close()


class FlaskCachingPeer(Peer):
    """Flask-Caching's ``RedisCache`` and ``@cache.memoize`` (outside a request, as a helper)."""

    name = FLASK_CACHING

    def __init__(self, url: str, *, setup: Setup = "url") -> None:
        from flask import Flask
        from flask_caching import Cache

        config: dict[str, Any] = {
            "CACHE_TYPE": "RedisCache",
            "CACHE_KEY_PREFIX": "bench:fc:",
            "CACHE_DEFAULT_TIMEOUT": 600,
        }
        if setup == "host":
            config["CACHE_REDIS_HOST"], config["CACHE_REDIS_PORT"] = _host_port(url)
        else:
            config["CACHE_REDIS_URL"] = url
            config["CACHE_OPTIONS"] = _tuned_options() if setup == "tuned" else {}
        self.app = Flask("bench_flask_caching")
        self.cache = Cache(self.app, config=config)

    def memoize(self, func: Loader, ttl: int) -> Loader:
        cached: Loader = self.cache.memoize(timeout=ttl)(func)
        return cached

    def close(self) -> None:
        client = getattr(self.cache.cache, "_write_client", None)
        if client is not None:
            client.close()


class DogpilePeer(Peer):
    """dogpile.cache's ``dogpile.cache.redis`` region and ``cache_on_arguments``.

    ``distributed_lock=True``: a Redis lock serialises regeneration across processes, as a
    multi-worker deployment needs (waiters poll it every ``lock_sleep``, 0.1 s by default).
    """

    name = DOGPILE

    def __init__(self, url: str, *, setup: Setup = "url") -> None:
        from dogpile.cache import make_region

        arguments: dict[str, Any] = {
            "distributed_lock": True,
            "lock_timeout": 10,
            # A redis-py Lock bound to one thread cannot be released by another; dogpile warns
            # unless this is False with a distributed lock.
            "thread_local_lock": False,
            "redis_expiration_time": 1200,
        }
        if setup == "host":
            arguments["host"], arguments["port"] = _host_port(url)
        else:
            arguments["url"] = url
        if setup == "tuned":
            arguments.update(
                socket_timeout=TUNED_TIMEOUT,
                socket_connect_timeout=TUNED_TIMEOUT,
                connection_kwargs={"retry": _no_retry()},
            )
        self.region = make_region(key_mangler=lambda key: "bench:dogpile:" + key).configure(
            "dogpile.cache.redis", expiration_time=600, arguments=arguments
        )

    def memoize(self, func: Loader, ttl: int) -> Loader:
        cached: Loader = self.region.cache_on_arguments(expiration_time=ttl)(func)
        return cached

    def close(self) -> None:
        self.region.backend.writer_client.close()


def make_peers(url: str) -> dict[str, Peer]:
    """The four peers as most users configure them: from the URL (raw redis-py: tuned)."""
    return {
        OURS: FennecPeer(url),
        RAW: RawPeer(url),
        FLASK_CACHING: FlaskCachingPeer(url),
        DOGPILE: DogpilePeer(url),
    }
