"""A lock in Redis across processes and hosts (write-through writers, stale refreshes)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from ._coordination import Coordination
from ._flight import FIRST_POLL, LEASE_SLICE, MAX_POLL, LeaseKeeper, SingleFlight
from .serializers import new_version

# SingleFlight and LeaseKeeper live in ._flight; they are re-exported here for compatibility.
__all__ = ["LEASE_SLICE", "HasCoordination", "LeaseKeeper", "RedisLock", "SingleFlight"]


class HasCoordination(Protocol):
    """A cache whose coordination part takes locks (a :class:`~flask_fennec_cache.RedisCache`)."""

    @property
    def coordination(self) -> Coordination: ...


class RedisLock:
    """A lock in Redis: ``SET NX PX`` with a random token, released by compare-and-delete.

    The lock expires after *timeout* seconds, so a holder that dies cannot block others for
    longer. :meth:`acquire` answers True (held), False (someone else holds it after *wait*
    seconds) or None (Redis could not be reached: the caller decides whether to go on).
    """

    def __init__(
        self,
        backend: HasCoordination,
        name: str,
        timeout: float,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.coordination = backend.coordination
        self.name = name
        self.timeout = timeout
        self.token = new_version() + new_version()
        self._held: object = None
        self._sleep = sleep
        self._clock = clock

    def acquire(self, wait: float = 0.0) -> bool | None:
        """Try to take the lock, polling for up to *wait* seconds."""
        deadline = self._clock() + wait
        delay = FIRST_POLL
        while True:
            taken = self.coordination.try_lock(
                self.name, self.token, min(self.timeout, LEASE_SLICE)
            )
            if taken:
                self._held = self.coordination.keeper.hold(
                    self.name, self.token.encode(), self.timeout
                )
            if taken is not False:
                return taken
            if self._clock() + delay > deadline:
                return False
            self._sleep(delay)
            delay = min(delay * 1.5, MAX_POLL)

    def release(self) -> bool:
        """Release the lock if this holder still owns it; True when it did."""
        self.coordination.keeper.drop(self._held)
        return self.coordination.compare_and_set(self.name, self.token.encode(), None, None)
