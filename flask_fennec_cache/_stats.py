"""Counters kept per process and flushed to shared counters in Redis off the request path."""

from __future__ import annotations

import atexit
import itertools
import math
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ._forksafe import reset_after_fork

__all__ = [
    "FIELDS",
    "LATENCY_BUCKETS",
    "Histogram",
    "StatsBuffer",
    "latency_histogram",
    "summarize",
]

FIELDS = (
    "hits",
    "misses",
    "sets",
    "deletes",
    "errors",
    "stale_hits",
    "lock_waits",
    "near_hits",
    "fail_safe_hits",
)

Flush = Callable[[Mapping[str, int]], bool]

#: Upper bounds, in seconds, of the Redis round-trip latency histogram (``+Inf`` is implied).
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
# Shared-hash fields: one (non-cumulative) count per bucket, named by its bound, and the sum in
# whole microseconds (HINCRBY adds integers only).
_BUCKET_FIELDS = tuple(f"latency_le:{bound!r}" for bound in LATENCY_BUCKETS) + ("latency_le:+Inf",)
_SUM_FIELD = "latency_sum_us"
SAMPLE_EVERY = 8


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
        self._tick = 0
        self._tallied: dict[str, int] = {}
        self._hits = itertools.count()
        self._tallies: list[tuple[str, Callable[[], int]]] = []
        _live.add(self)
        reset_after_fork(self)

    def add(self, field: str, amount: int = 1) -> None:
        """Count *amount* more of *field*; no I/O."""
        with self._lock:
            self._pending[field] = self._pending.get(field, 0) + amount
        if self._thread is None:
            self._start()

    def hit(self) -> None:
        """Count one hit, without a lock: the hottest counter (``next`` on an
        ``itertools.count`` is atomic)."""
        next(self._hits)
        if self._thread is None:
            self._start()

    def count_from(self, field: str, total: Callable[[], int]) -> None:
        """Also count *field* from *total*, a running count kept elsewhere (a near cache counts
        its hits under its own lock): its growth is taken in with every read of the counts."""
        self._tallies.append((field, total))

    def _take_tallies(self) -> None:
        # Called with self._lock held.
        totals = [("hits", _count_value(self._hits))]
        totals += [(field, total()) for field, total in self._tallies]
        for field, now in totals:
            last = self._tallied.get(field, 0)
            grown = now - last if now >= last else now  # a source that restarted from zero
            if grown:
                self._tallied[field] = now
                self._pending[field] = self._pending.get(field, 0) + grown

    def timer(self) -> float:
        """A start time if this operation's latency is sampled (one in ``SAMPLE_EVERY``), else 0.

        Sampling keeps two clock reads and a lock off most cache hits; the histogram's
        quantiles are unaffected and its counts are scaled back up.
        """
        self._tick += 1
        return 0.0 if self._tick % SAMPLE_EVERY else time.perf_counter()

    def observe_since(self, started: float) -> None:
        """Record the round trip that began at *started* (a :meth:`timer` reading), if sampled."""
        if started:
            self.observe(time.perf_counter() - started, SAMPLE_EVERY)

    def observe(self, seconds: float, weight: int = 1) -> None:
        """Record *weight* Redis round trips of *seconds* in the latency histogram; no I/O."""
        field = _BUCKET_FIELDS[bisect_left(LATENCY_BUCKETS, seconds)]
        micros = int(seconds * 1_000_000) * weight
        with self._lock:
            pending = self._pending
            pending[field] = pending.get(field, 0) + weight
            pending[_SUM_FIELD] = pending.get(_SUM_FIELD, 0) + micros
        if self._thread is None:
            self._start()

    def pending(self) -> dict[str, int]:
        """Counts not yet flushed."""
        with self._lock:
            self._take_tallies()
            return dict(self._pending)

    def take(self) -> dict[str, int]:
        """Remove and return the pending counts (give them back with :meth:`restore`)."""
        with self._lock:
            self._take_tallies()
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
            self._take_tallies()
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
                target=_flush_loop,
                args=(ref, self._stopped, self._interval),
                name="fennec-cache-stats",
                daemon=True,
            )
        self._thread.start()

    def _after_fork(self) -> None:
        # The parent's pending counts are the parent's to flush; its thread does not exist here.
        self._lock = threading.Lock()
        self._pending = {}
        self._tallied = {}
        self._hits = itertools.count()
        self._thread = None
        self._stopped = threading.Event()


def _flush_loop(ref: weakref.ref[StatsBuffer], stopped: threading.Event, interval: float) -> None:
    while not stopped.wait(interval):
        buffer = ref()
        if buffer is None:
            return
        buffer.flush()
        del buffer


def _count_value(counter: itertools.count[int]) -> int:
    """The next number *counter* would give, read without taking it (its repr is
    ``count(N)``)."""
    return int(repr(counter)[6:-1])


def summarize(counts: Mapping[str, int]) -> dict[str, int | float]:
    """The public statistics shape: the counters, ``total_requests`` and ``hit_rate`` (percent)."""
    stats: dict[str, int | float] = {field: int(counts.get(field, 0)) for field in FIELDS}
    total = int(stats["hits"]) + int(stats["misses"])
    stats["total_requests"] = total
    stats["hit_rate"] = round(100.0 * int(stats["hits"]) / total, 2) if total else 0.0
    return stats


@dataclass(frozen=True)
class Histogram:
    """A latency histogram: cumulative counts per upper bound (``math.inf`` last), sum, count."""

    buckets: tuple[tuple[float, int], ...]
    sum: float
    count: int

    def quantile(self, q: float) -> float | None:
        """Estimate the *q*-quantile (0..1) in seconds, interpolating linearly inside a bucket
        as Prometheus' ``histogram_quantile`` does; None without observations."""
        if not self.count:
            return None
        rank = q * self.count
        lower, below = 0.0, 0
        for bound, cumulative in self.buckets:
            if cumulative >= rank and cumulative > below:
                if math.isinf(bound):
                    return lower  # past the last finite bound: its value is all we know
                return lower + (bound - lower) * (rank - below) / (cumulative - below)
            lower, below = bound, cumulative
        return lower


def latency_histogram(counts: Mapping[str, int]) -> Histogram:
    """The latency histogram held in the shared counters *counts* (fields of other bounds, from
    another version of the library, are ignored)."""
    buckets: list[tuple[float, int]] = []
    total = 0
    for bound, field_name in zip((*LATENCY_BUCKETS, math.inf), _BUCKET_FIELDS, strict=True):
        total += int(counts.get(field_name, 0))
        buckets.append((bound, total))
    return Histogram(tuple(buckets), int(counts.get(_SUM_FIELD, 0)) / 1_000_000, total)


_live: weakref.WeakSet[StatsBuffer] = weakref.WeakSet()


@atexit.register
def _flush_all_at_exit() -> None:
    for buffer in list(_live):
        buffer.flush()
