"""Get-or-load: the read path shared by ``@cache`` and ``CacheAside``.

On a miss exactly one caller loads (single flight: coalesced within a process, a lease across
processes); the others wait for its value. The loader's value is stored only if nothing wrote
or deleted the key since the miss (the lease is still in place), so a slow loader can never
overwrite a newer value. Entries can be served stale while one caller refreshes them, and can
be refreshed early with probability rising towards expiry (XFetch).
"""

from __future__ import annotations

import contextvars
import functools
import math
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from ._classify import classify, draw
from ._codec import MISSING, EntryCodec, Unreadable
from ._coordination import Coordination, Group
from ._flight import FIRST_POLL, LEASE_SLICE, MAX_POLL
from ._ratelog import RateLimitedLog
from ._reader import Reader
from ._results import CacheResult
from ._stats import Counts
from ._tagindex import TagIndex
from ._tracing import TRACER, active, load_span, read_span
from ._validate import RESERVED
from .errors import ConfigurationError, LoaderTimeout, SerializationError
from .locks import RedisLock
from .serializers import Envelope, Lease, lease_bytes, new_version, version_prefix

__all__ = [
    "Background",
    "CacheParts",
    "Deliver",
    "LoadPolicy",
    "NamedParts",
    "Schedule",
    "get_or_load",
    "load_now",
]

T = TypeVar("T")

_log = RateLimitedLog()


class CacheParts(Protocol):
    """What the loaders use of a cache: its TTL settings and parts (a
    :class:`~flask_fennec_cache.RedisCache` provides them)."""

    @property
    def default_ttl(self) -> float | None: ...

    @property
    def ttl_jitter(self) -> float: ...

    @property
    def counters(self) -> Counts: ...

    @property
    def codec(self) -> EntryCodec: ...

    @property
    def reader(self) -> Reader: ...

    @property
    def tag_index(self) -> TagIndex: ...

    @property
    def coordination(self) -> Coordination: ...


class NamedParts:
    """A cache's parts as the loaders see them for one name: the same parts, with
    ``counters`` counting for the name as well as the totals (see :meth:`of`)."""

    __slots__ = ("_cache", "codec", "coordination", "counters", "reader", "tag_index")

    def __init__(self, cache: CacheParts, counts: Counts) -> None:
        self._cache = cache
        self.counters = counts
        self.codec = cache.codec
        self.reader = cache.reader
        self.tag_index = cache.tag_index
        self.coordination = cache.coordination

    @property
    def default_ttl(self) -> float | None:
        return self._cache.default_ttl

    @property
    def ttl_jitter(self) -> float:
        return self._cache.ttl_jitter

    @property
    def cache(self) -> CacheParts:
        """The cache these parts are of."""
        return self._cache

    @staticmethod
    def of(cache: CacheParts, name: str, memo: list[NamedParts]) -> NamedParts:
        """The parts of *cache* counting for *name*, kept in *memo* (a list the caller holds,
        one per name: a call with the cache of the last call costs one identity check)."""
        if memo:
            last = memo[0]
            if last._cache is cache:
                return last
        parts = NamedParts(cache, cache.counters.totals.named(name))
        memo[:] = [parts]
        return parts


#: Hands a refresh to run later (on a pool, after a response); False when it cannot be taken.
Schedule = Callable[[Callable[[], object]], bool]
#: Given a call's arguments: where to refresh its entry in the background, and the loader to
#: refresh it with there (None: refresh it in the caller, as it is read).
Background = Callable[
    [tuple[Any, ...], dict[str, Any]], "tuple[Schedule, Callable[[], Any]] | None"
]


@dataclass(frozen=True)
class Deliver:
    """What a loader may return to store one thing and hand its caller another.

    ``get_or_load`` stores *store* (nothing when None) under the key and returns the Deliver
    itself to the caller that ran the loader; a caller served by another thread's load gets it
    too (with ``hit`` True) and can use *store* — and must not use *result*, which may hold
    what only the loading request may see. Cached views use it to store the response's bytes
    while handing back the live response object.

    :param elsewhere: more ``(key, entry)`` pairs to store in the load's group (see
        :class:`~flask_fennec_cache.backend.Group`), in the same step and on the same
        condition as *store*: nothing wrote or dropped the loaded key since the load began.
    :param ttl: the seconds the entries are fresh, when the loader chose them itself (no TTL
        jitter is applied then); None uses the policy's.
    :param tags: tags the entries carry besides the policy's (their versions are read when
        the entries are stored).

    A loader's :class:`~flask_fennec_cache.CacheResult` is the public form of the same
    choices for a loader whose caller gets what is stored.
    """

    store: Any
    result: Any
    elsewhere: tuple[tuple[str, Any], ...] = ()
    ttl: float | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoadPolicy:
    """How a loader's results are cached.

    :param ttl: seconds a value is fresh; None uses the backend's default TTL.
    :param cache_none: also cache a ``None`` result.
    :param none_ttl: seconds a cached ``None`` lives (negative caching); None uses *ttl*.
    :param lock: single-flight loading: concurrent misses wait for one loader (default True).
    :param lock_timeout: seconds a loader may hold the key's lease; waiters take over after it.
    :param stale_ttl: seconds past *ttl* a stale value may be served while it is refreshed.
    :param stale_if_error: seconds past *ttl* a stale value is kept to be served when its load
        raises (fail-safe); the loader is then retried at most about once a second per key.
    :param beta: XFetch early refresh strength (0 disables; 1 is the usual choice).
    :param soft_timeout: seconds a caller waits for a load when a stale value is available
        (within *stale_ttl* or *stale_if_error*); then it is served that value and the load
        finishes in the background and stores its result.
    :param hard_timeout: seconds a caller waits for a load at most; then it is served the stale
        value if there is one, else :class:`~flask_fennec_cache.LoaderTimeout`; the load
        finishes in the background and stores its result.
    :param tags: tag names; :meth:`~flask_fennec_cache.RedisCache.invalidate_tags` drops entries
        carrying them.
    """

    ttl: float | None = None
    cache_none: bool = False
    none_ttl: float | None = None
    lock: bool = True
    lock_timeout: float = 10.0
    stale_ttl: float | None = None
    beta: float = 0.0
    tags: tuple[str, ...] = ()
    stale_if_error: float | None = None
    soft_timeout: float | None = None
    hard_timeout: float | None = None

    def __post_init__(self) -> None:
        for name in (
            "ttl",
            "none_ttl",
            "stale_ttl",
            "stale_if_error",
            "soft_timeout",
            "hard_timeout",
        ):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 < value < math.inf
            ):
                raise ConfigurationError(
                    f"{name} must be a finite number of seconds > 0, got {value!r}"
                )
        if not 0 < self.lock_timeout < math.inf:
            raise ConfigurationError(f"lock_timeout must be > 0, got {self.lock_timeout!r}")
        if self.beta < 0:
            raise ConfigurationError(f"beta must be >= 0, got {self.beta!r}")
        if isinstance(self.tags, str):
            raise ConfigurationError("tags must be a sequence of names, e.g. tags=('users',)")
        if self.soft_timeout and self.hard_timeout and self.soft_timeout > self.hard_timeout:
            raise ConfigurationError(
                f"soft_timeout ({self.soft_timeout!r}) must not exceed hard_timeout "
                f"({self.hard_timeout!r})"
            )

    @property
    def enveloped(self) -> bool:
        """Whether entries need freshness metadata (stale serving, early refresh or tags)."""
        return bool(self.stale_ttl or self.beta or self.tags or self.stale_if_error)

    @property
    def kept_stale(self) -> float:
        """Seconds an entry stays in Redis past its freshness (for stale serving or
        fail-safe)."""
        return max(self.stale_ttl or 0.0, self.stale_if_error or 0.0)


def get_or_load(
    backend: CacheParts,
    key: str,
    loader: Callable[..., T | CacheResult[T]],
    policy: LoadPolicy,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    group: Group | None = None,
    background: Background | None = None,
) -> tuple[T, bool]:
    """``(value, hit)``: the cached value of *key*, or ``loader(*args, **kwargs)``; *hit* when
    no load ran here. A loader's :class:`~flask_fennec_cache.CacheResult` chooses how its
    value is cached; the caller gets the value.

    With *group*, the key is stored as a member of that group (dropped with it). With
    *background*, a stale (or soon stale) entry is refreshed where it says, and every caller
    is served the stale value at once. A key that cannot be used (reserved, or without a
    UTF-8 form) is not cached: the loader answers.
    """
    if TRACER is not None and active():
        with read_span(backend.counters, key) as counts:
            cache = backend.cache if isinstance(backend, NamedParts) else backend
            traced = NamedParts(cache, counts)
            return _get_or_load(traced, key, loader, policy, args, kwargs, group, background)
    return _get_or_load(backend, key, loader, policy, args, kwargs, group, background)


def _get_or_load(
    backend: CacheParts,
    key: str,
    loader: Callable[..., T | CacheResult[T]],
    policy: LoadPolicy,
    args: tuple[Any, ...],
    kwargs: dict[str, Any] | None,
    group: Group | None,
    background: Background | None,
) -> tuple[T, bool]:
    if not backend.reader.key_ok(key):
        backend.counters.add("misses")
        return _result_of(loader(*args, **(kwargs or {}))), False
    entry, current = _read(backend, key, policy)
    value, refresh = classify(entry, backend.tag_index, current, policy.beta)
    if value is not MISSING and refresh is None:
        backend.counters.hit()
        return value, True
    later = None
    if refresh is not None and background is not None:
        later = background(args, kwargs or {})
    if args or kwargs:  # bound here, so that a hit never builds it
        loader = functools.partial(loader, *args, **(kwargs or {}))
    if refresh is not None:
        if policy.stale_if_error and _needs_recovery(refresh, policy):
            return _recover(backend, key, loader, policy, value, refresh, group)
        return _refresh(backend, key, loader, policy, value, refresh, group, later)
    if not policy.lock:
        return _fill(backend, key, loader, policy, entry, False, group)
    (result, hit), led = backend.coordination.flights.run(
        key,
        lambda: _fill(backend, key, loader, policy, entry, True, group),
        policy.lock_timeout,
    )
    if not led:  # another thread of this process loaded or waited for it
        backend.counters.hit()
        backend.counters.add("lock_waits")
        return result, True
    return result, hit


def load_now(
    backend: CacheParts,
    key: str,
    loader: Callable[..., T | CacheResult[T]],
    policy: LoadPolicy,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
) -> T:
    """Run ``loader(*args, **kwargs)`` now and store its result under *key*; its value.

    The key's current entry (a value, or another caller's lease) is replaced by this load's
    lease first, so readers wait for the new value instead of being served the old one, and
    the result is stored only if the lease is still there when the load ends: a write or a
    delete made meanwhile wins. When Redis fails the loader still answers (fail-open).
    """
    if args or kwargs:
        loader = functools.partial(loader, *args, **(kwargs or {}))
    if backend.reader.key_ok(key):
        lease_ms = int(min(policy.lock_timeout, LEASE_SLICE) * 1000)
        token = backend.coordination.acquire_lease(key, _ANY_ENTRY, lease_ms)
        if isinstance(token, str):
            return _load_leased(backend, key, loader, policy, token, None)
    backend.counters.add("misses")
    return _result_of(loader())


#: For :meth:`Coordination.acquire_lease`: every entry starts with no bytes, so a lease taken
#: with it replaces whatever the key holds.
_ANY_ENTRY = ("prefix", b"")


def _read(backend: CacheParts, key: str, policy: LoadPolicy) -> tuple[Any, dict[str, str] | None]:
    if policy.tags:
        return backend.reader.fetch_tagged(key, policy.tags)
    return backend.reader.fetch(key), None


def _refresh(
    backend: CacheParts,
    key: str,
    loader: Callable[[], T | CacheResult[T]],
    policy: LoadPolicy,
    stale: Any,
    envelope: Envelope,
    group: Group | None,
    later: tuple[Schedule, Callable[[], Any]] | None = None,
) -> tuple[T, bool]:
    """One caller refreshes a stale (or soon stale) entry — or, with *later*, hands its
    refresh over to run in the background; the others are served it at once."""
    lock = RedisLock(backend, f"{RESERVED}refresh:{key}", policy.lock_timeout)
    if not lock.acquire():
        return _serve_stale(backend, stale, envelope)
    handed_off = False
    try:
        current, tags = _read(backend, key, policy)
        if not (isinstance(current, Envelope) and current.version == envelope.version):
            # Refreshed (or rewritten) since this caller read it: no second load.
            value, _ = classify(current, backend.tag_index, tags, policy.beta)
            if value is not MISSING:
                backend.counters.hit()
                return value, True
            return _serve_stale(backend, stale, envelope)
        # Keep the entry readable while it is refreshed, even if the load outlasts its life in
        # Redis: readers past its freshness are then served it (as stale) instead of finding
        # the key gone and loading a second time. At most lock_timeout past its expiry.
        expected = version_prefix(envelope.version)
        backend.coordination.extend(key, expected, int(policy.lock_timeout * 1000), grow=True)
        if policy.stale_if_error and not _may_retry(backend, key):
            return _serve_stale(backend, stale, envelope)  # a load failed under a second ago

        if later is not None:
            schedule, background_loader = later

            def refresh_in_background() -> None:
                try:
                    _load_over(
                        backend,
                        key,
                        background_loader,
                        policy,
                        stale,
                        envelope,
                        group,
                        caller=False,
                    )
                except Exception as exc:  # the stale value stays; the next reader tries again
                    backend.counters.add("errors")
                    _log.error(
                        f"background-refresh:{key}",
                        f"the background refresh of {key!r} failed, its stale value is kept: "
                        f"{type(exc).__name__}: {exc}",
                    )
                finally:
                    try:
                        lock.release()
                    except Exception:  # noqa: S110 - the lock expires with its timeout anyway
                        # Seen when the cache was closed under a running refresh: its
                        # connections torn down, redis-py fails in odd ways (TypeError).
                        pass

            handed_off = schedule(refresh_in_background)
            return _serve_stale(backend, stale, envelope)

        def load() -> tuple[T, bool]:
            try:
                return _load_over(backend, key, loader, policy, stale, envelope, group)
            finally:
                lock.release()

        handed_off = True
        done, result = _bounded(backend, key, policy, load, stale_at_hand=True)
    finally:
        if not handed_off:
            lock.release()
    return cast("tuple[T, bool]", result) if done else _serve_stale(backend, stale, envelope)


def _load_over(
    backend: CacheParts,
    key: str,
    loader: Callable[[], T | CacheResult[T]],
    policy: LoadPolicy,
    stale: T,
    envelope: Envelope,
    group: Group | None,
    caller: bool = True,
) -> tuple[T, bool]:
    """Load and store a new value over the stale *envelope* (stored only if the key still
    holds it); with *stale_if_error*, a load that raises serves *stale*. Counted as a miss
    when a *caller* waited for it (not a background refresh)."""
    versions = _tag_versions(backend, policy)
    try:
        value, elapsed = _timed(backend, loader)
    except Exception as exc:
        if not (policy.stale_if_error and _within_fail_safe(envelope, policy)):
            raise
        return _fail_safe(backend, key, stale, exc, served=caller), True
    expected = version_prefix(envelope.version)
    _store(backend, key, value, elapsed, policy, versions, expected, group)
    if caller:
        backend.counters.add("misses")
    return _result_of(value), False


# -- timeouts (soft_timeout, hard_timeout) ------------------------------------------------------


def _bounded(
    backend: CacheParts,
    key: str,
    policy: LoadPolicy,
    load: Callable[[], T],
    stale_at_hand: bool,
) -> tuple[bool, T | None]:
    """``(True, load())``, or ``(False, None)`` when the load outlasts this caller's timeout
    (*soft_timeout* when a stale value is at hand, else *hard_timeout*): it then goes on on a
    daemon thread, which logs and counts an error if it fails. No timeout: run here."""
    limit = policy.hard_timeout
    if stale_at_hand and policy.soft_timeout is not None:
        limit = policy.soft_timeout
    if limit is None:
        return True, load()
    outcome: list[Any] = []
    state = threading.Lock()
    finished = threading.Event()
    abandoned = False

    def run() -> None:
        try:
            outcome.append((True, load()))
        except BaseException as exc:
            outcome.append((False, exc))
            with state:
                late = abandoned
            if late:
                backend.counters.add("errors")
                _log.error(
                    f"background-load:{key}",
                    f"the background load of {key!r} failed: {type(exc).__name__}: {exc}",
                )
        finally:
            finished.set()

    context = contextvars.copy_context()  # the caller's app context, for the loader
    worker = threading.Thread(
        target=context.run, args=(run,), name="fennec-cache-load", daemon=True
    )
    worker.start()
    finished.wait(limit)
    with state:
        if not outcome:
            abandoned = True
            return False, None
    ok, result = outcome[0]
    if not ok:
        raise result
    return True, result


# -- fail-safe (stale_if_error) -----------------------------------------------------------------

#: Seconds between two loads of one failing key, across processes.
RETRY_EVERY = 1.0


def _needs_recovery(envelope: Envelope, policy: LoadPolicy) -> bool:
    """Whether *envelope* is past its stale window but still kept for fail-safe: it must be
    loaded again before it is served, and is served only if that load fails."""
    fresh_until = envelope.fresh_until
    if fresh_until is None:
        return False
    stale_for = time.time() - fresh_until
    return (policy.stale_ttl or 0.0) <= stale_for <= (policy.stale_if_error or 0.0)


def _within_fail_safe(envelope: Envelope, policy: LoadPolicy) -> bool:
    fresh_until = envelope.fresh_until
    return fresh_until is not None and time.time() - fresh_until <= (policy.stale_if_error or 0)


def _may_retry(backend: CacheParts, key: str) -> bool:
    """Take this second's attempt at loading *key* (``SET NX PX 1000`` in Redis, shared by
    every process); False when another caller took it. Redis failing allows the attempt."""
    taken = backend.coordination.try_lock(f"{RESERVED}retry:{key}", new_version(), RETRY_EVERY)
    return taken is not False


def _fail_safe(
    backend: CacheParts, key: str, stale: T, error: BaseException | None, served: bool = True
) -> T:
    """Serve *stale* because loading *key* failed (*error*) or failed less than a second ago
    (not *served*: a background refresh failed, and the stale value stays for its readers)."""
    if served:
        backend.counters.hit()
    backend.counters.add("fail_safe_hits")
    if error is not None:
        _log.warning(
            f"fail-safe:{key}",
            f"serving the stale value of {key!r}: its loader raised "
            f"{type(error).__name__}: {error}",
        )
    return stale


def _recover(
    backend: CacheParts,
    key: str,
    loader: Callable[[], T | CacheResult[T]],
    policy: LoadPolicy,
    stale: T,
    envelope: Envelope,
    group: Group | None,
) -> tuple[T, bool]:
    """Load an entry kept only for fail-safe, as a miss would (one load per key across
    processes, the others wait for its value); serve the stale value if the load raises, or
    if a load of it was tried less than a second ago and the entry is still the stale one."""
    if not policy.lock:
        return _attempt_recovery(backend, key, loader, policy, stale, envelope, group, _no_lock)

    def attempt() -> tuple[T, bool]:
        lock = RedisLock(backend, f"{RESERVED}refresh:{key}", policy.lock_timeout)
        started = time.monotonic()
        deadline = started + policy.lock_timeout + 2 * MAX_POLL
        patience = policy.soft_timeout or policy.hard_timeout  # a stale value is at hand
        delay = FIRST_POLL
        while True:
            held = lock.acquire()
            if held is not False or time.monotonic() > deadline:  # None: Redis failed
                release = lock.release if held else _no_lock
                return _attempt_recovery(
                    backend, key, loader, policy, stale, envelope, group, release
                )
            if patience is not None and time.monotonic() - started >= patience:
                return _serve_stale(backend, stale, envelope)
            time.sleep(delay)
            delay = min(delay * 1.5, MAX_POLL)
            found = _reloaded(backend, key, policy, envelope)
            if found is not MISSING:
                return found, True

    (result, hit), led = backend.coordination.flights.run(key, attempt, policy.lock_timeout)
    if not led:
        backend.counters.hit()
        backend.counters.add("lock_waits")
        return result, True
    return result, hit


def _reloaded(backend: CacheParts, key: str, policy: LoadPolicy, envelope: Envelope) -> Any:
    """The fresh value *key* holds if it no longer holds *envelope* (counted as a hit), or
    MISSING."""
    current, tags = _read(backend, key, policy)
    if isinstance(current, Envelope) and current.version == envelope.version:
        return MISSING
    value, refresh = classify(current, backend.tag_index, tags)
    if value is MISSING or refresh is not None and _needs_recovery(refresh, policy):
        return MISSING
    backend.counters.hit()
    return value


def _attempt_recovery(
    backend: CacheParts,
    key: str,
    loader: Callable[[], T | CacheResult[T]],
    policy: LoadPolicy,
    stale: T,
    envelope: Envelope,
    group: Group | None,
    release: Callable[[], object],
) -> tuple[T, bool]:
    """Try this second's load of a key kept for fail-safe; *release* (the refresh lock) is
    called when it is over, by the background thread if it outlasts the caller's timeout."""
    handed_off = False
    try:
        found = _reloaded(backend, key, policy, envelope)
        if found is not MISSING:  # loaded by another caller since this one read it
            return found, True
        if not _may_retry(backend, key):
            return _fail_safe(backend, key, stale, None), True

        def load() -> tuple[T, bool]:
            try:
                return _load_over(backend, key, loader, policy, stale, envelope, group)
            finally:
                release()

        handed_off = True
        done, result = _bounded(backend, key, policy, load, stale_at_hand=True)
    finally:
        if not handed_off:
            release()
    return cast("tuple[T, bool]", result) if done else _serve_stale(backend, stale, envelope)


def _no_lock() -> None:
    """Release nothing (a load without the refresh lock)."""


def _serve_stale(backend: CacheParts, stale: T, envelope: Envelope) -> tuple[T, bool]:
    backend.counters.hit()
    if envelope.fresh_until is not None and time.time() >= envelope.fresh_until:
        backend.counters.add("stale_hits")
    return stale, True


def _fill(
    backend: CacheParts,
    key: str,
    loader: Callable[[], T | CacheResult[T]],
    policy: LoadPolicy,
    entry: Any,
    wait: bool,
    group: Group | None,
) -> tuple[T, bool]:
    """Take the key's lease and load, or wait for the lease holder's value: ``(value, hit)``.

    A waiter waits until the lease it found must have expired (``lock_timeout`` plus a poll),
    then tries to take it over; if another waiter took it first (it read that waiter's lease,
    or lost the race to take the free key), it waits for that one once. It gives up (and loads
    without the lease) only on a read made after that deadline, so a thread the scheduler held
    back does not give up on what it saw before the lease expired.
    """
    read_at = started = time.monotonic()
    deadline = read_at + policy.lock_timeout + 2 * MAX_POLL
    holder = entry.token if isinstance(entry, Lease) else None
    new_holder = extended = False
    delay = FIRST_POLL
    waited = False
    while True:
        if not isinstance(entry, Lease):
            token = backend.coordination.acquire_lease(
                key,
                _replaceable(entry),
                int(min(policy.lock_timeout, LEASE_SLICE) * 1000),
                group,
            )
            if token is None:  # Redis failed: load without storing (fail-open)
                backend.counters.add("misses")
                return _result_of(loader()), False
            if token:
                assert isinstance(token, str)
                return _load_leased(backend, key, loader, policy, token, group), False
            new_holder = True  # another caller took the key between our read and our try
        elif entry.token != holder:
            new_holder = True
        if wait and new_holder and not extended and read_at + delay > deadline:
            deadline = read_at + policy.lock_timeout + 2 * MAX_POLL  # a new holder
            extended = True
        if not wait or read_at > deadline:
            if wait:
                _log.warning(
                    "lock-timeout",
                    f"gave up waiting {policy.lock_timeout}s for another loader of {key!r}; "
                    "loading without the lock",
                )
            backend.counters.add("misses")
            return _result_of(loader()), False
        if policy.hard_timeout is not None and read_at - started >= policy.hard_timeout:
            raise _timed_out(key, policy)  # another caller's load: it goes on and stores
        if not waited:
            backend.counters.add("lock_waits")
            waited = True
        time.sleep(delay)
        delay = min(delay * 1.5, MAX_POLL)
        entry, current = _read(backend, key, policy)
        read_at = time.monotonic()
        value, _ = classify(entry, backend.tag_index, current, policy.beta)
        if value is not MISSING:
            backend.counters.hit()
            return value, True


def _replaceable(entry: Any) -> tuple[str, bytes] | None:
    """How to recognise an unusable entry a new lease may replace (None: only an empty key)."""
    if isinstance(entry, Envelope):
        return ("prefix", version_prefix(entry.version))
    if isinstance(entry, Unreadable):
        return ("exact", entry.data)
    return None


def _load_leased(
    backend: CacheParts,
    key: str,
    loader: Callable[[], T | CacheResult[T]],
    policy: LoadPolicy,
    token: str,
    group: Group | None,
) -> T:
    lease = lease_bytes(token)

    def load() -> T:
        stored = False
        held = backend.coordination.keeper.hold(key, lease, policy.lock_timeout)
        try:
            versions = _tag_versions(backend, policy)
            value, elapsed = _timed(backend, loader)
            stored = _store(backend, key, value, elapsed, policy, versions, lease, group)
        finally:
            backend.coordination.keeper.drop(held)
            if not stored:
                backend.coordination.compare_and_set(key, lease, None, None)
        backend.counters.add("misses")
        return _result_of(value)

    done, value = _bounded(backend, key, policy, load, stale_at_hand=False)
    if not done:
        raise _timed_out(key, policy)
    return cast(T, value)


def _timed_out(key: str, policy: LoadPolicy) -> LoaderTimeout:
    return LoaderTimeout(
        f"loading {key!r} took over hard_timeout={policy.hard_timeout!r}s and there is no "
        "stale value to serve; the load goes on in the background and stores its result"
    )


def _tag_versions(backend: CacheParts, policy: LoadPolicy) -> dict[str, str] | None:
    """Tag versions to store with a value, read before loading it (so a concurrent
    invalidation is seen as newer than the value); None when Redis failed."""
    return backend.tag_index.versions(policy.tags, create=True) if policy.tags else {}


def _store(
    backend: CacheParts,
    key: str,
    value: Any,
    elapsed: float,
    policy: LoadPolicy,
    versions: dict[str, str] | None,
    expected: bytes,
    group: Group | None = None,
) -> bool:
    """Store a loaded value if *key* still starts with *expected* (nobody wrote since)."""
    chosen_ttl = None
    elsewhere: tuple[tuple[str, Any], ...] = ()
    own_tags: tuple[str, ...] = ()
    if isinstance(value, CacheResult):  # the loader's own choice of TTL, tags, storing
        if not value.store:
            return False
        chosen_ttl, own_tags, value = value.ttl, value.tags, value.value
    if isinstance(value, Deliver):
        chosen_ttl, elsewhere, own_tags = value.ttl, value.elsewhere, value.tags
        value = _DROP if value.store is None else value.store
        if value is _DROP and not elsewhere:
            return False
    if value is None and not policy.cache_none:
        return False
    if versions is None:
        return False
    own_tags = tuple(tag for tag in dict.fromkeys(own_tags) if tag not in versions)
    if own_tags:
        chosen = backend.tag_index.versions(own_tags, create=True)
        if chosen is None:  # Redis failed: an entry without its tags must not be stored
            return False
        versions = {**versions, **chosen}
    enveloped = policy.enveloped or bool(own_tags)
    if chosen_ttl is not None:
        ttl: float | None = chosen_ttl
    else:
        ttl = policy.ttl if policy.ttl is not None else backend.default_ttl
        if value is None and policy.none_ttl is not None:
            ttl = policy.none_ttl
        if ttl is not None and backend.ttl_jitter:
            ttl *= 1.0 - backend.ttl_jitter * draw()
    # Freshness is kept in the entry only when something reads it (stale serving, early
    # refresh); an entry enveloped only for its own tags lives as long as its key.
    fresh_until = None if ttl is None or not policy.enveloped else time.time() + ttl
    if ttl is not None and policy.enveloped:
        ttl += policy.kept_stale
    writes: list[tuple[str, bytes | None]] = []
    for target, item in ((key, value), *elsewhere):
        if item is _DROP:  # nothing to keep under the loaded key: its lease goes
            writes.append((target, None))
            continue
        entry = (
            Envelope(item, new_version(), fresh_until, elapsed, versions) if (enveloped) else item
        )
        try:
            data = backend.codec.encode(target, entry)
        except SerializationError as exc:
            _log.warning(f"unserializable:{target}", f"not caching: {exc}")
            return False
        if data is None:
            return False
        writes.append((target, data))
    if group is not None:
        return backend.coordination.store_in_group(group, key, expected, writes, ttl)
    if elsewhere:
        raise ValueError("entries stored beside the loaded one need a group")
    return backend.coordination.compare_and_set(key, expected, writes[0][1], ttl)


#: In :func:`_store`: nothing is stored under the loaded key (a Deliver without *store*).
_DROP: Any = object()


def _result_of(value: T | CacheResult[T]) -> T:
    """What the caller of a load gets: a CacheResult's value, anything else as it is."""
    return value.value if isinstance(value, CacheResult) else value


def _timed(backend: CacheParts, loader: Callable[[], T]) -> tuple[T, float]:
    """Run *loader*, recording its duration and whether it raised (the one place a load is
    recorded: :meth:`~._stats.NameStats.loaded`)."""
    started = time.perf_counter()
    try:
        with load_span(backend.counters) if TRACER is not None and active() else nullcontext():
            value = loader()
    except BaseException:
        backend.counters.loaded(time.perf_counter() - started, True)
        raise
    elapsed = time.perf_counter() - started
    backend.counters.loaded(elapsed, False)
    return value, elapsed
