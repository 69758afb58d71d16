"""Recovery after an outage: one background thread per process probes Redis while a cache
needs it, so no request has to be the probe of a server that may still be frozen; and the
invalidations Redis did not get, kept and applied as soon as it answers again."""

from __future__ import annotations

import functools
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Protocol

from ._forksafe import reset_after_fork
from ._validate import RESERVED
from .errors import CacheUnavailable

__all__ = [
    "PENDING_LIMIT", "PROBE_INTERVAL", "RETRY_SECONDS", "Invalidations", "PendingInvalidations",
    "Probed", "Prober", "prober",
]  # fmt: skip

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

    def forget(self, target: Probed) -> None:
        """Stop probing *target* (its cache was closed)."""
        with self._lock:
            self._targets.discard(target)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop probing every target and wait (at most *timeout* seconds) for the thread to end
        (tests that watch the process' own state, such as the global ``random``, use it)."""
        with self._lock:
            self._targets.clear()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

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
                    try:
                        target.probe()
                    except Exception:
                        # A cache closed while its probe ran had its connections torn down
                        # under it (redis-py then fails in odd ways): nothing to report.
                        if self.watching(target):
                            raise
            del targets
            time.sleep(PROBE_INTERVAL)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._thread = None
        if self._targets:
            self._start()


#: The process's prober.
prober: Final = Prober()


#: Most invalidations a cache keeps while Redis is unreachable (keys, tags, groups and patterns
#: together); past it they collapse into one: a new generation of the cache (every entry under
#: the prefix becomes a miss, in one write).
PENDING_LIMIT: Final = 10_000
#: Seconds between two background attempts to apply them while Redis answers again.
RETRY_SECONDS: Final = 0.5


@dataclass(frozen=True)
class Invalidations:
    """How a cache applies each kind of invalidation (its own ``try_delete(*keys)``,
    ``invalidate_tags(*tags)``, ``drop_group(index)``, ``try_clear(pattern)`` and the bump of
    its generation). One that fails again is kept again by the part that failed, so what they
    return is not needed."""

    delete: Callable[..., object]
    tags: Callable[..., object]
    group: Callable[[str], object]
    clear: Callable[[str], object]
    everything: Callable[[], object]


class PendingInvalidations:
    """The invalidations of one cache that Redis did not get, kept until it answers again.

    Deduplicated per key (tag, group, pattern), at most *limit* of them; past that, one
    invalidation of the whole prefix (a new generation) replaces them all. :attr:`waiting` is
    the one attribute a read checks; while it is True, a command of this cache first applies
    them (:meth:`settle`) or, if that cannot be done now (another thread is applying them, or
    one cluster node is still down), goes ahead only if it touches no entry they concern
    (:meth:`covers`, :meth:`covers_tags`), else is skipped: this process never serves an entry
    it was told to invalidate. The background prober applies them without waiting for traffic,
    at most every :data:`RETRY_SECONDS` while *ready* (the breaker is closed).
    """

    def __init__(self, ready: Callable[[], bool], limit: int = PENDING_LIMIT) -> None:
        self.limit = limit
        #: Is anything waiting to be applied? (Read on every command: an attribute.)
        self.waiting = False
        self._ready = ready
        self._keys: dict[str, None] = {}
        self._tags: dict[str, None] = {}
        self._groups: dict[str, None] = {}
        self._patterns: dict[str, None] = {}
        self._everything = False
        self._apply: Invalidations | None = None
        self._changed: Callable[[], None] = _nothing
        self._settler: int | None = None
        self._in_flight: _Kept = _NONE_KEPT
        self._next_try = 0.0
        self._lock = threading.Lock()
        self._settling = threading.Lock()
        reset_after_fork(self)

    def bind(self, apply: Invalidations, changed: Callable[[], None] | None) -> None:
        """How to apply them, and what to do when one is kept (flush the near cache)."""
        self._apply = apply
        self._changed = changed or _nothing

    def delete(self, keys: Iterable[str]) -> None:
        """Keep the deletion of *keys* (relative to the prefix)."""
        self._keep(self._keys, keys)

    def invalidate_tags(self, tags: Iterable[str]) -> None:
        """Keep the invalidation of *tags*."""
        self._keep(self._tags, tags)

    def drop_group(self, index: str) -> None:
        """Keep the drop of the view group whose index is *index*."""
        self._keep(self._groups, (index,))

    def clear(self, pattern: str) -> None:
        """Keep a ``clear(pattern)``."""
        self._keep(self._patterns, (pattern,))

    def kept(self) -> dict[str, object]:
        """What is waiting (being applied included): ``keys``, ``tags``, ``groups``,
        ``patterns``, ``everything``."""
        with self._lock:
            keys, tags, groups, patterns, everything = self._in_flight
            return {
                "keys": sorted({*self._keys, *keys}), "tags": sorted({*self._tags, *tags}),
                "groups": sorted({*self._groups, *groups}),
                "patterns": sorted({*self._patterns, *patterns}),
                "everything": self._everything or everything,
            }  # fmt: skip

    def everything(self) -> None:
        """Keep the invalidation of every entry under the prefix (a new generation)."""
        with self._lock:
            self._collapse()
            self.waiting = True
        self._kept()

    def covers(self, keys: Iterable[str]) -> bool:
        """Might one of *keys* (relative to the prefix) hold an entry a kept invalidation
        removes? (Its key, its view group or a pattern; tags are :meth:`covers_tags`.)"""
        with self._lock:
            everything, groups, patterns = self._everything, self._groups, self._patterns
            in_flight = self._in_flight
            if everything or in_flight[4]:
                return True
            for key in keys:
                if key in self._keys or key in in_flight[0]:
                    return True
                if key.startswith(_GROUP_KEYS) and any(
                    key.startswith(index[len(RESERVED) :]) for index in (*groups, *in_flight[2])
                ):
                    return True
                if any(_glob(p).match(key) for p in (*patterns, *in_flight[3])):
                    return True
            return False

    def covers_tags(self, tags: Iterable[str]) -> bool:
        """Is the invalidation of one of *tags* kept (so an entry carrying it is stale)?"""
        with self._lock:
            return any(t in self._tags or t in self._in_flight[1] for t in tags)

    def _keep(self, bucket: dict[str, None], items: Iterable[str]) -> None:
        with self._lock:
            if not self._everything:
                bucket.update(dict.fromkeys(items))
                if self._size() > self.limit:
                    self._collapse()
                elif "*" in self._patterns and self._size() > 1:
                    self._keys, self._groups, self._patterns = {}, {}, {"*": None}
            self.waiting = True
        self._kept()

    def _kept(self) -> None:
        self._changed()
        prober.watch(self)

    def _size(self) -> int:
        return len(self._keys) + len(self._tags) + len(self._groups) + len(self._patterns)

    def _collapse(self) -> None:
        """One invalidation of the whole prefix instead of many (it removes them all)."""
        self._everything = True
        self._keys, self._tags, self._groups, self._patterns = {}, {}, {}, {}

    def settle(self) -> bool:
        """Apply what is waiting, now; True when nothing is left (or when called by the thread
        that is applying them: its own commands). False when another thread is applying them
        or Redis failed again: the caller must not read from Redis."""
        if not self.waiting or self._settler == threading.get_ident():
            return True
        apply = self._apply
        if apply is None or not self._settling.acquire(blocking=False):
            return False
        try:
            self._settler = threading.get_ident()
            with self._lock:
                keys, tags, groups = tuple(self._keys), tuple(self._tags), tuple(self._groups)
                patterns, everything = tuple(self._patterns), self._everything
                self._keys, self._tags, self._groups, self._patterns = {}, {}, {}, {}
                self._everything = False
                self._in_flight = (keys, tags, groups, patterns, everything)
            # `waiting` stays True until they are applied: other threads keep missing.
            steps: list[tuple[Callable[[], object], Callable[[], None]]] = (
                [(apply.everything, self.everything)] if everything else [
                    *([(lambda: apply.delete(*keys), lambda: self.delete(keys))] if keys else []),
                    *([(lambda: apply.tags(*tags), lambda: self.invalidate_tags(tags))]
                      if tags else []),
                    *[(functools.partial(apply.group, index),
                       functools.partial(self.drop_group, index)) for index in groups],
                    *[(functools.partial(apply.clear, pattern),
                       functools.partial(self.clear, pattern)) for pattern in patterns],
                ]
            )  # fmt: skip
            done = 0
            try:
                for step, _ in steps:
                    if done and not self._ready():  # Redis failed again: wait no more
                        break
                    try:
                        step()  # a step that fails is kept again by the part that failed
                    except CacheUnavailable:
                        pass  # failing closed: the same
                    done += 1
            finally:
                for _, keep in steps[done:]:
                    keep()  # not tried (or a bug raised in it): kept for the next time
        finally:
            with self._lock:
                self._in_flight = _NONE_KEPT
                self.waiting = self._everything or self._size() > 0
            self._settler = None
            self._settling.release()
        return not self.waiting

    def applying_here(self) -> bool:
        """Is this thread applying them now (so this is one of their commands)?"""
        return self._settler == threading.get_ident()

    def recovered(self) -> bool:
        """Is nothing waiting? (For the prober.)"""
        return not self.waiting

    def probe(self) -> None:
        """Apply them in the background once the cache's breaker is closed again."""
        now = time.monotonic()
        if now < self._next_try or not self._ready():
            return
        self._next_try = now + RETRY_SECONDS
        self.settle()

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._settling = threading.Lock()
        self._settler = None


def _nothing() -> None:
    pass


#: How the keys of a view group start (see :func:`flask_fennec_cache.keys.group_head`).
_GROUP_KEYS: Final = "view:{"


@functools.lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    """A regular expression matching what Redis' glob *pattern* matches (``*``, ``?``,
    ``[...]`` with ``^`` negation and ranges, ``\\`` escapes)."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            negate = body.startswith("^")
            body = re.sub(r"([\\\]\[^])", r"\\\1", body[1:] if negate else body)
            out.append(f"[{'^' if negate else ''}{body}]")
            i = end + 1
            continue
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


_Kept = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...], bool]
_NONE_KEPT: Final[_Kept] = ((), (), (), (), False)
