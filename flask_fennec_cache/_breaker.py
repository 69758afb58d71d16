"""A circuit breaker: after repeated connection failures, stop calling Redis for a cool-down."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import redis

from ._forksafe import reset_after_fork

__all__ = ["CircuitBreaker", "NodeBreakers"]


class CircuitBreaker:
    """Closed, open for *cooldown* seconds after *threshold* consecutive failures, then one probe.

    While open, :meth:`allow` answers False at once, so no request waits on a dead server. After
    the cool-down one caller is let through as a probe: its success closes the breaker, its failure
    opens it for another cool-down. A probe that never reports back expires after a cool-down.

    A timeout (:meth:`timed_out`) opens it at once, whatever the threshold: a server that let one
    call wait a whole socket timeout would let the next ones wait too. Until it closes again, no
    caller is the probe: only the background prober (:mod:`._recovery`, through
    :meth:`allow_probe`) is, so after one timeout nothing in the process waits on that server.
    """

    def __init__(
        self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0
        self._probe_until = 0.0
        #: Opened by a timeout: only the background prober may probe.
        self._prober_only = False
        self._lock = threading.Lock()
        reset_after_fork(self)

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"`` (cool-down over, a probe may run)."""
        if not self._open_until:
            return "closed"
        return "open" if self._clock() < self._open_until else "half-open"

    def allow(self) -> bool:
        """May this call go to Redis?"""
        if not self._open_until:
            return True
        if self._prober_only:
            return False
        return self.allow_probe()

    def allow_probe(self) -> bool:
        """May the background prober probe now? (Once per cool-down while not closed.)"""
        if not self._open_until:
            return True
        now = self._clock()
        if now < self._open_until:
            return False
        with self._lock:
            if now < self._probe_until:
                return False
            self._probe_until = now + self.cooldown
            return True

    def success(self) -> None:
        """A call to Redis worked."""
        if self._failures or self._open_until:
            with self._lock:
                self._failures = 0
                self._open_until = self._probe_until = 0.0
                self._prober_only = False

    def failure(self) -> None:
        """A call to Redis failed to connect or timed out."""
        with self._lock:
            self._failures += 1
            if self._failures >= self.threshold or self._open_until:
                self._open_until = self._clock() + self.cooldown
                self._probe_until = 0.0

    def timed_out(self) -> None:
        """A call to Redis waited a whole timeout: open at once, for the prober to close."""
        with self._lock:
            self._failures = max(self._failures + 1, self.threshold)
            self._open_until = self._clock() + self.cooldown
            self._probe_until = 0.0
            self._prober_only = True

    def _after_fork(self) -> None:
        self._lock = threading.Lock()


class NodeBreakers:
    """A :class:`CircuitBreaker` per cluster node (by ``host:port``), made on first use.

    The gate of a cluster client (:class:`~._topology.NodeGate`): a dead or frozen master opens
    its own breaker only, so commands for the keys of the masters that answer still go out.
    *opened* is called whenever a node's breaker is not closed after a failure (to have it
    probed in the background).
    """

    def __init__(self, threshold: int, cooldown: float, opened: Callable[[], None]) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._opened = opened
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()
        reset_after_fork(self)

    def breaker(self, node: str) -> CircuitBreaker:
        """The breaker of *node*."""
        found = self._breakers.get(node)
        if found is None:
            with self._lock:
                found = self._breakers.setdefault(
                    node, CircuitBreaker(self.threshold, self.cooldown)
                )
        return found

    def before(self, node: str) -> bool:
        """May a command go to *node* now?"""
        return self.breaker(node).allow()

    def after(self, node: str, error: Exception | None) -> None:
        """What a command sent to *node* did: None (answered) or its connection error."""
        breaker = self.breaker(node)
        if error is None:
            breaker.success()
            return
        if isinstance(error, redis.TimeoutError):
            breaker.timed_out()
        else:
            breaker.failure()
        if breaker.state != "closed":
            self._opened()

    def not_closed(self) -> list[str]:
        """The nodes whose breaker is open or half-open."""
        return [node for node, b in list(self._breakers.items()) if b.state != "closed"]

    def states(self) -> dict[str, str]:
        """Each known node's breaker state."""
        return {node: b.state for node, b in list(self._breakers.items())}

    def forget(self, node: str) -> None:
        """Drop the breaker of a node that left the cluster's slot map."""
        with self._lock:
            self._breakers.pop(node, None)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
