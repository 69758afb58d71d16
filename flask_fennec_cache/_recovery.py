"""Recovery after an outage: one background thread per process probes Redis while a cache
needs it, so no request has to be the probe of a server that may still be frozen."""

from __future__ import annotations

import threading
import time
import weakref
from typing import Final, Protocol

from ._forksafe import reset_after_fork

__all__ = ["PROBE_INTERVAL", "Probed", "Prober", "prober"]

#: Seconds between two rounds of the prober (each target decides whether a probe is due: a
#: breaker lets one through per cool-down).
PROBE_INTERVAL: Final = 0.1


class Probed(Protocol):
    """Something the prober looks after until it has recovered."""

    def recovered(self) -> bool:
        """Is nothing left to do? (Cheap: read without a round trip.)"""
        ...

    def probe(self) -> None:
        """Probe once if a probe is due (a round trip, bounded by the socket timeout)."""
        ...


class Prober:
    """A daemon thread that calls :meth:`Probed.probe` on each watched target every
    :data:`PROBE_INTERVAL` seconds until it has recovered; the thread ends when no target is
    left and starts again at the next :meth:`watch` (and in a forked child that has some)."""

    def __init__(self) -> None:
        self._targets: weakref.WeakSet[Probed] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        reset_after_fork(self)

    def watch(self, target: Probed) -> None:
        """Probe *target* in the background until it has recovered (idempotent)."""
        with self._lock:
            self._targets.add(target)
            self._start()

    def watching(self, target: Probed) -> bool:
        """Is *target* still waiting for its recovery?"""
        return target in self._targets

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="fennec-cache-prober", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        try:
            self._rounds()
        finally:
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None

    def _rounds(self) -> None:
        while True:
            with self._lock:
                # Under the lock: a target watched again after its check is kept.
                for target in [t for t in self._targets if t.recovered()]:
                    self._targets.discard(target)
                targets = list(self._targets)
                if not targets:
                    return
            for target in targets:
                if not target.recovered():
                    target.probe()
            del targets
            time.sleep(PROBE_INTERVAL)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._thread = None
        if self._targets:
            self._start()


#: The process's prober.
prober: Final = Prober()
