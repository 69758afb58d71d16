"""The generation of one cache's entries: one write in Redis invalidates every entry under the
prefix at once (O(1)), where removing them would take a walk of the keyspace.

Entries written while the generation is above zero carry it (an envelope in its metadata,
anything else in a ``G`` stamp in front); an entry older than the current generation reads as a
miss. Each process holds the current generation, and its statistics' flushing thread reads it
again every round (the first one as soon as the process counts its first operation), so reads
check it without any round trip. A bump takes effect in the process that made it at once, and
in every other one, started before or after it, within one flush interval.

The generation is a server-side value that only grows: a bump sets it to the bumping host's
clock in milliseconds, or one more than the current one, whichever is larger, so even a lost
key (deleted by hand, or evicted by an ``allkeys-*`` policy) and then a new bump never brings an
old generation back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from ._entries import MISSING, Envelope, Lease, Stamped, Unreadable
from ._forksafe import reset_after_fork
from ._validate import RESERVED
from .errors import CacheUnavailable

if TYPE_CHECKING:
    import redis

    from ._guard import Guard

__all__ = ["BUMP", "Generation"]

# KEYS[1] holds the generation; ARGV[1] is the caller's clock in ms. Returns the new one.
BUMP: Final = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local new = tonumber(ARGV[1])
if new <= current then new = current + 1 end
redis.call('SET', KEYS[1], new)
return new
"""


class Generation:
    """The current generation of one cache's entries, as this process knows it.

    :param key: the Redis key holding it (in the library's reserved namespace).
    """

    def __init__(self, key: str, guard: Guard) -> None:
        self.key = key
        #: The generation entries must be at to be read (0: never bumped).
        self.current = 0
        self._guard = guard
        self._changed: Callable[[], None] = _nothing
        self._lock = threading.Lock()
        reset_after_fork(self)

    @classmethod
    def of(cls, prefix: str, guard: Guard, changed: Callable[[], None] | None) -> Generation:
        """The generation of the cache under *prefix*; *changed* is called when it grows (to
        flush the near cache). Its key shares the tag versions' hash tag (one slot)."""
        made = cls(f"{prefix}{RESERVED}{{{prefix}tags}}generation", guard)
        made._changed = changed or _nothing
        return made

    def admit(self, entry: Any) -> Any:
        """*entry* without its stamp, or MISSING when it is older than the current generation
        (leases and unreadable entries pass: they hold no value)."""
        if type(entry) is Stamped:
            stamp, entry = entry.generation, entry.entry
        elif isinstance(entry, Envelope):
            stamp = entry.generation
        elif isinstance(entry, (Lease, Unreadable)):
            return entry
        else:
            stamp = 0
        return entry if stamp >= self.current else MISSING

    def read_again(self) -> None:
        """Read it again, quietly (the flushing thread, every round; this background read
        leaves the breaker to the commands of the application)."""
        found = self._guard.quietly(lambda c: [c.get(self.key)], informs=False)
        if found is not None:
            self.observe(found[0])

    def observe(self, raw: bytes | str | None) -> None:
        """The generation as just read from Redis (None: never bumped, or the key was lost)."""
        value = int(raw) if raw else 0
        with self._lock:
            grew = value > self.current
            if grew:
                self.current = value
        if grew:
            self._changed()

    def bump(self) -> bool:
        """Invalidate every entry under the prefix: raise the generation in Redis, and here at
        once. False when Redis did not get it (failing closed: raises CacheUnavailable)."""
        now_ms = int(time.time() * 1000)

        def run(client: redis.Redis) -> Any:
            return client.eval(BUMP, 1, self.key, now_ms)

        try:
            new = self._guard.run("clear", run, keys=())  # a removal: never stale
        except CacheUnavailable:
            self._guard.pending.everything()
            raise
        if new is None:
            self._guard.pending.everything()  # bumped when Redis answers again
            return False
        self.observe(str(int(new)).encode())
        return True

    def _after_fork(self) -> None:
        self._lock = threading.Lock()


def _nothing() -> None:
    pass
