"""Run commands on Redis under the circuit breaker: fail open (None) or raise CacheUnavailable."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import redis
from redis.exceptions import RedisError

from ._breaker import CircuitBreaker
from ._ratelog import RateLimitedLog
from ._recovery import prober
from ._stats import StatsBuffer
from .errors import CacheUnavailable

__all__ = ["Guard"]

T = TypeVar("T")

#: Failures that say the server may be gone (others are refusals by a server that answered).
BREAKER_ERRORS = (redis.ConnectionError, redis.TimeoutError)


class Guard:
    """The one place that sends commands to Redis and decides what a failure means.

    A command runs only while the circuit breaker allows it; its round trip is timed into the
    latency histogram; a :class:`~redis.exceptions.RedisError` is counted, tells the breaker,
    and is logged (one line per cause per 10 s) — then the caller gets None (fail-open) or
    :class:`~flask_fennec_cache.CacheUnavailable` (fail-closed). Anything else a command raises
    (a bug) propagates unchanged.

    A timeout opens the breaker at once (see :meth:`~._breaker.CircuitBreaker.timed_out`): the
    rest of the request, and of the process, does not wait on that server again until the
    background prober (:mod:`._recovery`) finds that it answers.
    """

    def __init__(
        self,
        client: redis.Redis,
        breaker: CircuitBreaker,
        stats: StatsBuffer,
        log: RateLimitedLog,
        fail_open: bool,
    ) -> None:
        self.client = client
        self.breaker = breaker
        self.stats = stats
        self.log = log
        self.fail_open = fail_open

    def run(
        self, op: str, command: Callable[[redis.Redis], T], *, timed: bool = True,
        allowed: bool = False,
    ) -> T | None:
        """``command(client)``, or None when Redis failed or the breaker is open (fail-open).

        :param timed: count the call in the round-trip histogram (walks of many round trips,
            such as a SCAN, are not one round trip).
        :param allowed: the caller already asked the breaker (:meth:`allow`) for this call.
        """
        if not allowed and not self.allow(op):
            return None
        started = self.stats.timer() if timed else 0.0
        try:
            result = command(self.client)
        except RedisError as exc:
            self.failed(exc, op)
            return None
        finally:
            self.stats.observe_since(started)
        self.breaker.success()
        return result

    def allow(self, op: str) -> bool:
        """May a call go to Redis now? When not, it was skipped (raises when failing closed)."""
        if self.breaker.allow():
            return True
        self.skipped(op)
        return False

    def quietly(self, command: Callable[[redis.Redis], T]) -> T | None:
        """``command(client)`` for a background thread: no logging, no counting, no raising
        (the breaker still learns); None when Redis failed or the breaker is open."""
        if not self.breaker.allow():
            return None
        try:
            result = command(self.client)
        except RedisError as exc:
            if isinstance(exc, BREAKER_ERRORS):
                self._lost(exc)
            return None
        self.breaker.success()
        return result

    def recovered(self) -> bool:
        """Is the breaker closed? (For the background prober.)"""
        return self.breaker.state == "closed"

    def probe(self) -> None:
        """``PING`` when the breaker lets a probe through: the background prober's call."""
        if not self.breaker.allow_probe():
            return
        try:
            self.client.ping()
        except BREAKER_ERRORS:
            self.breaker.failure()  # open again for another cool-down
            return
        except RedisError:
            pass  # a refusal (e.g. NOAUTH) comes from a server that answers
        self.breaker.success()

    def _lost(self, exc: RedisError) -> None:
        """The server may be gone: tell the breaker, and have it probed once it opened."""
        if isinstance(exc, redis.TimeoutError):
            self.breaker.timed_out()
        else:
            self.breaker.failure()
        if self.breaker.state != "closed":
            prober.watch(self)

    def failed(self, exc: RedisError, op: str) -> None:
        """Count and report a failed command; raises CacheUnavailable when failing closed."""
        self.stats.add("errors")
        if isinstance(exc, BREAKER_ERRORS):
            self._lost(exc)
        else:
            self.breaker.success()  # the server answered: it is up, the command was refused
        if not self.fail_open:
            raise CacheUnavailable(f"{op} failed: {type(exc).__name__}: {exc}") from exc
        self.log.warning(
            f"error:{op}:{type(exc).__name__}",
            f"cache {op} failed, continuing without the cache: {type(exc).__name__}: {exc}",
        )

    def skipped(self, op: str) -> None:
        """A command was not sent because the breaker is open; raises when failing closed."""
        if not self.fail_open:
            raise CacheUnavailable(f"{op} skipped: the circuit breaker is open after failures")
