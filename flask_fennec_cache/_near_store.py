"""The near cache's entries: an LRU bounded in entries and in bytes, each entry with a local TTL."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

__all__ = ["NearEntry", "NearStore"]


class NearEntry(NamedTuple):
    """One entry of a :class:`NearStore`."""

    #: What the owner stored (never None).
    data: object
    #: When it expires, on the store's clock.
    expires: float
    #: Its size in bytes, as the owner counts it.
    size: int


class NearStore:
    """Entries by key, least recently used first, within an entry bound and a byte bound.

    Knows nothing of Redis or of coherence, and takes no lock: its owner
    (:class:`~flask_fennec_cache.near.NearCache`) calls it under its own.

    :param max_entries: most entries held; the least recently used go first.
    :param max_bytes: most bytes held, summing the sizes given to :meth:`put`; an entry
        larger than a tenth of it is not kept (it would push out a tenth of the store).
    :param ttl: most seconds an entry lives here.
    :param clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self, max_entries: int, max_bytes: int, ttl: float, clock: Callable[[], float]
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._clock = clock
        # Plain tuples, not NearEntry: unpacking an exact tuple is the faster path on a hit.
        self._entries: OrderedDict[bytes, tuple[object, float, int]] = OrderedDict()
        self._bytes = 0

    def get(self, key: bytes) -> object | None:
        """The data under *key*, now the most recently used; None if absent or expired."""
        found = self._entries.get(key)
        if found is None:
            return None
        data, expires, _ = found
        if self._clock() >= expires:
            self.drop(key)
            return None
        self._entries.move_to_end(key)
        return data

    def get_many(self, keys: Iterable[bytes]) -> list[Any]:
        """:meth:`get` of each of *keys* (None for those absent or expired), at one time."""
        now = self._clock()
        entries = self._entries
        found: list[Any] = []
        for key in keys:
            entry = entries.get(key)
            if entry is None:
                found.append(None)
            elif now >= entry[1]:
                self.drop(key)
                found.append(None)
            else:
                entries.move_to_end(key)
                found.append(entry[0])
        return found

    def put(self, key: bytes, data: object, size: int, ttl: float | None) -> bool:
        """Hold *data* (*size* bytes, never None) under *key* for at most *ttl* seconds (None:
        no limit but the store's own), replacing what was there and evicting the least
        recently used entries beyond the bounds; False when it is too large to keep."""
        self.drop(key)
        if size * 10 > self.max_bytes:
            return False
        life = self.ttl if ttl is None else min(self.ttl, ttl)
        self._entries[key] = (data, self._clock() + life, size)
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._bytes -= self._entries.popitem(last=False)[1][2]
        return True

    def drop(self, key: bytes) -> None:
        """Forget *key* (nothing happens if it is not held)."""
        found = self._entries.pop(key, None)
        if found is not None:
            self._bytes -= found[2]

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()
        self._bytes = 0

    def entry(self, key: bytes) -> NearEntry | None:
        """The entry under *key*, expired or not, without making it recently used."""
        found = self._entries.get(key)
        return None if found is None else NearEntry(*found)

    def entries(self) -> list[NearEntry]:
        """Every entry, least recently used first (expired ones included)."""
        return [NearEntry(*found) for found in self._entries.values()]

    def __iter__(self) -> Iterator[bytes]:
        """The keys, least recently used first."""
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes_held(self) -> int:
        """The sum of the sizes of the entries held."""
        return self._bytes
