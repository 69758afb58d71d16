"""Caching strategies over a backend: cache-aside (lazy loading) and write-through."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ._ratelog import logger
from .backend import RESERVED, RedisCache
from .decorators import CacheLookup
from .errors import CacheUnavailable, LockTimeout
from .loading import LoadPolicy, get_or_load
from .locks import RedisLock

__all__ = ["CacheAside", "WriteThrough"]

T = TypeVar("T")


class CacheAside:
    """Read through the cache: on a miss, call the loader and store what it returns.

    :param backend: the cache.
    :param ttl: seconds entries live; None uses the backend's default.
    :param cache_none: also store a ``None`` from the loader (by default it is not stored).
    :param options: the freshness options of :class:`~flask_fennec_cache.loading.LoadPolicy`
        (``none_ttl``, ``lock``, ``lock_timeout``, ``stale_ttl``, ``beta``, ``tags``).

    A loader that raises stores nothing; the exception propagates. Concurrent misses of one key
    run the loader once, and a loader's result never overwrites a value written meanwhile.
    """

    def __init__(
        self, backend: RedisCache, ttl: float | None = None, cache_none: bool = False,
        **options: Any,
    ) -> None:
        self.backend = backend
        self.policy = LoadPolicy(ttl=ttl, cache_none=cache_none, **options)

    def get(self, key: str, loader: Callable[[], T]) -> T:
        """The cached value of *key*, loading and storing it on a miss."""
        return self.lookup(key, loader).value

    def lookup(self, key: str, loader: Callable[[], T]) -> CacheLookup[T]:
        """Like :meth:`get`, and says whether the value came from the cache."""
        value, hit = get_or_load(self.backend, key, loader, self.policy)
        return CacheLookup(value, hit, key)


class WriteThrough:
    """Write to the system of record first, then to the cache, one writer per key at a time.

    Writers of the same key (in any process) take turns under a Redis lock that covers the
    writer and the cache update, so the cache ends with the value of the last write. If the
    writer raises, the cache is untouched and the exception propagates. If the cache cannot be
    updated after the writer succeeded (Redis failed, or the value is over the size limit), the
    old entry is deleted, retrying once, so that it cannot be served stale; if even that fails,
    it is logged as an error. A value the cache format cannot hold raises
    :class:`~flask_fennec_cache.SerializationError` before the writer runs. When Redis is
    unreachable the writer still runs (fail-open), without the lock.

    :param lock_timeout: seconds one writer may hold the key's lock; a writer that cannot get
        it within that time raises :class:`~flask_fennec_cache.LockTimeout` without writing.
    """

    def __init__(self, backend: RedisCache, ttl: float | None = None, lock_timeout: float = 10.0):
        self.backend = backend
        self.ttl = ttl
        self.lock_timeout = lock_timeout

    def set(self, key: str, value: Any, writer: Callable[[Any], T], ttl: float | None = None) -> T:
        """Run ``writer(value)``, then cache *value* under *key*; returns the writer's result."""
        data = self.backend._encode(key, value)
        with self._locked(key):
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
        with self._locked(key):
            result = deleter()
            self._evict(key)
        return result

    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        lock = RedisLock(self.backend, f"{RESERVED}write:{key}", self.lock_timeout)
        held = lock.acquire(wait=self.lock_timeout)
        if held is False:
            raise LockTimeout(
                f"another writer held {key!r} for over {self.lock_timeout}s; nothing was written"
            )
        try:
            yield
        finally:
            if held:
                lock.release()

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
