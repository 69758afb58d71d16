"""Caching strategies over a backend: cache-aside (lazy loading) and write-through."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, overload

from ._results import CacheLookup, CacheResult
from ._validate import check_key, check_ttl
from .backend import RESERVED, RedisCache
from .decorators import on_pool
from .errors import CacheUnavailable, ConfigurationError, LockTimeout
from .loading import CacheParts, LoadPolicy, NamedParts, Schedule, get_or_load
from .locks import RedisLock
from .serializers import Envelope, new_version

__all__ = ["CacheAside", "WriteThrough"]

T = TypeVar("T")


class CacheAside:
    """Read through the cache: on a miss, call the loader and store what it returns.

    :param backend: the cache.
    :param ttl: seconds entries live; None uses the backend's default.
    :param cache_none: also store a ``None`` from the loader (by default it is not stored).
    :param options: the freshness options of :class:`~flask_fennec_cache.loading.LoadPolicy`
        (``none_ttl``, ``lock``, ``lock_timeout``, ``stale_ttl``, ``stale_if_error``,
        ``soft_timeout``, ``hard_timeout``, ``beta``, ``tags``).
    :param name: the name its reads and loads are counted under in
        ``get_stats()["by_name"]``; None (the default) counts them in the totals only.

    With ``stale_ttl`` or ``beta``, a stale (or soon stale) entry is served at once and
    refreshed by *loader* on the process's refresh pool (in an app context of its own).
    A loader that raises stores nothing; the exception propagates, unless *stale_if_error*
    keeps a stale value to serve instead (see :func:`~flask_fennec_cache.cache`). Concurrent
    misses of one key run the loader once, and a loader's result never overwrites a value
    written meanwhile.
    """

    def __init__(
        self,
        backend: RedisCache,
        ttl: float | None = None,
        cache_none: bool = False,
        name: str | None = None,
        **options: Any,
    ) -> None:
        self.backend = backend
        self.policy = LoadPolicy(ttl=ttl, cache_none=cache_none, **options)
        if name is not None and not (isinstance(name, str) and name.strip()):
            raise ConfigurationError(f"name must be a non-empty str, got {name!r}")
        self.name = name
        self._parts: list[NamedParts] = []

    @overload
    def get(self, key: str, loader: Callable[[], CacheResult[T]]) -> T: ...

    @overload
    def get(self, key: str, loader: Callable[[], T]) -> T: ...

    def get(self, key: str, loader: Callable[[], Any]) -> Any:
        """The cached value of *key*, loading and storing it on a miss (a loader's
        :class:`~flask_fennec_cache.CacheResult` chooses how its value is cached)."""
        return self.lookup(key, loader).value

    @overload
    def lookup(self, key: str, loader: Callable[[], CacheResult[T]]) -> CacheLookup[T]: ...

    @overload
    def lookup(self, key: str, loader: Callable[[], T]) -> CacheLookup[T]: ...

    def lookup(self, key: str, loader: Callable[[], Any]) -> CacheLookup[Any]:
        """Like :meth:`get`, and says whether the value came from the cache."""
        background = None
        if self.policy.stale_ttl or self.policy.beta:  # refreshed on the pool, not here

            def background(
                args: tuple[Any, ...], kwargs: dict[str, Any]
            ) -> tuple[Schedule, Callable[[], Any]]:
                return on_pool(), loader

        parts: CacheParts = self.backend
        if self.name is not None:
            parts = NamedParts.of(self.backend, self.name, self._parts)
        value, hit = get_or_load(parts, key, loader, self.policy, background=background)
        return CacheLookup(value, hit, key)


class WriteThrough:
    """Write to the system of record first, then to the cache, one writer per key at a time.

    Writers of the same key (in any process) take turns under a Redis lock that covers the
    writer and the cache update, so the cache ends with the value of the last write. If the
    writer raises, the cache is untouched and the exception propagates. If the cache cannot be
    updated after the writer succeeded (Redis failed, or the value is over the size limit), the
    old entry is deleted, retrying once, so that it cannot be served stale; if even that fails,
    it is logged as an error (one line per cause every 10 s, with the number held back). A
    value the cache format cannot hold raises :class:`~flask_fennec_cache.SerializationError`
    before the writer runs. When Redis is unreachable the writer still runs (fail-open),
    without the lock; with ``fail_open=False`` the call raises
    :class:`~flask_fennec_cache.CacheUnavailable` instead, before the writer when Redis is
    already failing, after it (the old entry evicted if possible) when it fails meanwhile.

    :param backend: the cache.
    :param ttl: seconds entries live; None uses the backend's default.
    :param lock_timeout: seconds one writer may hold the key's lock; a writer that cannot get
        it within that time raises :class:`~flask_fennec_cache.LockTimeout` without writing.
    """

    def __init__(self, backend: RedisCache, ttl: float | None = None, lock_timeout: float = 10.0):
        self.backend = backend
        self.ttl = check_ttl(ttl)
        self.lock_timeout = lock_timeout

    def set(
        self,
        key: str,
        value: Any,
        writer: Callable[[Any], T],
        ttl: float | None = None,
        *,
        tags: Iterable[str] = (),
    ) -> T:
        """Run ``writer(value)``, then cache *value* under *key*; returns the writer's result.

        :param ttl: seconds this entry lives; None uses the *ttl* given to the constructor.
        :param tags: names whose :meth:`~flask_fennec_cache.RedisCache.invalidate_tags`
            drops this entry, as for ``RedisCache.set(..., tags=...)``. The tag versions are
            read before the writer runs, so an invalidation of one of them while it runs
            leaves the entry a miss rather than risk serving a value older than it. Setting
            does not invalidate the tags (``delete`` does).
        """
        seconds = self.ttl if ttl is None else check_ttl(ttl)
        data = self._encode(key, value, _tag_names(tags))
        with self._locked(key):
            result = writer(value)
            try:
                stored = self.backend.writer.set_encoded(key, data, seconds)
            except CacheUnavailable:
                self._evict(key)
                raise
            if not stored:
                self._evict(key)
        return result

    def delete(self, key: str, deleter: Callable[[], T], *, tags: Iterable[str] = ()) -> T:
        """Run ``deleter()`` against the system of record, then remove *key* from the cache.

        :param tags: tags to invalidate as well, after the key is removed: every entry
            carrying one of them (the deleted record's family: lists, counts, pages that
            included it) becomes a miss, as with
            :meth:`~flask_fennec_cache.RedisCache.invalidate_tags`.

        Returns the deleter's result. If the deleter raises, the cache is untouched. Removing
        the key and invalidating the tags are each retried once; what still fails is logged
        as an error (rate-limited) and, with ``fail_open=False``, raises
        :class:`~flask_fennec_cache.CacheUnavailable` after the deleter has run.
        """
        check_key(key)
        names = _tag_names(tags)
        with self._locked(key):
            result = deleter()
            evicted = self._evict(key)
            invalidated = self._invalidate(names)
            if not self.backend.fail_open and not (evicted and invalidated):
                raise CacheUnavailable(
                    f"write-through delete of {key!r}: the record was deleted, but the cache "
                    "could not be updated"
                )
        return result

    def _encode(self, key: str, value: Any, tags: tuple[str, ...]) -> bytes | None:
        """The stored form of *value* (an envelope with the current tag versions when tagged);
        None when it cannot be stored; raises SerializationError for a value it cannot hold."""
        if not tags:
            return self.backend.codec.encode(key, value)
        versions = self.backend.tag_versions(tags, create=True)
        if versions is None:  # Redis failed (fail-open): check the value, store nothing
            self.backend.codec.encode(key, value)
            return None
        return self.backend.codec.encode(key, Envelope(value, new_version(), tags=versions))

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

    def _evict(self, key: str) -> bool:
        """Delete *key* after a write, retrying once; False (logged) when it stayed."""
        if _twice(lambda: self.backend.try_delete(key) is not None):
            return True
        self.backend.log.error(
            "write-through-evict",
            f"write-through: could not update or delete {key!r} in the cache after the write "
            "succeeded; it may be served stale until it expires",
        )
        return False

    def _invalidate(self, tags: tuple[str, ...]) -> bool:
        """Invalidate *tags* after a delete, retrying once; False (logged) when it failed."""
        if not tags or _twice(lambda: self.backend.invalidate_tags(*tags)):
            return True
        self.backend.log.error(
            "write-through-invalidate",
            f"write-through: could not invalidate the tags {list(tags)!r} after the delete "
            "succeeded; their entries may be served stale until they expire",
        )
        return False


def _twice(attempt: Callable[[], bool]) -> bool:
    """Run *attempt* until it succeeds, at most twice; a CacheUnavailable counts as a failure."""
    for _ in range(2):
        try:
            if attempt():
                return True
        except CacheUnavailable:
            pass
    return False


def _tag_names(tags: Iterable[str]) -> tuple[str, ...]:
    if isinstance(tags, str):
        raise ConfigurationError(f"tags must be a sequence of names, e.g. tags=({tags!r},)")
    return tuple(tags)
