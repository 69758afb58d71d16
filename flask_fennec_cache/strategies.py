"""Caching strategies over a backend: cache-aside (lazy loading) and write-through."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ._ratelog import logger
from .backend import MISSING, RedisCache
from .decorators import CacheLookup
from .errors import CacheUnavailable

__all__ = ["CacheAside", "WriteThrough"]

T = TypeVar("T")


class CacheAside:
    """Read through the cache: on a miss, call the loader and store what it returns.

    :param backend: the cache.
    :param ttl: seconds entries live; None uses the backend's default.
    :param cache_none: also store a ``None`` from the loader (by default it is not stored).

    A loader that raises stores nothing; the exception propagates.
    """

    def __init__(self, backend: RedisCache, ttl: float | None = None, cache_none: bool = False):
        self.backend = backend
        self.ttl = ttl
        self.cache_none = cache_none

    def get(self, key: str, loader: Callable[[], T], ttl: float | None = None) -> T:
        """The cached value of *key*, loading and storing it on a miss."""
        return self.lookup(key, loader, ttl).value

    def lookup(self, key: str, loader: Callable[[], T], ttl: float | None = None) -> CacheLookup[T]:
        """Like :meth:`get`, and says whether the value came from the cache."""
        value = self.backend.lookup(key)
        if value is not MISSING:
            return CacheLookup(value, True, key)
        loaded = loader()
        if loaded is not None or self.cache_none:
            self.backend.set(key, loaded, self.ttl if ttl is None else ttl)
        return CacheLookup(loaded, False, key)


class WriteThrough:
    """Write to the system of record first, then to the cache.

    If the writer raises, the cache is untouched and the exception propagates. If the cache
    cannot be updated after the writer succeeded (Redis failed, or the value is over the size
    limit), the old entry is deleted, retrying once, so that it cannot be served stale; if even
    that fails, it is logged as an error. A value the cache format cannot hold raises
    :class:`~flask_fennec_cache.SerializationError` before the writer runs.
    """

    def __init__(self, backend: RedisCache, ttl: float | None = None):
        self.backend = backend
        self.ttl = ttl

    def set(self, key: str, value: Any, writer: Callable[[Any], T], ttl: float | None = None) -> T:
        """Run ``writer(value)``, then cache *value* under *key*; returns the writer's result."""
        data = self.backend._encode(key, value)
        result = writer(value)
        try:
            stored = self.backend._set_encoded(key, data, self.ttl if ttl is None else ttl)
        except CacheUnavailable:
            self._evict(key)
            raise
        if not stored:
            self._evict(key)
        return result

    def delete(self, key: str, deleter: Callable[[], T]) -> T:
        """Run ``deleter()`` against the system of record, then remove *key* from the cache."""
        result = deleter()
        self._evict(key)
        return result

    def _evict(self, key: str) -> None:
        for _ in range(2):
            try:
                if self.backend.try_delete(key) is not None:
                    return
            except CacheUnavailable:
                pass
        logger.error(
            "write-through: could not update or delete %r in the cache after the write "
            "succeeded; it may be served stale until it expires", key
        )
