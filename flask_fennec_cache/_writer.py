"""The write path of one cache: plain and tagged sets, and deletes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import redis

from ._codec import EntryCodec
from ._guard import Guard
from ._stats import StatsBuffer
from ._tagindex import TagIndex
from ._validate import check_key, check_ttl, ttl_ms
from .errors import CacheUnavailable
from .serializers import Envelope, new_version

__all__ = ["Writer"]

T = TypeVar("T")


class Writer:
    """Stores and removes entries; every change also leaves this process's near cache
    (*forget*). A TTL of None is *default_ttl*. A set or delete that Redis did not get is kept
    in the guard's pending invalidations (as a deletion of those keys: the old entries must
    not outlive the outage)."""

    def __init__(
        self,
        guard: Guard,
        codec: EntryCodec,
        tags: TagIndex,
        counters: StatsBuffer,
        prefix: str,
        default_ttl: float | None,
        forget: Callable[..., None],
    ) -> None:
        self._guard = guard
        self._codec = codec
        self._tags = tags
        self._counters = counters
        self._prefix = prefix
        self._default_ttl = default_ttl
        self._forget = forget

    def set(
        self,
        key: str,
        value: Any,
        ttl: float | None,
        tags: Iterable[str],
        stale_ttl: float | None,
    ) -> bool:
        """See :meth:`~flask_fennec_cache.RedisCache.set`."""
        tags = tuple(tags)
        if not tags and stale_ttl is None:
            return self.set_encoded(key, self._codec.encode(key, value), ttl)
        versions = self._tags.versions(tags, create=True) if tags else {}
        if versions is None:
            return False
        seconds = self._default_ttl if ttl is None else check_ttl(ttl)
        fresh_until = None if seconds is None or stale_ttl is None else time.time() + seconds
        envelope = Envelope(value, new_version(), fresh_until, 0.0, versions)
        total = None if seconds is None else seconds + (check_ttl(stale_ttl) or 0)
        return self.set_encoded(key, self._codec.encode(key, envelope), total)

    def set_encoded(self, key: str, data: bytes | None, ttl: float | None) -> bool:
        """Store already encoded *data* (None: nothing, False) under *key*."""
        if data is None:
            return False
        ms = ttl_ms(ttl, self._default_ttl)
        full = self._prefix + key
        done = self._kept_on_failure((key,), lambda: self._guard.run(
            "set", lambda c: c.set(full, data, px=ms), keys=(key,)
        ))  # fmt: skip
        self._forget(key)
        if done:
            self._counters.add("sets")
        return done is not None and bool(done)

    def set_many(self, mapping: Mapping[str, Any], ttl: float | None) -> bool:
        """See :meth:`~flask_fennec_cache.RedisCache.set_many`."""
        ms = ttl_ms(ttl, self._default_ttl)
        encoded = {key: self._codec.encode(key, value) for key, value in mapping.items()}
        ready = {key: data for key, data in encoded.items() if data is not None}
        if not ready:
            return not encoded

        def write(client: redis.Redis) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for key, data in ready.items():
                pipe.set(self._prefix + key, data, px=ms)
            return pipe.execute()

        results = self._kept_on_failure(
            tuple(ready), lambda: self._guard.run("set_many", write, keys=ready)
        )
        self._forget(*ready)
        stored = sum(1 for ok in results or () if ok)
        self._counters.add("sets", stored)
        return stored == len(encoded)

    def add(self, key: str, value: Any, ttl: float | None) -> bool:
        """See :meth:`~flask_fennec_cache.RedisCache.add`."""
        data, ms = self._codec.encode(key, value), ttl_ms(ttl, self._default_ttl)
        full = self._prefix + key
        done = data is not None and self._guard.run(
            "add", lambda c: bool(c.set(full, data, px=ms, nx=True)), keys=(key,)
        )
        self._forget(key)
        if done:
            self._counters.add("sets")
        return bool(done)

    def _kept_on_failure(self, keys: tuple[str, ...], run: Callable[[], T | None]) -> T | None:
        """``run()``; when Redis did not get it (None, or CacheUnavailable when failing
        closed), the deletion of *keys* is kept for when it answers again."""
        try:
            done = run()
        except CacheUnavailable:
            self._guard.pending.delete(keys)
            raise
        if done is None:
            self._guard.pending.delete(keys)
        return done

    def delete(self, keys: tuple[str, ...]) -> int | None:
        """See :meth:`~flask_fennec_cache.RedisCache.try_delete`."""
        if not keys:
            return 0
        for key in keys:
            check_key(key)
        names = [self._prefix + k for k in keys]
        removed = self._kept_on_failure(keys, lambda: self._guard.run(
            "delete", lambda c: c.unlink(*names), keys=()  # a removal: never stale
        ))  # fmt: skip
        self._forget(*keys)
        if removed is None:
            return None
        self._counters.add("deletes", int(removed))
        return int(removed)
