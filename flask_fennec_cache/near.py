"""The near cache: a per-process LRU in front of Redis, kept coherent by Redis itself.

A dedicated RESP3 connection per process — on a cluster, one per master — runs ``CLIENT
TRACKING ON BCAST PREFIX <prefix>``: each server then pushes the name of every key under the
prefix that anyone changes on it (or that expires or is evicted) to that connection. Every
read first drains the pushes already received — one non-blocking poll of every tracking
socket at once — and evicts what they name, so a write acknowledged to another process before
this read started is not served from here: a server queues the push to this process's
connection before it replies to the writer. A fill (a value read from Redis to store here)
that an invalidation raced is not stored. The whole near cache is flushed when a tracking
connection breaks or the connections are rebuilt, on a flush-all push, in a forked child, and
when the set of masters changes (a failover); while the connections are down, reads bypass
it. A local TTL (never longer than the key's TTL in Redis) and an LRU bound are backstops.

:class:`NearCache` composes the two parts that do this: the entries
(:class:`~flask_fennec_cache._near_store.NearStore`, bounded, with local TTLs) and the
tracking connections (:class:`~flask_fennec_cache._tracking.TrackingConnections`); it adds
the fill tickets that keep a raced fill out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from ._forksafe import reset_after_fork
from ._near_store import NearStore
from ._tracking import (
    TOPOLOGY_CHECK_INTERVAL,
    Addresses,
    TrackingTargets,
    tracking_connections,
)

__all__ = [
    "NEAR_ENTRY_OVERHEAD",
    "TOPOLOGY_CHECK_INTERVAL",
    "Addresses",
    "NearCache",
    "TrackingTargets",
]

#: Bytes counted for each near-cache entry beyond its stored bytes and key (the objects around
#: them); a rough figure, so that many tiny entries still weigh on the byte bound.
NEAR_ENTRY_OVERHEAD: Final = 200


class NearCache:
    """A bounded, coherent in-process copy of recently read Redis values.

    What it holds per key is the caller's business (the backend keeps a ready-to-decode form;
    never None); :attr:`hits` counts the reads it answered, under the lock it takes anyway.

    :param targets: the tracking connections to open (:class:`TrackingTargets`).
    :param prefix: the key prefix Redis broadcasts invalidations for.
    :param max_entries: LRU bound on the number of entries.
    :param ttl: seconds an entry may live here at most.
    :param max_bytes: LRU bound on the entries' sizes (as given to :meth:`finish_fill`); an
        entry larger than a tenth of it is not kept.
    :param clock: monotonic seconds, for the local TTLs, the masters' check and the
        reconnection back-off (tests pass a fake one).
    """

    def __init__(
        self,
        targets: TrackingTargets,
        prefix: str,
        max_entries: int,
        ttl: float,
        max_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._targets = targets
        self._prefix = prefix
        self._clock = clock
        self._store = NearStore(max_entries, max_bytes, ttl, clock)
        self._init_state()
        reset_after_fork(self)

    def _init_state(self) -> None:
        self.hits = 0
        self._lock = threading.RLock()
        self._store.clear()
        self._filling: dict[bytes, object] = {}
        self._tracking = tracking_connections(
            self._targets, self._prefix, self._invalidated, self._clock
        )

    def _after_fork(self) -> None:
        # The parent's sockets must not be read by two processes: new connections, empty.
        self._init_state()

    # -- reads and fills ------------------------------------------------------------------------

    def get(self, key: bytes) -> object | None:
        """What was stored for *key*, or None (also when coherence cannot be guaranteed)."""
        with self._lock:
            if not self._tracking.sync():
                return None
            data = self._store.get(key)
            if data is not None:
                self.hits += 1
            return data

    def get_many(self, keys: Sequence[bytes], count: bool = True) -> list[Any] | None:
        """What was stored for each of *keys* (None for a key not held), all read after one
        drain of the invalidations; None when coherence cannot be guaranteed. With *count*,
        counts one hit when every key is held: the read then needs no round trip."""
        with self._lock:
            if not self._tracking.sync():
                return None
            found = self._store.get_many(keys)
            if count and None not in found:
                self.hits += 1
            return found

    def begin_fill(self, key: bytes) -> object | None:
        """Announce that *key* is about to be read from Redis; a ticket for :meth:`finish_fill`."""
        with self._lock:
            if not self._tracking.connected:
                return None
            ticket = object()
            self._filling[key] = ticket
            return ticket

    def finish_fill(
        self, key: bytes, ticket: object, data: object, ttl_ms: int, size: int = 0
    ) -> None:
        """Store *data* (about *size* bytes) read from Redis unless an invalidation of *key*
        arrived meanwhile (or the masters changed: the value may come from a server no
        connection tracks). *ttl_ms* is the key's PTTL: -1 for none, -2 if it vanished."""
        with self._lock:
            self._tracking.check_masters()
            self._tracking.sync()
            if self._filling.get(key) is not ticket:
                return
            del self._filling[key]
            if ttl_ms == -2:  # vanished meanwhile
                self._store.drop(key)
                return
            self._store.put(key, data, size, None if ttl_ms < 0 else ttl_ms / 1000.0)

    def abandon_fill(self, key: bytes, ticket: object) -> None:
        """Forget a fill that will not complete."""
        with self._lock:
            if self._filling.get(key) is ticket:
                del self._filling[key]

    def evict(self, *keys: bytes) -> None:
        """Drop *keys* here (this process's own writes, before Redis' push arrives)."""
        with self._lock:
            self._invalidated(keys)

    def flush(self) -> None:
        """Drop everything."""
        with self._lock:
            self._invalidated(None)

    def close(self) -> None:
        """Close the tracking connections and drop everything."""
        with self._lock:
            self._tracking.close()

    def _invalidated(self, keys: Sequence[bytes] | None) -> None:
        """Forget *keys*, or everything (None), with any fill of them in progress."""
        if keys is None:
            self._store.clear()
            self._filling.clear()
            return
        for key in keys:
            self._store.drop(key)
            self._filling.pop(key, None)

    # -- state -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._store)

    @property
    def max_entries(self) -> int:
        """The bound on the number of entries."""
        return self._store.max_entries

    @property
    def max_bytes(self) -> int:
        """The bound on the entries' sizes."""
        return self._store.max_bytes

    @property
    def ttl(self) -> float:
        """Most seconds an entry lives here."""
        return self._store.ttl

    @property
    def bytes_held(self) -> int:
        """The sizes of the entries held, as given to :meth:`finish_fill`."""
        return self._store.bytes_held

    @property
    def connected(self) -> bool:
        """Whether the tracking connections are up (the near cache serves only while they are)."""
        return self._tracking.connected

    @property
    def state(self) -> str:
        """``"connected"``, ``"not started"`` (no read has opened the tracking connections yet in
        this process: a fresh worker, a forked child) or ``"disconnected"`` (they broke, or could
        not be opened: reads bypass the near cache until they reopen)."""
        if self._tracking.connected:
            return "connected"
        return "disconnected" if self._tracking.attempted else "not started"

    @property
    def tracked(self) -> Addresses:
        """The ``(host, port)`` of every server a tracking connection reaches (empty if down)."""
        return self._tracking.tracked
