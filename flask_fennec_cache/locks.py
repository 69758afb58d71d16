"""Locks for single-flight loading: a Redis lock across processes, a coalescer within one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._forksafe import reset_after_fork
from .serializers import new_version

if TYPE_CHECKING:
    from .backend import RedisCache

__all__ = ["RedisLock", "SingleFlight"]

T = TypeVar("T")

FIRST_POLL = 0.002
MAX_POLL = 0.025


class RedisLock:
    """A lock in Redis: ``SET NX PX`` with a random token, released by compare-and-delete.

    The lock expires after *timeout* seconds, so a holder that dies cannot block others for
    longer. :meth:`acquire` answers True (held), False (someone else holds it after *wait*
    seconds) or None (Redis could not be reached: the caller decides whether to go on).
    """

    def __init__(
        self,
        backend: RedisCache,
        name: str,
        timeout: float,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.name = name
        self.timeout = timeout
        self.token = new_version() + new_version()
        self._sleep = sleep
        self._clock = clock

    def acquire(self, wait: float = 0.0) -> bool | None:
        """Try to take the lock, polling for up to *wait* seconds."""
        deadline = self._clock() + wait
        delay = FIRST_POLL
        while True:
            taken = self.backend._try_lock(self.name, self.token, self.timeout)
            if taken is not False:
                return taken
            if self._clock() + delay > deadline:
                return False
            self._sleep(delay)
            delay = min(delay * 1.5, MAX_POLL)

    def release(self) -> bool:
        """Release the lock if this holder still owns it; True when it did."""
        return self.backend._compare_and_set(self.name, self.token.encode(), None, None)


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
