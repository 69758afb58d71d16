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
"""

from __future__ import annotations

import select
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.connection import AbstractConnection

from ._forksafe import reset_after_fork
from ._ratelog import RateLimitedLog

__all__ = ["TOPOLOGY_CHECK_INTERVAL", "Addresses", "NearCache", "TrackingTargets"]

_log = RateLimitedLog()

#: A set of ``(host, port)`` server addresses.
Addresses = frozenset[tuple[str, int]]

#: Most seconds between two checks, on the read path, that the masters are still the ones the
#: tracking connections reach (fills check every time).
TOPOLOGY_CHECK_INTERVAL = 1.0


@dataclass(frozen=True)
class TrackingTargets:
    """Where a near cache's tracking connections go.

    :param connect: new, not yet connected connections: one to every master (may do I/O, e.g.
        ask the sentinels or discover a cluster's slot map; raises a RedisError on failure).
        Its argument is True on every attempt after the first: the previous connections broke,
        the masters changed or the last attempt failed, so the client's view of the masters
        should be refreshed first.
    :param masters: the addresses of the masters as the client currently believes them to be,
        without I/O, or None when unknown; None for a single server, whose address is fixed.
        When it differs from the addresses the connections reached, the near cache is flushed
        and reconnected.
    """

    connect: Callable[[bool], Sequence[AbstractConnection]]
    masters: Callable[[], Addresses | None] | None = None


class NearCache:
    """A bounded, coherent in-process copy of recently read Redis values.

    What it holds per key is the caller's business (the backend keeps a ready-to-decode form);
    :attr:`hits` counts the reads it answered, under the lock it takes anyway.

    :param targets: the tracking connections to open (:class:`TrackingTargets`).
    :param prefix: the key prefix Redis broadcasts invalidations for.
    :param max_entries: LRU bound on the number of entries.
    :param ttl: seconds an entry may live here at most.
    :param max_bytes: LRU bound on the entries' sizes (as given to :meth:`finish_fill`); an
        entry larger than a tenth of it is not kept.
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
        self._connect = targets.connect
        self._masters = targets.masters
        self._prefix = prefix
        self.max_entries = max_entries
        self.ttl = ttl
        self.max_bytes = max_bytes
        self._clock = clock
        if targets.masters is not None:
            # Topologies also compare the masters, at most once a second. A single server's
            # reads keep the class's _sync: nothing but the poll.
            self._sync = self._sync_watched  # type: ignore[method-assign]
        self._init_state()
        reset_after_fork(self)

    def _init_state(self) -> None:
        self.hits = 0
        self._lock = threading.RLock()
        self._entries: OrderedDict[bytes, tuple[object, float, int]] = OrderedDict()
        self._bytes = 0
        self._filling: dict[bytes, object] = {}
        self._conns: list[AbstractConnection] | None = None
        self._by_fd: dict[int, AbstractConnection] = {}
        self._reached: Addresses = frozenset()
        self._poller: Any = None
        self._retry_at = 0.0
        self._check_at = 0.0
        self._refresh = False  # whether the next connection attempt refreshes the topology

    def _after_fork(self) -> None:
        # The parent's sockets must not be read by two processes; start over, empty.
        self._init_state()

    # -- reads and fills ------------------------------------------------------------------------

    def get(self, key: bytes) -> object | None:
        """What was stored for *key*, or None (also when coherence cannot be guaranteed)."""
        with self._lock:
            if not self._sync():
                return None
            found = self._entries.get(key)
            if found is None:
                return None
            data, expires, _ = found
            if self._clock() >= expires:
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return data

    def begin_fill(self, key: bytes) -> object | None:
        """Announce that *key* is about to be read from Redis; a ticket for :meth:`finish_fill`."""
        with self._lock:
            if self._conns is None:
                return None
            ticket = object()
            self._filling[key] = ticket
            return ticket

    def finish_fill(
        self, key: bytes, ticket: object, data: object, ttl_ms: int, size: int = 0
    ) -> None:
        """Store *data* (about *size* bytes) read from Redis unless an invalidation of *key*
        arrived meanwhile (or the masters changed: the value may come from a server no
        connection tracks)."""
        with self._lock:
            if self._masters is not None:
                self._check_masters()
            NearCache._sync(self)
            if self._filling.get(key) is not ticket:
                return
            del self._filling[key]
            self._drop(key)
            if ttl_ms == -2 or size * 10 > self.max_bytes:  # vanished meanwhile, or too large
                return
            life = self.ttl if ttl_ms < 0 else min(self.ttl, ttl_ms / 1000.0)
            self._entries[key] = (data, self._clock() + life, size)
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                self._bytes -= self._entries.popitem(last=False)[1][2]

    def abandon_fill(self, key: bytes, ticket: object) -> None:
        """Forget a fill that will not complete."""
        with self._lock:
            if self._filling.get(key) is ticket:
                del self._filling[key]

    def evict(self, *keys: bytes) -> None:
        """Drop *keys* here (this process's own writes, before Redis' push arrives)."""
        with self._lock:
            for key in keys:
                self._drop(key)
                self._filling.pop(key, None)

    def flush(self) -> None:
        """Drop everything."""
        with self._lock:
            self._clear()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes_held(self) -> int:
        """The sizes of the entries held, as given to :meth:`finish_fill`."""
        return self._bytes

    def _drop(self, key: bytes) -> None:
        found = self._entries.pop(key, None)
        if found is not None:
            self._bytes -= found[2]

    def _clear(self) -> None:
        self._entries.clear()
        self._filling.clear()
        self._bytes = 0

    @property
    def connected(self) -> bool:
        """Whether the tracking connections are up (the near cache serves only while they are)."""
        return self._conns is not None

    @property
    def tracked(self) -> Addresses:
        """The ``(host, port)`` of every server a tracking connection reaches (empty if down)."""
        return self._reached if self._conns is not None else frozenset()

    # -- the tracking connections --------------------------------------------------------------

    def _sync(self) -> bool:
        """Apply every invalidation received so far; False when coherence is not assured."""
        if self._conns is None and not self._reconnect():
            return False
        ready = self._poller.poll(0)
        if ready:
            self._drain(ready)
        return self._conns is not None

    def _sync_watched(self) -> bool:
        """:meth:`_sync`, after checking the masters if the last check is a second old."""
        now = self._clock()
        if now >= self._check_at:
            self._check_at = now + TOPOLOGY_CHECK_INTERVAL
            self._check_masters()
        return NearCache._sync(self)

    def _check_masters(self) -> None:
        """Flush and drop the connections if the client now knows other masters."""
        assert self._masters is not None
        if self._conns is None:
            return
        masters = self._masters()
        if masters is not None and masters != self._reached:
            _log.warning(
                "near-topology",
                f"near cache: the masters changed ({_show(self._reached)} -> {_show(masters)});"
                " flushed, reconnecting",
            )
            self._disconnect()
            self._retry_at = 0.0  # reconnect at once, to the new masters

    def _drain(self, ready: list[tuple[int, int]]) -> None:
        try:
            for fd, _ in ready:
                conn = cast(Any, self._by_fd[fd])
                while conn.can_read(timeout=0):
                    conn.read_response(push_request=True, timeout=0, disconnect_on_error=False)
        except (redis.RedisError, OSError) as exc:
            _log.warning("near-broken", f"near cache: tracking connection lost ({exc}); flushed")
            self._disconnect()

    def _on_invalidate(self, message: list[Any]) -> None:
        keys = message[1] if len(message) > 1 else None
        if keys is None:  # FLUSHALL / FLUSHDB, or tracking-redir-broken
            self._clear()
            return
        for key in keys:
            raw = key if isinstance(key, bytes) else str(key).encode()
            self._drop(raw)
            self._filling.pop(raw, None)

    def _reconnect(self) -> bool:
        now = time.monotonic()
        if now < self._retry_at:
            return False
        self._retry_at = now + 1.0
        self.flush()
        opened: list[Any] = []
        try:
            refresh, self._refresh = self._refresh, True
            made: Sequence[Any] = self._connect(refresh)
            if not made:
                raise redis.ConnectionError("no master is known")
            for conn in made:
                opened.append(conn)
                conn.connect()
                conn.send_command("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", self._prefix)
            for conn in opened:  # every server's answer, after every request was sent
                reply = conn.read_response()
                if reply not in (b"OK", "OK"):
                    raise redis.ResponseError(f"CLIENT TRACKING answered {reply!r}")
                conn._parser.set_invalidation_push_handler(self._on_invalidate)
        except (redis.RedisError, OSError) as exc:
            _close(opened)
            _log.warning("near-connect", f"near cache: cannot enable tracking ({exc}); bypassed")
            return False
        poller = _readiness_poller(conn._sock for conn in opened)
        self._by_fd = {conn._sock.fileno(): conn for conn in opened}
        self._reached = frozenset(
            (str(conn.host), int(conn.port)) for conn in opened if hasattr(conn, "host")
        )
        self._conns, self._poller = list(opened), poller
        self._check_at = self._clock() + TOPOLOGY_CHECK_INTERVAL
        return True

    def _disconnect(self) -> None:
        conns, self._conns = self._conns, None
        self._by_fd = {}
        if self._poller is not None and hasattr(self._poller, "close"):
            self._poller.close()
        self._poller = None
        self._clear()
        _close(conns or [])

    def close(self) -> None:
        """Close the tracking connections and drop everything."""
        with self._lock:
            self._disconnect()


def _readiness_poller(socks: Iterable[Any]) -> Any:
    """An epoll (Linux: its zero-timeout wait costs less than poll's) or poll object watching
    *socks* for data, errors and hang-ups; ``.poll(0)`` lists the ready ones."""
    if hasattr(select, "epoll"):
        poller: Any = select.epoll()
        flags = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP
    else:  # macOS and the BSDs
        poller = select.poll()
        flags = select.POLLIN | select.POLLERR | select.POLLHUP
    for sock in socks:
        poller.register(sock, flags)
    return poller


def _close(conns: Sequence[Any]) -> None:
    for conn in conns:
        try:
            conn.disconnect()
        except (redis.RedisError, OSError):
            pass


def _show(addresses: Addresses) -> str:
    return ",".join(f"{host}:{port}" for host, port in sorted(addresses)) or "none"
