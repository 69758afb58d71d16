"""Run commands on Redis under the circuit breaker: fail open (None) or raise CacheUnavailable."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TypeVar

import redis
from redis.exceptions import RedisError

from ._breaker import CircuitBreaker, NodeBreakers
from ._ratelog import RateLimitedLog
from ._recovery import PendingInvalidations, prober
from ._stats import StatsBuffer
from ._topology import ClusterClient, NodeError, NodeSkipped
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

    On a cluster, each master has its own breaker (:attr:`nodes`, the cluster client's gate): a
    command for the keys of one node is skipped only while that node's breaker is open, and a
    node's failure never opens :attr:`breaker`, which stays for what concerns the whole cluster
    (no slot map, no seed node).

    The invalidations Redis did not get are kept in :attr:`pending`; while any is, a command
    first applies them (or is skipped when that cannot be done now), so this process never
    serves an entry it was told to invalidate.
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
        #: Invalidations Redis did not get, applied before anything else is read.
        self.pending = PendingInvalidations(lambda: self.breaker.state == "closed")
        #: The per-node breakers of a cluster client (shared by the caches on that client).
        self.nodes: NodeBreakers | None = None
        if isinstance(client, ClusterClient):
            if not isinstance(client.gate, NodeBreakers):
                client.gate = NodeBreakers(
                    breaker.threshold, breaker.cooldown, lambda: prober.watch(self)
                )
            self.nodes = client.gate

    def run(
        self,
        op: str,
        command: Callable[[redis.Redis], T],
        *,
        timed: bool = True,
        allowed: bool = False,
        keys: Collection[str] | None = None,
    ) -> T | None:
        """``command(client)``, or None when Redis failed or the breaker is open (fail-open).

        :param timed: count the call in the round-trip histogram (walks of many round trips,
            such as a SCAN, are not one round trip).
        :param allowed: the caller already asked the breaker (:meth:`allow`) for this call.
        :param keys: the entries (keys relative to the prefix) the command reads or writes, if
            known (see :meth:`allow`).
        """
        if not allowed and not self.allow(op, keys):
            return None
        started = self.stats.timer() if timed else 0.0
        try:
            result = command(self.client)
        except NodeSkipped:
            self.skipped(op)
            return None
        except RedisError as exc:
            self.failed(exc, op)
            return None
        finally:
            self.stats.observe_since(started)
        self.breaker.success()
        return result

    def allow(self, op: str, keys: Collection[str] | None = None) -> bool:
        """May a call go to Redis now? When not, it was skipped (raises when failing closed).

        While invalidations are kept that cannot be applied now (another thread is applying
        them, or the cluster node they concern is down), a call whose *keys* they do not
        concern goes ahead; one that touches them, or whose keys are not known (None), waits
        for them: it is skipped.
        """
        pending = self.pending
        if pending.waiting and pending.applying_here():
            return True  # a command of the settle below: its caller already asked the breaker
        if not self.breaker.allow():
            self.skipped(op)
            return False
        if not pending.waiting or pending.settle():
            return True
        if keys is not None and not pending.covers(keys):
            return True
        self.skipped(op, "invalidations sent during an outage are not applied yet")
        return False

    def uncovered(self, op: str, keys: list[str]) -> list[str]:
        """*keys* but those that kept invalidations, which cannot be applied now, concern
        (:meth:`allow`): reads of those are misses for now (failing closed, they raise)."""
        pending = self.pending
        if not pending.waiting or self.breaker.state != "closed" or pending.settle():
            return keys  # nothing kept, or applied now; with the breaker open, all are skipped
        left = [key for key in keys if not pending.covers((key,))]
        if len(left) < len(keys):
            self.skipped(op, "invalidations sent during an outage are not applied yet")
        return left

    def quietly(self, command: Callable[[redis.Redis], T], *, informs: bool = True) -> T | None:
        """``command(client)`` for a background thread: no logging, no counting, no raising
        (the breaker still learns, unless not *informs*); None when Redis failed or the breaker
        is open."""
        if not (self.breaker.allow() if informs else self.breaker.state == "closed"):
            return None
        try:
            result = command(self.client)
        except RedisError as exc:
            if informs and isinstance(exc, BREAKER_ERRORS):
                self._lost(exc)
            return None
        if informs:
            self.breaker.success()
        return result

    def recovered(self) -> bool:
        """Are the breakers closed? (For the background prober.)"""
        return self.breaker.state == "closed" and not (self.nodes and self.nodes.not_closed())

    def probe(self) -> None:
        """``PING`` where a breaker lets a probe through: the background prober's call."""
        if self.breaker.state != "closed" and self.breaker.allow_probe():
            self._ping(self.breaker, self.client.ping)
        if self.nodes is None or not isinstance(self.client, ClusterClient):
            return
        for node in self.nodes.not_closed():
            breaker = self.nodes.breaker(node)
            if (
                breaker.allow_probe()
                and self._ping(breaker, lambda node=node: self.client.ping_node(node)) is False
            ):
                self.nodes.forget(node)  # no longer in the slot map (a failover replaced it)

    @staticmethod
    def _ping(breaker: CircuitBreaker, ping: Callable[[], bool]) -> bool | None:
        """The answer of *ping* (None when it failed), told to *breaker*."""
        try:
            answer = bool(ping())
        except NodeError:
            breaker.failure()
            return None
        except BREAKER_ERRORS:
            breaker.failure()  # open again for another cool-down
            return None
        except RedisError:
            answer = True  # a refusal (e.g. NOAUTH) comes from a server that answers
        breaker.success()
        return answer

    def close(self) -> None:
        """The cache is closed: no more background probes or applying of what is kept (a
        closed cache must not reconnect by itself)."""
        prober.forget(self)
        prober.forget(self.pending)

    def _lost(self, exc: RedisError) -> None:
        """The server may be gone: tell the breaker, and have it probed once it opened."""
        if isinstance(exc, NodeError):
            return  # one cluster node: its own breaker was told (and has it probed)
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

    def skipped(self, op: str, why: str = "the circuit breaker is open after failures") -> None:
        """A command was not sent (the breaker is open); raises when failing closed."""
        if not self.fail_open:
            raise CacheUnavailable(f"{op} skipped: {why}")
