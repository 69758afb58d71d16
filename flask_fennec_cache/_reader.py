"""The read path: an entry from the near cache, else from Redis (filling the near cache)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import redis

from ._codec import MISSING, EntryCodec, Unreadable
from ._connect import redact_url
from ._guard import Guard
from ._ratelog import RateLimitedLog
from ._tagindex import TagIndex
from ._topology import mget, tracking_targets
from ._validate import key_problem
from .near import NEAR_ENTRY_OVERHEAD, NearCache
from .serializers import Lease

__all__ = ["NEAR_ENTRY_OVERHEAD", "Reader", "make_near_cache"]


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
        if not self._guard.allow("get", (key,)):
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
        """The entry under *key* and the current versions of *tags*, in one round trip — or
        none, from the near cache, when it holds the entry and every tag's version.

        On a cluster the value and the tag keys live in different slots: the MGET is split
        per slot and pipelined (one round trip per node involved, at most two). Not atomic
        there, which can only cause a spurious miss: tag versions are unique, so a value is
        never taken as current under a version it was not stored with.
        """
        if self.near is not None:
            return self._fetch_tagged_near(key, tags, self.near)
        names = sorted(set(tags))
        keys = [self._prefix + key] + [self._tags.key(t) for t in names]
        found = self._guard.run("get", lambda c: mget(c, keys), keys=(key,))
        if found is None:
            return MISSING, None
        versions = {t: v.decode() for t, v in zip(names, found[1:], strict=True) if v is not None}
        return self._codec.decode(key, found[0]), versions

    def _fetch_tagged_near(
        self, key: str, tags: tuple[str, ...], near: NearCache
    ) -> tuple[Any, dict[str, str] | None]:
        """:meth:`fetch_tagged` with a near cache. The tag versions are keys under the prefix,
        kept there as coherently as the entries (docs/consistency.md, "Tagged entries in the
        near cache"); what it does not hold is read from Redis in one round trip and filled."""
        if not self._guard.allow("get", (key,)):
            return MISSING, None
        names, tag_keys = self._tags.near_keys(tags)
        wanted = [(self._prefix + key).encode("utf-8", "surrogatepass"), *tag_keys]
        held = near.get_many(wanted)
        if held is None:  # coherence not assured: from Redis, filling nothing
            return self._read_tagged(key, names, wanted, [None] * len(wanted), None, {})
        if None not in held:
            redecode, argument = held[0]
            if len(names) == 1:
                return redecode(argument), {names[0]: held[1]}
            return redecode(argument), dict(zip(names, held[1:], strict=True))
        tickets = {i: near.begin_fill(wanted[i]) for i, got in enumerate(held) if got is None}
        return self._read_tagged(key, names, wanted, held, near, tickets)

    def _read_tagged(
        self,
        key: str,
        names: list[str],
        wanted: list[bytes],
        held: list[object | None],
        near: NearCache | None,
        tickets: dict[int, object | None],
    ) -> tuple[Any, dict[str, str] | None]:
        """Read what is not *held* of *wanted* (the entry's name, then the tag keys of *names*)
        from Redis, with the PTTLs, fill the near cache with it under *tickets*, and answer
        :meth:`fetch_tagged` from that and what was *held*."""
        fill = _Fill(near, wanted, tickets)
        read_now = self._read_missing("get", wanted, held, fill)
        if read_now is None:
            return MISSING, None
        if 0 in read_now:
            entry = self._decode_and_fill(key, *read_now[0], fill, 0)
        else:
            redecode, argument = cast("tuple[Callable[[Any], Any], Any]", held[0])
            entry = redecode(argument)
        versions: dict[str, str] = {}
        for i, tag in enumerate(names, start=1):
            if i not in read_now:
                versions[tag] = cast(str, held[i])
            elif read_now[i][0] is None:  # no version: entries carrying the tag are misses
                fill.abandon(i)
            else:
                data, ttl_ms = read_now[i]
                versions[tag] = version = data.decode()
                fill.keep(i, version, data, ttl_ms)
        return entry, versions

    def fetch_many(self, keys: list[str]) -> list[Any]:
        """The entries under *keys* (MISSING where there is none, or Redis failed): those the
        near cache holds from it, the others in one round trip (filling the near cache; on a
        cluster one MGET or pipeline per node)."""
        if not self._guard.allow("get_many", keys):
            return [MISSING] * len(keys)
        if self.near is not None:
            entries = self._fetch_many_near(keys, self.near)
            if entries is not None:
                return entries
        names = [self._prefix + k for k in keys]
        datas = self._guard.run("get_many", lambda c: mget(c, names), allowed=True)
        datas = datas or [None] * len(keys)
        return [self._codec.decode(k, d) for k, d in zip(keys, datas, strict=True)]

    def _fetch_many_near(self, keys: list[str], near: NearCache) -> list[Any] | None:
        """:meth:`fetch_many` through *near*; None when its coherence is not assured."""
        wanted = [(self._prefix + k).encode("utf-8", "surrogatepass") for k in keys]
        held = near.get_many(wanted)
        if held is None:
            return None
        tickets = {i: near.begin_fill(name) for i, name in enumerate(wanted) if held[i] is None}
        fill = _Fill(near, wanted, tickets)
        # Redis failed: None, and the keys not held are misses.
        read_now = (self._read_missing("get_many", wanted, held, fill) if tickets else None) or {}
        entries: list[Any] = []
        for i, (key, got) in enumerate(zip(keys, held, strict=True)):
            if got is not None:
                redecode, argument = cast("tuple[Callable[[Any], Any], Any]", got)
                entries.append(redecode(argument))
            elif i in read_now:
                entries.append(self._decode_and_fill(key, *read_now[i], fill, i))
            else:
                entries.append(MISSING)
        return entries

    def _decode_and_fill(
        self, key: str, data: bytes | None, ttl_ms: int, fill: _Fill, i: int
    ) -> Any:
        """The entry of *key* read as *data* (with that PTTL), kept by *fill* under index *i*
        if it holds a value."""
        entry = self._codec.decode(key, data)
        if data is None or entry is MISSING or isinstance(entry, (Lease, Unreadable)):
            fill.abandon(i)
        else:
            fill.keep(i, self._codec.ready_form(data, entry), data, ttl_ms)
        return entry

    def _read_missing(
        self, op: str, wanted: list[bytes], held: list[object | None], fill: _Fill
    ) -> dict[int, tuple[Any, Any]] | None:
        """``{index: (data, pttl)}`` of the names of *wanted* not *held*, read from Redis in
        one pipeline; None (with *fill* abandoned) when Redis failed."""
        missing = [i for i, got in enumerate(held) if got is None]

        def read(client: redis.Redis) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for i in missing:
                pipe.get(wanted[i])
                pipe.pttl(wanted[i])
            return pipe.execute()

        found = None
        try:
            found = self._guard.run(op, read, allowed=True)
        finally:
            if found is None:  # Redis failed, or raised CacheUnavailable
                for i in missing:
                    fill.abandon(i)
        if found is None:
            return None
        return dict(zip(missing, zip(found[::2], found[1::2], strict=True), strict=True))

    def forget(self, *keys: str) -> None:
        """This process changed *keys*: drop them from the near cache before Redis says so."""
        if self.near is not None:
            self.near.evict(*((self._prefix + k).encode("utf-8", "surrogatepass") for k in keys))


class _Fill:
    """The near-cache fills of one multi-key read: the *tickets* of the indices of *names*
    being filled (None where no fill was begun: then nothing is stored)."""

    def __init__(
        self, near: NearCache | None, names: list[bytes], tickets: dict[int, object | None]
    ) -> None:
        self._near = near
        self._names = names
        self._tickets = tickets

    def keep(self, index: int, held: object, data: bytes, ttl_ms: int) -> None:
        """Store *held* (read as *data*, with that PTTL) unless an invalidation raced it."""
        ticket = self._tickets.get(index)
        if self._near is not None and ticket is not None:
            name = self._names[index]
            size = len(data) + len(name) + NEAR_ENTRY_OVERHEAD
            self._near.finish_fill(name, ticket, held, int(ttl_ms), size)

    def abandon(self, index: int) -> None:
        """Nothing to store for this one."""
        ticket = self._tickets.get(index)
        if self._near is not None and ticket is not None:
            self._near.abandon_fill(self._names[index], ticket)
