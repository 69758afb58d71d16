"""``GET`` on a connection each thread keeps between its reads, out of the pool.

A cache hit is one ``GET``. Taking a connection from redis-py's pool and giving it back costs
about as much as a tenth of a loopback round trip (a lock, a ``poll`` to check that the
connection holds no data, four observability counters and an event, each way), on every hit.
A thread that reads again and again keeps its connection instead: the pool still created it
and still closes it (``close()`` of the cache), but between two reads of that thread it stays
out of the pool, unchecked, since only this thread ever uses it and a read that did not end
cleanly closes it.

Bounded: at most :func:`pin_budget` threads of a process hold one (half the pool, so that
pipelines and writes always find a connection); past it a read takes a connection from the pool
for its one command, as redis-py does. A thread that ends gives its connection back to the pool.
In a forked child nothing is inherited: the parent's connections are never used there.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

import redis

from ._forksafe import reset_after_fork

__all__ = ["PinnedGet", "pin_budget"]


def pin_budget(pool: redis.ConnectionPool) -> int:
    """How many threads may each keep a connection of *pool*: half of it (at least one)."""
    return max(1, int(pool.max_connections) // 2)


class _Pin:
    """One thread's connection; given back to the pool when the thread (its holder) ends."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: Any) -> None:
        self.conn = conn


class PinnedGet:
    """``GET name`` (bytes or None) for a plain connection pool, on the calling thread's own
    connection; redis-py's errors propagate as they are (the guard handles them).

    The behaviour that matters of redis-py's client is kept: a connection found closed by the
    server gets one reconnect (as the client's retry policy would), a timeout is not retried,
    and a connection left in an unknown state (any other failure) is closed before its next use.
    """

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self._pool = pool
        self._lock = threading.Lock()
        self._local = threading.local()
        self._free = pin_budget(pool)
        reset_after_fork(self)

    def __call__(self, name: str) -> Any:
        pin: _Pin | None = getattr(self._local, "pin", None)
        if pin is None:
            pin = self._pin()
            if pin is None:
                return self._pooled(name)
        return _get(pin.conn, name)

    @property
    def pinned(self) -> int:
        """Threads of this process holding a connection now."""
        return pin_budget(self._pool) - self._free

    def held(self) -> Any:
        """The connection the calling thread holds, or None."""
        pin: _Pin | None = getattr(self._local, "pin", None)
        return None if pin is None else pin.conn

    def _pin(self) -> _Pin | None:
        with self._lock:
            if self._free <= 0:
                return None
            self._free -= 1
        try:
            conn = self._pool.get_connection()
        except BaseException:
            self._unpin(None, os.getpid())
            raise
        pin = _Pin(conn)
        weakref.finalize(pin, self._unpin, conn, os.getpid()).atexit = False
        self._local.pin = pin
        return pin

    def _unpin(self, conn: Any, pid: int) -> None:
        """A holder thread ended (or its connection could not be had): one more may pin."""
        if pid != os.getpid():
            return  # a pin of the parent process, dropped in a forked child
        with self._lock:
            self._free += 1
        if conn is not None:
            self._pool.release(conn)

    def _pooled(self, name: str) -> Any:
        conn = self._pool.get_connection()
        try:
            return _get(conn, name)
        finally:
            self._pool.release(conn)

    def _after_fork(self) -> None:
        # The parent's connections (and its threads' pins) are not this process's: forget them
        # without touching them (their finalizers must not give them to this pool either).
        self._lock = threading.Lock()
        self._free = pin_budget(self._pool)
        self._local = threading.local()


def _get(conn: Any, name: str) -> Any:
    try:
        try:
            conn.send_command("GET", name)
            return conn.read_response()
        except redis.ConnectionError:
            conn.disconnect()  # closed by the server: the retry policy's one reconnect
            conn.send_command("GET", name)
            return conn.read_response()
    except redis.ResponseError:
        raise  # an error reply: the connection is fine
    except BaseException:
        conn.disconnect()
        raise
