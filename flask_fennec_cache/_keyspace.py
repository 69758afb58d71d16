"""Walking one cache's keys with SCAN: listing them, and clearing them with UNLINK."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, cast

import redis

from ._guard import Guard
from ._topology import scan_targets
from ._validate import check_pattern, glob_escape
from .errors import CacheUnavailable
from .serializers import LEASE_TAG

__all__ = ["SCAN_BATCH", "Keyspace"]

SCAN_BATCH: Final = 500


class Keyspace:
    """The keys under one prefix, never the library's own (``{prefix}__fennec__:…``), found
    with SCAN on every primary (never KEYS)."""

    def __init__(self, guard: Guard, prefix: str, reserved: str) -> None:
        self._guard = guard
        self._prefix = prefix
        self._reserved = reserved.encode()

    def clear(self, pattern: str) -> tuple[int, bool]:
        """``(keys removed, complete)``: UNLINK of every key matching *pattern* in batches;
        *complete* is False when Redis failed during the walk (fail-open)."""
        check_pattern(pattern)
        removed = 0

        def walk(client: redis.Redis) -> bool:
            nonlocal removed
            for batch in self._batches(client, pattern):
                removed += int(client.unlink(*batch))
            return True

        try:
            done = self._guard.run("clear", walk, timed=False, keys=())  # removals only
        except CacheUnavailable:
            self._guard.pending.clear(pattern)
            raise
        if not done:
            self._guard.pending.clear(pattern)  # applied again, whole, when Redis answers
        return removed, bool(done)

    def keys(self, pattern: str, limit: int) -> list[str]:
        """Up to *limit* keys (relative to the prefix) matching *pattern*, but those holding only
        the placeholder of a load in progress; [] (or those found) when Redis failed."""
        check_pattern(pattern)
        found: list[str] = []

        def walk(client: redis.Redis) -> bool:
            for batch in self._batches(client, pattern):
                pipe = client.pipeline(transaction=False)
                for name in batch:
                    pipe.getrange(name, 0, 0)
                heads = pipe.execute()
                found.extend(
                    name.decode("utf-8", "replace")[len(self._prefix) :]
                    for name, head in zip(batch, heads, strict=True)
                    if head and head != LEASE_TAG
                )
                if len(found) >= limit:
                    break
            return True

        self._guard.run("keys", walk, timed=False)
        return found[:limit]

    def _batches(self, client: redis.Redis, pattern: str) -> Iterator[list[bytes]]:
        """Keys matching *pattern* (not ours), in SCAN batches; on a cluster, every primary's."""
        match = glob_escape(self._prefix) + pattern
        for node in scan_targets(client):
            cursor = 0
            while True:
                cursor, names = cast(
                    tuple[int, list[bytes]],
                    node.scan(cursor=cursor, match=match, count=SCAN_BATCH),
                )
                batch = [k for k in names if not k.startswith(self._reserved)]
                if batch:
                    yield batch
                if not cursor:
                    break
