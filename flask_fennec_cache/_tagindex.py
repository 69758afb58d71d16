"""Tag versions: invalidating every entry of a tag in one round trip, and checking entries."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import redis

from ._guard import Guard
from ._scripts import Scripts
from ._validate import RESERVED
from .errors import CacheUnavailable
from .serializers import Envelope, new_version

__all__ = ["TagIndex"]


class TagIndex:
    """The tag versions of one cache prefix.

    Each tag has a random version; entries remember the versions they were loaded under and
    are misses once one changed. All of a prefix's tag keys share one cluster hash tag, so
    multi-tag scripts run in one slot.
    """

    def __init__(self, guard: Guard, scripts: Scripts, prefix: str) -> None:
        self._guard = guard
        self._scripts = scripts
        self._head = f"{prefix}{RESERVED}{{{prefix}tags}}:"

    def key(self, tag: str) -> str:
        """The Redis key holding *tag*'s version."""
        return self._head + tag

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
            done = self._guard.run("invalidate_tags", bump) is not None
        except CacheUnavailable:
            self._guard.pending.invalidate_tags(names)
            raise
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
            values = self._guard.run("tag_versions", lambda c: self._scripts.tags(keys, fresh, c))
        else:
            values = self._guard.run("tag_versions", lambda c: c.mget(keys))
        if values is None:
            return None
        return {t: v.decode() for t, v in zip(names, values, strict=True) if v is not None}

    def current(self, entry: Envelope, known: Mapping[str, str] | None = None) -> bool:
        """Whether *entry* was loaded under the current version of each of its tags (*known*
        versions are used when they cover them; otherwise they are read)."""
        if known is None or not set(entry.tags) <= set(known):
            known = self.versions(entry.tags)
        if known is None:
            return False
        return all(known.get(tag) == version for tag, version in entry.tags.items())
