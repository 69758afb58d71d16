"""Counters kept per process and flushed to shared counters in Redis off the request path.

Besides the totals, every cached function, view and fragment counts under its *name*
(:meth:`StatsBuffer.named` gives its :class:`NameStats`). A name's counts ride the same flush
as the totals, in the same Redis hash, as fields ``n|<field>|<name>`` (the name last, so it
may hold any character): no extra round trip, and ``reset_stats`` clears them with the totals.
At most :data:`MAX_NAMES` names are kept per cache and process; later ones are counted under
:data:`OVERFLOW_NAME`, with a rate-limited warning naming them.
"""

from __future__ import annotations

import atexit
import itertools
import math
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ._forksafe import reset_after_fork
from ._ratelog import RateLimitedLog

__all__ = [
    "FIELDS",
    "LATENCY_BUCKETS",
    "LOAD_BUCKETS",
    "MAX_NAMES",
    "NAME_FIELDS",
    "OVERFLOW_NAME",
    "Counts",
    "Histogram",
    "NameStats",
    "StatsBuffer",
    "latency_histogram",
    "load_histograms",
    "split_named",
    "summarize",
    "summarize_names",
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
    "bypasses",
)

#: The counters kept per name (``hits`` also counts stale and fail-safe serves, as the totals).
NAME_FIELDS = ("hits", "misses", "stale_hits", "fail_safe_hits", "errors", "bypasses")
#: Names kept per cache and process; past it, new names count under :data:`OVERFLOW_NAME`.
MAX_NAMES = 500
#: The row that counts every name past :data:`MAX_NAMES`.
OVERFLOW_NAME = "(other names)"
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
#: Upper bounds, in seconds, of the per-name load-time histogram (``+Inf`` is implied): from a
#: millisecond, the latency buckets and longer ones.
LOAD_BUCKETS = (*LATENCY_BUCKETS[3:], 2.5, 5.0, 10.0)
_LOAD_FIELDS = tuple(f"load_le:{bound!r}" for bound in LOAD_BUCKETS) + ("load_le:+Inf",)
_LOAD_SUM = "load_sum_us"
_NAMED = "n|"  # shared-hash fields of a name: "n|<field>|<name>"

Flush = Callable[[Mapping[str, int]], bool]

# Shared-hash fields: one (non-cumulative) count per bucket, named by its bound, and the sum in
# whole microseconds (HINCRBY adds integers only).
_BUCKET_FIELDS = tuple(f"latency_le:{bound!r}" for bound in LATENCY_BUCKETS) + ("latency_le:+Inf",)
_SUM_FIELD = "latency_sum_us"
SAMPLE_EVERY = 8

_log = RateLimitedLog()


class Counts(Protocol):
    """What the loaders count into: a cache's totals (:class:`StatsBuffer`) or one name's
    counts (:class:`NameStats`, which also count into the totals)."""

    @property
    def totals(self) -> StatsBuffer: ...

    def hit(self) -> None: ...

    def add(self, field: str, amount: int = 1) -> None: ...

    def loaded(self, seconds: float, failed: bool) -> None: ...

    def bypass(self, reason: str) -> None: ...


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
        #: Called on the flushing thread after each of its rounds, with counts or without.
        self.after_round: list[Callable[[], None]] = []
        #: Rounds the flushing thread has finished (the first, at its start, reads what
        #: ``after_round`` reads; then one every *interval*).
        self.rounds = 0
        self._names: dict[str, NameStats] = {}
        _live.add(self)
        reset_after_fork(self)

    @property
    def totals(self) -> StatsBuffer:
        """The totals: this buffer itself (:class:`Counts`)."""
        return self

    def named(self, name: str) -> NameStats:
        """The counts of *name* (a cached function, view or fragment), created on first use.

        Past :data:`MAX_NAMES` names, a new name gets the :data:`OVERFLOW_NAME` row and a
        warning (once per 10 s) names it. Callers keep the result: a lookup is a dict read.
        """
        row = self._names.get(name)
        if row is not None:
            return row
        if not isinstance(name, str) or not name:
            raise TypeError(f"a statistics name must be a non-empty str, got {name!r}")
        with self._lock:
            row = self._names.get(name)
            if row is not None:
                return row
            if len(self._names) < MAX_NAMES or name == OVERFLOW_NAME:
                row = self._names[name] = NameStats(name, self)
                return row
            row = self._names.get(OVERFLOW_NAME)
            if row is None:
                row = self._names[OVERFLOW_NAME] = NameStats(OVERFLOW_NAME, self)
        _log.warning(
            "stats-names-overflow",
            f"more than {MAX_NAMES} cache names in this process: {name!r} (and any later "
            f"name) is counted under {OVERFLOW_NAME!r}; pass name= to share rows",
        )
        return row

    def names(self) -> list[str]:
        """The names counted in this process (the overflow row included once used)."""
        return list(self._names)

    def loaded(self, seconds: float, failed: bool) -> None:
        """A load without a name: the totals keep no load times (:meth:`NameStats.loaded`)."""

    def bypass(self, reason: str) -> None:
        """Count one response that could not be cached, without a name (see
        :meth:`NameStats.bypass`)."""
        _check_reason(reason)
        self.add("bypasses")

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
        totals += [(row.hits_field, _count_value(row.hit_count)) for row in self._names.values()]
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

    def add_all(self, counts: Iterable[tuple[str, int]]) -> None:
        """Count several ``(field, amount)`` at once, under one lock; no I/O."""
        with self._lock:
            pending = self._pending
            for field, amount in counts:
                pending[field] = pending.get(field, 0) + amount
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
        for row in self._names.values():
            row.hit_count = itertools.count()
        self._thread = None
        self.rounds = 0
        self._stopped = threading.Event()


class NameStats:
    """The counts of one name; every count also goes to the cache's totals.

    The recording points, one per kind (a tracer can hook the same calls):

    - a read's outcome: :meth:`hit` (also for stale and fail-safe serves, which then
      :meth:`add` ``stale_hits`` / ``fail_safe_hits``) or :meth:`add` ``("misses")``;
    - a load: :meth:`loaded` (its duration, and whether it raised: ``errors``);
    - a response not cached: :meth:`bypass` with its reason.
    """

    __slots__ = ("_fields", "hit_count", "hits_field", "name", "totals")

    def __init__(self, name: str, totals: StatsBuffer) -> None:
        self.name = name
        #: The cache's totals, which every count of this name also goes to.
        self.totals = totals
        #: Hits, lock-free (tallied into the pending counts with every read of them).
        self.hit_count = itertools.count()
        self.hits_field = named_field("hits", name)
        self._fields = {field: named_field(field, name) for field in NAME_FIELDS}

    def __repr__(self) -> str:
        return f"NameStats({self.name!r})"

    def hit(self) -> None:
        """Count one hit of this name (and of the totals); lock-free."""
        next(self.hit_count)
        self.totals.hit()

    def add(self, field: str, amount: int = 1) -> None:
        """Count *amount* more of *field* in the totals and, for a :data:`NAME_FIELDS` one,
        in this name's row; no I/O."""
        named = self._fields.get(field)
        if named is None or field == "errors":  # this name's errors are its failed loads
            self.totals.add(field, amount)
            return
        self.totals.add_all(((field, amount), (named, amount)))

    def bypass(self, reason: str) -> None:
        """Count one response of this name that could not be cached, and why (a short word:
        ``"streamed"``, ``"cookie"``, ...; per name in ``bypass_reasons``)."""
        _check_reason(reason)
        self.totals.add_all(
            (
                ("bypasses", 1),
                (self._fields["bypasses"], 1),
                (named_field(f"bypass:{reason}", self.name), 1),
            )
        )

    def loaded(self, seconds: float, failed: bool) -> None:
        """Record one load of this name that took *seconds*; *failed* when it raised (counted
        in this name's ``errors``)."""
        bucket = _LOAD_FIELDS[bisect_left(LOAD_BUCKETS, seconds)]
        counts = [
            (named_field(bucket, self.name), 1),
            (named_field(_LOAD_SUM, self.name), int(seconds * 1_000_000)),
        ]
        if failed:
            counts.append((self._fields["errors"], 1))
        self.totals.add_all(counts)


def _check_reason(reason: str) -> None:
    if not isinstance(reason, str) or not reason or "|" in reason:
        raise ValueError(f"a bypass reason is a short word without '|', got {reason!r}")


def named_field(field: str, name: str) -> str:
    """The shared-hash field of *name*'s counter *field*."""
    return f"{_NAMED}{field}|{name}"


def split_named(counts: Mapping[str, int]) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """``(totals, by_name)``: the shared counters *counts* split into the totals and each
    name's own fields."""
    totals: dict[str, int] = {}
    by_name: dict[str, dict[str, int]] = {}
    for field, amount in counts.items():
        if field.startswith(_NAMED):
            inner, _, name = field[len(_NAMED) :].partition("|")
            by_name.setdefault(name, {})[inner] = int(amount)
        else:
            totals[field] = int(amount)
    return totals, by_name


def load_histograms(by_name: Mapping[str, Mapping[str, int]]) -> dict[str, Histogram]:
    """Each name's load-time histogram (from :func:`split_named`'s *by_name*)."""
    found: dict[str, Histogram] = {}
    for name, counts in by_name.items():
        buckets: list[tuple[float, int]] = []
        total = 0
        for bound, field_name in zip((*LOAD_BUCKETS, math.inf), _LOAD_FIELDS, strict=True):
            total += int(counts.get(field_name, 0))
            buckets.append((bound, total))
        found[name] = Histogram(tuple(buckets), int(counts.get(_LOAD_SUM, 0)) / 1_000_000, total)
    return found


def summarize_names(by_name: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, Any]]:
    """The public per-name shape (``get_stats()["by_name"]``): each name's :data:`NAME_FIELDS`,
    ``total_requests`` and ``hit_rate`` as the totals, ``bypass_reasons``, ``loads`` and
    ``load_p50_ms`` / ``load_p99_ms`` (None before a load). Sorted by traffic, busiest first."""
    histograms = load_histograms(by_name)
    rows: dict[str, dict[str, Any]] = {}
    for name, counts in by_name.items():
        row: dict[str, Any] = {field: int(counts.get(field, 0)) for field in NAME_FIELDS}
        total = row["hits"] + row["misses"]
        row["total_requests"] = total
        row["hit_rate"] = round(100.0 * row["hits"] / total, 2) if total else 0.0
        row["bypass_reasons"] = {
            field[len("bypass:") :]: int(amount)
            for field, amount in sorted(counts.items())
            if field.startswith("bypass:")
        }
        histogram = histograms[name]
        row["loads"] = histogram.count
        for label, q in (("load_p50_ms", 0.5), ("load_p99_ms", 0.99)):
            seconds = histogram.quantile(q)
            row[label] = None if seconds is None else round(seconds * 1000, 3)
        rows[name] = row
    order = sorted(rows, key=lambda n: (-(rows[n]["total_requests"] + rows[n]["bypasses"]), n))
    return {name: rows[name] for name in order}


def _flush_loop(ref: weakref.ref[StatsBuffer], stopped: threading.Event, interval: float) -> None:
    flush = False  # the first round, at once, only runs the after-round calls
    while True:
        buffer = ref()
        if buffer is None:
            return
        try:
            if flush:
                buffer.flush()
            for call in buffer.after_round:
                call()
            buffer.rounds += 1
        except Exception:
            # A cache closed during this round had its connections torn down under it
            # (redis-py then fails in odd ways, e.g. TypeError): nothing to report.
            if stopped.is_set():
                return
            raise
        del buffer
        if stopped.wait(interval):
            return
        flush = True


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
