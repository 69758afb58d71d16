"""Coordination within one process: coalescing concurrent loads, keeping leases alive."""

from __future__ import annotations

import atexit
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ._forksafe import reset_after_fork
from ._ratelog import RateLimitedLog
from .errors import ConfigurationError

__all__ = [
    "FIRST_POLL",
    "LEASE_SLICE",
    "MAX_POLL",
    "REFRESH_POOL",
    "LeaseKeeper",
    "RefreshPool",
    "SingleFlight",
]

T = TypeVar("T")
_log = RateLimitedLog()

FIRST_POLL = 0.002
MAX_POLL = 0.025
#: Seconds a lease or lock lives in Redis between renewals while its holder works.
LEASE_SLICE = 2.0


class _Flight(Generic[T]):
    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class SingleFlight:
    """Coalesce concurrent calls for one key in this process: one runs, the others share.

    Followers wait at most *timeout* seconds for the leader, then run the call themselves.
    A leader's exception is raised in its followers too.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight[Any]] = {}
        reset_after_fork(self)

    def run(self, key: str, call: Callable[[], T], timeout: float) -> tuple[T, bool]:
        """``(result, led)``: *led* is True when this thread ran *call* itself."""
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            if flight.done.wait(timeout):
                if flight.error is not None:
                    raise flight.error
                return flight.value, False
            return call(), True
        try:
            flight.value = call()
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                self._flights.pop(key, None)
            flight.done.set()
        return flight.value, True

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._flights = {}


class LeaseKeeper:
    """Keeps leases and locks alive in short slices while their holders work.

    A lease or lock is written with a life of :data:`LEASE_SLICE` seconds and renewed (only if
    it still holds the holder's token) every third of that, for at most the holder's own
    timeout. A holder that dies, or that cannot release after a failover, therefore blocks
    the others for one slice rather than for its whole timeout. One daemon thread per process
    and cache, started on first use.
    """

    def __init__(self, renew: Callable[[str, bytes, int], object]) -> None:
        self._renew = renew
        self._init_state()
        reset_after_fork(self)

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[object, tuple[str, bytes, float]] = {}
        self._thread: threading.Thread | None = None

    def _after_fork(self) -> None:
        self._init_state()  # the parent's holders are not this process's

    def hold(self, name: str, expected: bytes, timeout: float) -> object:
        """Renew *name* while it starts with *expected*, for up to *timeout* seconds.

        Returns a handle for :meth:`drop` (None when the slice alone covers the timeout).
        """
        if timeout <= LEASE_SLICE:
            return None
        handle = object()
        with self._lock:
            self._held[handle] = (name, expected, time.monotonic() + timeout)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=_keep_alive,
                    args=(weakref.ref(self),),
                    name="fennec-cache-leases",
                    daemon=True,
                )
                self._thread.start()
        return handle

    def close(self) -> None:
        """Stop renewing everything (the cache is closed: it must not reconnect by itself)."""
        with self._lock:
            self._held.clear()

    def drop(self, handle: object) -> None:
        """Stop renewing (the holder is done)."""
        if handle is not None:
            with self._lock:
                self._held.pop(handle, None)

    def renew_all(self) -> None:
        """Extend every lease still within its holder's timeout by one slice."""
        now = time.monotonic()
        with self._lock:
            held = [(n, e, until) for n, e, until in self._held.values() if until > now]
        for name, expected, until in held:
            self._renew(name, expected, int(min(LEASE_SLICE, until - now) * 1000) + 1)


def _keep_alive(ref: weakref.ref[LeaseKeeper]) -> None:
    while True:
        time.sleep(LEASE_SLICE / 3)
        keeper = ref()
        if keeper is None:
            return
        keeper.renew_all()
        del keeper


class RefreshPool:
    """A small bounded pool of daemon threads that refresh entries in the background.

    Threads start with the first refresh handed over (in each process: a forked child starts
    empty), at most *size* of them, with at most ``64 * size`` refreshes queued; a refresh that
    does not fit is not queued (its entry is refreshed by a later reader). At interpreter exit
    the queued refreshes are run, for at most :data:`DRAIN_SECONDS`. The process has one,
    :data:`REFRESH_POOL`, sized by ``FENNEC_CACHE_REFRESH_WORKERS``.
    """

    #: Seconds the exit handler waits for the queued refreshes.
    DRAIN_SECONDS = 5.0

    def __init__(self, size: int) -> None:
        self.size = _pool_size(size)
        self._init_state()
        _pools.add(self)
        reset_after_fork(self)

    def resize(self, size: int) -> None:
        """Run at most *size* threads from now on (threads already started stay)."""
        self.size = _pool_size(size)
        self._queue.maxsize = 64 * self.size

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.Queue[Callable[[], object] | None] = queue.Queue(64 * self.size)
        self._threads: list[threading.Thread] = []

    def _after_fork(self) -> None:
        self._init_state()  # the parent's threads and queue are not this process's

    def submit(self, work: Callable[[], object]) -> bool:
        """Queue *work*; False when the queue is full. *work* handles its own exceptions (one
        that escapes is logged, and the thread goes on with the next)."""
        try:
            self._queue.put_nowait(work)
        except queue.Full:
            return False
        if len(self._threads) < self.size:
            with self._lock:
                if len(self._threads) < self.size:
                    thread = threading.Thread(
                        target=_work_on,
                        args=(self._queue,),
                        daemon=True,
                        name=f"fennec-cache-refresh-{len(self._threads) + 1}",
                    )
                    thread.start()
                    self._threads.append(thread)
        return True

    def drain(self, timeout: float) -> None:
        """Run what is queued, then stop the threads; wait at most *timeout* seconds."""
        deadline = time.monotonic() + timeout
        for _ in self._threads:
            try:
                self._queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                break
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []


def _pool_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigurationError(
            f"FENNEC_CACHE_REFRESH_WORKERS must be an integer >= 1, got {size!r}"
        )
    return size


def _work_on(work_queue: queue.Queue[Callable[[], object] | None]) -> None:
    while True:
        work = work_queue.get()
        if work is None:
            return
        try:
            work()
        except Exception as exc:  # a task's own failure must not cost the pool its thread
            _log.error(
                "refresh-pool",
                f"a background task failed and was dropped: {type(exc).__name__}: {exc}",
            )


_pools: weakref.WeakSet[RefreshPool] = weakref.WeakSet()


@atexit.register
def _drain_pools() -> None:
    for pool in list(_pools):
        pool.drain(RefreshPool.DRAIN_SECONDS)


#: This process's refresh pool (see :class:`RefreshPool`).
REFRESH_POOL = RefreshPool(2)
