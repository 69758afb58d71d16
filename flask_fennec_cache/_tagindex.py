"""Tag versions: invalidating every entry of a tag in one round trip, and checking entries."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import redis

from ._guard import Guard
from ._scripts import Scripts
from ._validate import RESERVED
from .errors import CacheUnavailable
from .near import NEAR_ENTRY_OVERHEAD, NearCache
from .serializers import Envelope, new_version

__all__ = ["NEAR_KEYS_REMEMBERED", "TagIndex"]

#: How many tuples of tags :meth:`TagIndex.near_keys` remembers (they come from code: few).
NEAR_KEYS_REMEMBERED: Final = 1024


class TagIndex:
    """The tag versions of one cache prefix.

    Each tag has a random version; entries remember the versions they were loaded under and
    are misses once one changed. All of a prefix's tag keys share one cluster hash tag, so
    multi-tag scripts run in one slot. They are keys under the prefix: a *near* cache keeps
    copies of them as coherently as of the entries (this process's own bumps evict them).
    """

    def __init__(
        self, guard: Guard, scripts: Scripts, prefix: str, near: NearCache | None = None
    ) -> None:
        self._guard = guard
        self._scripts = scripts
        self._head = f"{prefix}{RESERVED}{{{prefix}tags}}:"
        #: The cache's near cache, which keeps copies of the tag versions too.
        self.near = near
        self._near_keys: dict[tuple[str, ...], tuple[list[str], list[bytes]]] = {}

    def key(self, tag: str) -> str:
        """The Redis key holding *tag*'s version."""
        return self._head + tag

    def near_keys(self, tags: tuple[str, ...]) -> tuple[list[str], list[bytes]]:
        """*tags* sorted without repeats, and the names of their keys as the near cache holds
        them; remembered per tuple (a decorator's tags), for at most
        :data:`NEAR_KEYS_REMEMBERED` tuples."""
        known = self._near_keys.get(tags)
        if known is None:
            names = sorted(set(tags))
            known = names, [self.key(t).encode("utf-8", "surrogatepass") for t in names]
            if len(self._near_keys) >= NEAR_KEYS_REMEMBERED:
                self._near_keys.clear()
            self._near_keys[tags] = known
        return known

    def invalidate(self, tags: Iterable[str]) -> bool:
        """Give every tag a new version, in one round trip; False when Redis failed."""
        names = list(tags)
        if not names:
            return True

        def bump(client: redis.Redis) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for tag in names:
                pipe.set(self.key(tag), new_version())
            return pipe.execute()

        try:
            done = self._guard.run("invalidate_tags", bump, keys=()) is not None
        except CacheUnavailable:
            self._guard.pending.invalidate_tags(names)
            raise
        if self.near is not None:  # this process's own bump: before Redis' push arrives
            self.near.evict(*(self.key(t).encode("utf-8", "surrogatepass") for t in names))
        if not done:
            self._guard.pending.invalidate_tags(names)  # applied when Redis answers again
        return done

    def versions(self, tags: Iterable[str], create: bool = False) -> dict[str, str] | None:
        """The current version of each tag (creating missing ones when *create*); None on error.

        A tag without a version (never used, or evicted) is left out, so entries carrying it
        are misses: losing a version can only drop entries, never revive stale ones.
        """
        names = sorted(set(tags))
        if not names:
            return {}
        keys = [self.key(t) for t in names]
        if create:
            fresh = [new_version() for _ in names]
            values = self._guard.run(
                "tag_versions", lambda c: self._scripts.tags(keys, fresh, c), keys=()
            )
        elif self.near is not None:
            return self._near_versions(names, keys, self.near)
        else:
            values = self._guard.run("tag_versions", lambda c: c.mget(keys), keys=())
        if values is None:
            return None
        return {t: v.decode() for t, v in zip(names, values, strict=True) if v is not None}

    def _near_versions(
        self, names: list[str], keys: list[str], near: NearCache
    ) -> dict[str, str] | None:
        """:meth:`versions` (not creating) from the near cache's copies when it holds them all;
        else from Redis (one MGET), filling the near cache with what it read."""
        held_as = [key.encode("utf-8", "surrogatepass") for key in keys]
        held = near.get_many(held_as, count=False)  # a part of a read, not a read of its own
        if held is not None and None not in held:
            return dict(zip(names, held, strict=True))
        tickets = [near.begin_fill(name) if held is not None else None for name in held_as]
        values: list[Any] | None = None
        try:
            values = self._guard.run("tag_versions", lambda c: c.mget(keys), keys=())
        finally:
            read: list[Any] = values or [None] * len(held_as)
            for name, ticket, value in zip(held_as, tickets, read, strict=True):
                if ticket is None:
                    continue
                if value is None:  # Redis failed, or the tag has no version: nothing to keep
                    near.abandon_fill(name, ticket)
                else:  # tag keys have no TTL (-1): the near cache's own bounds them
                    size = len(value) + len(name) + NEAR_ENTRY_OVERHEAD
                    near.finish_fill(name, ticket, value.decode(), -1, size)
        if values is None:
            return None
        return {t: v.decode() for t, v in zip(names, read, strict=True) if v is not None}

    def current(self, entry: Envelope, known: Mapping[str, str] | None = None) -> bool:
        """Whether *entry* was loaded under the current version of each of its tags (*known*
        versions are used when they cover them; otherwise they are read)."""
        pending = self._guard.pending
        if pending.waiting and pending.covers_tags(entry.tags):
            return False  # one of its tags was invalidated during an outage: not applied yet
        if known is not None:  # a plain loop: this runs on every tagged hit
            for tag, version in entry.tags.items():
                have = known.get(tag)
                if have != version:
                    if have is not None:
                        return False
                    break  # not known: read them all
            else:
                return True
        known = self.versions(entry.tags)
        if known is None:
            return False
        return all(known.get(tag) == version for tag, version in entry.tags.items())
