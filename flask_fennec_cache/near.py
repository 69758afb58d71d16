"""The near cache: a per-process LRU in front of Redis, kept coherent by Redis itself.

A dedicated RESP3 connection per process runs ``CLIENT TRACKING ON BCAST PREFIX <prefix>``:
Redis then pushes the name of every key under the prefix that anyone changes (or that expires
or is evicted) to that connection. Every read first drains the pushes already received — a
non-blocking poll of the socket — and evicts what they name, so a write acknowledged to another
process before this read started is not served from here: Redis queues the push to this
connection before it replies to the writer. A fill (a value read from Redis to store here)
that an invalidation raced is not stored. The whole near cache is flushed when the tracking
connection breaks or reconnects, on a flush-all push, and in a forked child; while the tracking
connection is down, reads bypass it. A local TTL (never longer than the key's TTL in Redis) and
an LRU bound are backstops.
"""

from __future__ import annotations

import select
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, cast

import redis
from redis.connection import AbstractConnection

from ._forksafe import reset_after_fork
from ._ratelog import RateLimitedLog

__all__ = ["NearCache"]

_log = RateLimitedLog()


class NearCache:
    """A bounded, coherent in-process copy of recently read Redis values (raw bytes).

    :param connect: builds the dedicated RESP3 tracking connection.
    :param prefix: the key prefix Redis broadcasts invalidations for.
    :param max_entries: LRU bound.
    :param ttl: seconds an entry may live here at most.
    """

    def __init__(
        self,
        connect: Callable[[], AbstractConnection],
        prefix: str,
        max_entries: int,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        self._prefix = prefix
        self.max_entries = max_entries
        self.ttl = ttl
        self._clock = clock
        self._init_state()
        reset_after_fork(self)

    def _init_state(self) -> None:
        self._lock = threading.RLock()
        self._entries: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()
        self._filling: dict[bytes, object] = {}
        self._conn: AbstractConnection | None = None
        self._poller: Any = None
        self._retry_at = 0.0

    def _after_fork(self) -> None:
        # The parent's socket must not be read by two processes; start over, empty.
        self._init_state()

    # -- reads and fills ------------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        """The stored bytes of *key*, or None (also when coherence cannot be guaranteed)."""
        with self._lock:
            if not self._sync():
                return None
            found = self._entries.get(key)
            if found is None:
                return None
            data, expires = found
            if self._clock() >= expires:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return data

    def begin_fill(self, key: bytes) -> object | None:
        """Announce that *key* is about to be read from Redis; a ticket for :meth:`finish_fill`."""
        with self._lock:
            if self._conn is None:
                return None
            ticket = object()
            self._filling[key] = ticket
            return ticket

    def finish_fill(self, key: bytes, ticket: object, data: bytes, ttl_ms: int) -> None:
        """Store *data* read from Redis unless an invalidation of *key* arrived meanwhile."""
        with self._lock:
            self._sync()
            if self._filling.get(key) is not ticket:
                return
            del self._filling[key]
            if ttl_ms == -2:  # the key vanished between GET and PTTL
                return
            life = self.ttl if ttl_ms < 0 else min(self.ttl, ttl_ms / 1000.0)
            self._entries[key] = (data, self._clock() + life)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def abandon_fill(self, key: bytes, ticket: object) -> None:
        """Forget a fill that will not complete."""
        with self._lock:
            if self._filling.get(key) is ticket:
                del self._filling[key]

    def evict(self, *keys: bytes) -> None:
        """Drop *keys* here (this process's own writes, before Redis' push arrives)."""
        with self._lock:
            for key in keys:
                self._entries.pop(key, None)
                self._filling.pop(key, None)

    def flush(self) -> None:
        """Drop everything."""
        with self._lock:
            self._entries.clear()
            self._filling.clear()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def connected(self) -> bool:
        """Whether the tracking connection is up (the near cache serves only while it is)."""
        return self._conn is not None

    # -- the tracking connection ---------------------------------------------------------------

    def _sync(self) -> bool:
        """Apply every invalidation received so far; False when coherence is not assured."""
        if self._conn is None and not self._reconnect():
            return False
        if self._poller.poll(0):
            self._drain()
        return self._conn is not None

    def _drain(self) -> None:
        conn = self._conn
        assert conn is not None
        try:
            while conn.can_read(timeout=0):
                conn.read_response(push_request=True, timeout=0, disconnect_on_error=False)
        except (redis.RedisError, OSError) as exc:
            _log.warning("near-broken", f"near cache: tracking connection lost ({exc}); flushed")
            self._disconnect()

    def _on_invalidate(self, message: list[Any]) -> None:
        keys = message[1] if len(message) > 1 else None
        if keys is None:  # FLUSHALL / FLUSHDB, or tracking-redir-broken
            self._entries.clear()
            self._filling.clear()
            return
        for key in keys:
            raw = key if isinstance(key, bytes) else str(key).encode()
            self._entries.pop(raw, None)
            self._filling.pop(raw, None)

    def _reconnect(self) -> bool:
        now = time.monotonic()
        if now < self._retry_at:
            return False
        self._retry_at = now + 1.0
        self.flush()
        try:
            conn = cast(Any, self._connect())
            conn.connect()
            conn.send_command("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", self._prefix)
            reply = conn.read_response()
            if reply not in (b"OK", "OK"):
                raise redis.ResponseError(f"CLIENT TRACKING answered {reply!r}")
            conn._parser.set_invalidation_push_handler(self._on_invalidate)
        except (redis.RedisError, OSError) as exc:
            _log.warning("near-connect", f"near cache: cannot enable tracking ({exc}); bypassed")
            return False
        poller = select.poll()
        poller.register(conn._sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        self._conn, self._poller = conn, poller
        return True

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        self._entries.clear()
        self._filling.clear()
        if conn is not None:
            try:
                cast(Any, conn).disconnect()
            except (redis.RedisError, OSError):
                pass

    def close(self) -> None:
        """Close the tracking connection and drop everything."""
        with self._lock:
            self._disconnect()
