"""The read path: an entry from the near cache, else from Redis (filling the near cache)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, cast

import redis

from ._codec import MISSING, EntryCodec, Unreadable
from ._connect import redact_url
from ._guard import Guard
from ._ratelog import RateLimitedLog
from ._tagindex import TagIndex
from ._topology import mget, tracking_targets
from ._validate import key_problem
from .near import NearCache
from .serializers import Lease

__all__ = ["NEAR_ENTRY_OVERHEAD", "Reader", "make_near_cache"]

#: Bytes counted for each near-cache entry beyond its stored bytes and key (the objects around
#: them); a rough figure, so that many tiny entries still weigh on the byte bound.
NEAR_ENTRY_OVERHEAD: Final = 200


def make_near_cache(
    url: str,
    client: redis.Redis,
    prefix: str,
    size: int,
    ttl: float,
    max_bytes: int,
    log: RateLimitedLog,
) -> NearCache | None:
    """A near cache tracking the server, the Sentinel master or every cluster primary; None
    (with a warning) where invalidations cannot be tracked."""
    targets = (
        "it needs a Redis server (CLIENT TRACKING), not an in-process one"
        if url.startswith("memory:")
        else tracking_targets(client)
    )
    if isinstance(targets, str):
        log.warning("near-unsupported", f"near cache disabled for {redact_url(url)}: {targets}")
        return None
    return NearCache(targets, prefix, size, ttl, max_bytes)


class Reader:
    """Reads decoded entries (values, envelopes, leases, ...) of one cache; counts nothing.

    :param get: ``GET`` of a full key name (the fast path of :func:`~._connect.fast_get`).
    """

    def __init__(
        self,
        guard: Guard,
        codec: EntryCodec,
        tags: TagIndex,
        prefix: str,
        near: NearCache | None,
        get: Callable[[str], Any],
        log: RateLimitedLog,
    ) -> None:
        self._guard = guard
        self._codec = codec
        self._tags = tags
        self._prefix = prefix
        self.near = near
        self.get = get
        self._log = log

    def key_ok(self, key: str) -> bool:
        """Whether *key* can be read; an unusable one is logged (reads treat it as a miss)."""
        problem = key_problem(key)
        if problem is None:
            return True
        self._log.warning("bad-key", f"not using the cache for this read: {problem}")
        return False

    def read(self, key: str) -> Any:
        """The entry under *key*, or MISSING; an unusable key (reserved, or without a UTF-8
        form) reads as a miss: reads never break on input."""
        return self.fetch(key) if self.key_ok(key) else MISSING

    def fetch(self, key: str) -> Any:
        """:meth:`read` for a key already known to be usable."""
        if not self._guard.allow("get"):
            return MISSING
        full = self._prefix + key
        near = self.near
        if near is not None:
            name = full.encode("utf-8", "surrogatepass")
            held = near.get(name)
            if held is not None:
                redecode, argument = cast("tuple[Callable[[Any], Any], Any]", held)
                return redecode(argument)
            ticket = near.begin_fill(name)
            if ticket is not None:
                return self._read_and_fill(key, near, name, ticket)
        data = self._guard.run("get", lambda _: self.get(full), allowed=True)
        return self._codec.decode(key, cast("bytes | None", data))

    def _read_and_fill(self, key: str, near: NearCache, name: bytes, ticket: object) -> Any:
        def read(client: redis.Redis) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            pipe.get(name)
            pipe.pttl(name)
            return pipe.execute()

        found = None
        try:
            found = self._guard.run("get", read, allowed=True)
        finally:
            if found is None:  # Redis failed (fail-open), or raised CacheUnavailable
                near.abandon_fill(name, ticket)
        if found is None:
            return MISSING
        data, ttl_ms = found
        entry = self._codec.decode(key, data)
        if entry is MISSING or isinstance(entry, (Lease, Unreadable)):
            near.abandon_fill(name, ticket)
        else:
            # Every hit gets a fresh decoding (callers never share a mutable value), from a form
            # prepared once here.
            held = self._codec.ready_form(data, entry)
            size = len(data) + len(name) + NEAR_ENTRY_OVERHEAD
            near.finish_fill(name, ticket, held, int(ttl_ms), size)
        return entry

    def fetch_tagged(self, key: str, tags: tuple[str, ...]) -> tuple[Any, dict[str, str] | None]:
        """The entry under *key* and the current versions of *tags*, in one round trip.

        On a cluster the value and the tag keys live in different slots: the MGET is split
        per slot and pipelined (one round trip per node involved, at most two). Not atomic
        there, which can only cause a spurious miss: tag versions are unique, so a value is
        never taken as current under a version it was not stored with.
        """
        names = sorted(set(tags))
        keys = [self._prefix + key] + [self._tags.key(t) for t in names]
        found = self._guard.run("get", lambda c: mget(c, keys))
        if found is None:
            return MISSING, None
        versions = {t: v.decode() for t, v in zip(names, found[1:], strict=True) if v is not None}
        return self._codec.decode(key, found[0]), versions

    def forget(self, *keys: str) -> None:
        """This process changed *keys*: drop them from the near cache before Redis says so."""
        if self.near is not None:
            self.near.evict(*((self._prefix + k).encode("utf-8", "surrogatepass") for k in keys))
