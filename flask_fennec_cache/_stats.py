"""Counters kept per process and flushed to shared counters in Redis off the request path."""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Callable, Mapping

from ._forksafe import reset_after_fork

__all__ = ["FIELDS", "StatsBuffer", "summarize"]

FIELDS = (
    "hits", "misses", "sets", "deletes", "errors", "stale_hits", "lock_waits", "near_hits"
)

Flush = Callable[[Mapping[str, int]], bool]


class StatsBuffer:
    """Counts in memory; a daemon thread hands the counts to *flush* every *interval* seconds.

    *flush* returns True when the counts reached the shared store; otherwise they are kept and
    sent with the next flush. The thread starts with the first count in each process (so a
    forked gunicorn worker starts its own) and pending counts are flushed at interpreter exit.
    """

    def __init__(self, flush: Flush, interval: float) -> None:
        self._flush = flush
        self._interval = interval
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        _live.add(self)
        reset_after_fork(self)

    def add(self, field: str, amount: int = 1) -> None:
        """Count *amount* more of *field*; no I/O."""
        with self._lock:
            self._pending[field] = self._pending.get(field, 0) + amount
        if self._thread is None:
            self._start()

    def pending(self) -> dict[str, int]:
        """Counts not yet flushed."""
        with self._lock:
            return dict(self._pending)

    def take(self) -> dict[str, int]:
        """Remove and return the pending counts (give them back with :meth:`restore`)."""
        with self._lock:
            taken, self._pending = self._pending, {}
        return taken

    def restore(self, counts: Mapping[str, int]) -> None:
        """Put counts back after a flush that did not reach the store."""
        with self._lock:
            for field, amount in counts.items():
                self._pending[field] = self._pending.get(field, 0) + amount

    def discard(self) -> None:
        """Forget the pending counts (after a reset of the shared counters)."""
        with self._lock:
            self._pending = {}

    def flush(self) -> bool:
        """Send the pending counts now; True when nothing is left pending."""
        counts = self.take()
        if not counts:
            return True
        if self._flush(counts):
            return True
        self.restore(counts)
        return False

    def close(self) -> None:
        """Stop the flusher thread after a last flush."""
        self._stopped.set()
        self.flush()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            ref = weakref.ref(self)
            self._thread = threading.Thread(
                target=_flush_loop, args=(ref, self._stopped, self._interval),
                name="fennec-cache-stats", daemon=True,
            )
        self._thread.start()

    def _after_fork(self) -> None:
        # The parent's pending counts are the parent's to flush; its thread does not exist here.
        self._lock = threading.Lock()
        self._pending = {}
        self._thread = None
        self._stopped = threading.Event()


def _flush_loop(ref: weakref.ref[StatsBuffer], stopped: threading.Event, interval: float) -> None:
    while not stopped.wait(interval):
        buffer = ref()
        if buffer is None:
            return
        buffer.flush()
        del buffer


def summarize(counts: Mapping[str, int]) -> dict[str, int | float]:
    """The public statistics shape: the counters, ``total_requests`` and ``hit_rate`` (percent)."""
    stats: dict[str, int | float] = {field: int(counts.get(field, 0)) for field in FIELDS}
    total = int(stats["hits"]) + int(stats["misses"])
    stats["total_requests"] = total
    stats["hit_rate"] = round(100.0 * int(stats["hits"]) / total, 2) if total else 0.0
    return stats


_live: weakref.WeakSet[StatsBuffer] = weakref.WeakSet()


@atexit.register
def _flush_all_at_exit() -> None:
    for buffer in list(_live):
        buffer.flush()
